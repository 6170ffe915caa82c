"""Recordings survive signals and write failures, outputs are never replaced or mixed silently,
and the run statistics live in fixed memory. Real subprocesses, real signals, a real file-size limit.
"""

import json
import resource
import signal
import subprocess
import sys
import time
import tracemalloc

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import CLIP_FRAMES, ROOT, assert_one_line_error, can_mount_a_private_tmpfs, run_cli, wait_for
from edgeseg.video import RunStats, StreamingStats, open_sink



@pytest.fixture(scope="module")
def model(video_model):
    return video_model


@pytest.fixture(scope="module")
def clip(camvid_clip):
    return camvid_clip


def decoded_frames(path) -> int:
    capture, count = cv2.VideoCapture(str(path)), 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def hidden_files(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _popen(*args, **kwargs) -> subprocess.Popen:
    command = [sys.executable, "-m", "edgeseg", "run", *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


# --- signals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_ends_the_run_like_q_with_a_playable_file_under_its_final_name(model, clip, tmp_path, sig, code):
    out, stats = tmp_path / "rec.mp4", tmp_path / "run.json"
    run = _popen(model, "--source", clip, "--loop", "--out", out, "--no-show", "--max-frames", "100000", "--json", stats)
    try:
        assert wait_for(lambda: hidden_files(tmp_path), 60), "run never started writing"
        time.sleep(1.0)
        run.send_signal(sig)
        stdout, stderr = run.communicate(timeout=60)
    finally:
        run.kill()
    name = sig.name
    assert run.returncode == code, (run.returncode, stderr[-2000:])
    assert f"({name})" in stdout and "Traceback" not in stderr
    expected = "interrupted" if sig == signal.SIGINT else f"interrupted ({name})"
    assert stderr.strip().splitlines() == [expected], stderr[-2000:]
    report = json.loads(stats.read_text())
    assert report["stopped_by"] == name and report["exit_code"] == code and report["processed"] > 0
    assert decoded_frames(out) == report["processed"]
    assert hidden_files(tmp_path) == [], "the hidden partial was renamed, not left behind"


def test_the_end_of_the_input_exits_0(model, clip, tmp_path):
    done = run_cli("run", model, "--source", clip, "--out", tmp_path / "a.avi", "--no-show", "--json", tmp_path / "s.json")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["stopped_by"] == "end of input" and report["exit_code"] == 0
    assert decoded_frames(tmp_path / "a.avi") == CLIP_FRAMES


def test_signal_handlers_are_restored_after_the_run(model, clip, tmp_path):
    from edgeseg.video import RunOptions, run_session

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    run_session(model, str(clip), [str(tmp_path / "f")], RunOptions(max_frames=2, hud=False))
    assert {s: signal.getsignal(s) for s in before} == before


# --- write failures -----------------------------------------------------------------------------


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("name, limit", [("rec.mp4", 300_000), ("rec.avi", 300_000), ("frames", 50_000)])
def test_a_file_size_limit_fails_the_run_in_one_line_and_publishes_nothing_unplayable(model, clip, tmp_path, name, limit):
    out = tmp_path / name
    run = _popen(model, "--source", clip, "--loop", "--max-frames", "400", "--out", out, "--no-show",
                 preexec_fn=_file_size_limit(limit), restore_signals=False)  # fmt: skip
    stdout, stderr = run.communicate(timeout=120)
    assert_one_line_error(subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr),
                          f"--out {out}", "file-size limit", "ulimit -f")  # fmt: skip
    assert hidden_files(tmp_path) == [], "no hidden partial is left"
    if out.suffix:
        assert not out.exists(), "nothing is published under the final name"
    else:  # a folder keeps only complete frames (each PNG is written under a temporary name, then renamed)
        assert hidden_files(out) == [] and all(cv2.imread(str(p)) is not None for p in out.iterdir())


@pytest.mark.skipif(not can_mount_a_private_tmpfs(), reason="needs root and unshare(1) to mount a private 1 MB tmpfs")
@pytest.mark.parametrize("name", ["rec.mp4", "frames"])
def test_a_full_disk_fails_the_run_in_one_line_and_publishes_nothing_unplayable(model, clip, tmp_path, name):
    """ENOSPC for real: the output lies on a 1 MB tmpfs, mounted in a mount namespace of the run's own."""
    disk, listing = tmp_path / "disk", tmp_path / "listing.txt"
    disk.mkdir()
    out = disk / name
    run = [sys.executable, "-m", "edgeseg", "run", str(model), "--source", str(clip), "--loop", "--max-frames", "400",
           "--out", str(out), "--no-show"]  # fmt: skip
    script = 'disk=$1; listing=$2; shift 2; mount -t tmpfs -o size=1m tmpfs "$disk" || exit 99; "$@"; code=$?; ls -AR "$disk" > "$listing"; exit $code'
    done = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", str(disk), str(listing), *run],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)  # fmt: skip
    assert_one_line_error(done, f"--out {out}", "No space left on device")
    names = [line for line in listing.read_text().split() if not line.endswith(":")]
    assert not [n for n in names if n.startswith(".")], f"hidden partial left: {names}"
    if out.suffix:
        assert name not in names, "nothing is published under the final name"
    else:
        assert names and names[0] == name, names  # the folder, with whatever complete frames fitted


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv"])
def test_a_recording_cut_short_is_not_taken_for_a_finished_one(tmp_path, suffix):
    """The check after release, which catches write failures where OpenCV's write() says nothing (OpenCV 4)."""
    from edgeseg.video.sinks import _holds_frames

    sink = open_sink(str(tmp_path / f"whole{suffix}"), 10.0)
    rng = np.random.default_rng(0)
    for _ in range(40):
        sink.write(rng.integers(0, 255, (96, 128, 3), np.uint8))
    sink.close()
    whole = (tmp_path / f"whole{suffix}").read_bytes()
    assert _holds_frames(tmp_path / f"whole{suffix}", 40)
    assert not _holds_frames(tmp_path / f"whole{suffix}", 41)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole[: len(whole) * 6 // 10])
    assert not _holds_frames(cut, 40)


# --- outputs never replaced or mixed silently -------------------------------------------------


def test_a_folder_named_like_a_video_is_refused_before_any_work(tmp_path):
    (tmp_path / "x.mp4").mkdir()
    missing_model = tmp_path / "no_model.onnx"  # the output is checked before the model is even opened
    done = run_cli("run", missing_model, "--source", tmp_path, "--out", tmp_path / "x.mp4", "--no-show")
    assert_one_line_error(done, f"--out {tmp_path / 'x.mp4'}", "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"] and not any((tmp_path / "x.mp4").iterdir())


def test_more_streams_than_threads_is_one_line_and_writes_nothing(model, clip, tmp_path):
    done = run_cli("run", model, "--source", clip, "--out", tmp_path / "x.mp4", "--no-show", "--streams", "4",
                   "--threads", "2")  # fmt: skip
    assert_one_line_error(done, "--streams 4", "--threads 2")
    assert list(tmp_path.iterdir()) == []


def test_existing_outputs_are_refused_without_exist_ok(model, clip, tmp_path):
    video = tmp_path / "old.mp4"
    video.write_bytes(b"an earlier recording")
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "frame_000000.png").write_bytes(b"an earlier frame")
    done = run_cli("run", model, "--source", clip, "--out", video, "--no-show")
    assert_one_line_error(done, f"--out {video}", "exists", "--exist-ok")
    done = run_cli("run", model, "--source", clip, "--out", folder, "--no-show")
    assert_one_line_error(done, f"--out {folder}", "not empty", "--exist-ok")
    assert video.read_bytes() == b"an earlier recording"
    assert (folder / "frame_000000.png").read_bytes() == b"an earlier frame"
    assert hidden_files(tmp_path) == []


def test_exist_ok_replaces_a_video_and_clears_only_the_old_frames_of_a_folder(model, clip, tmp_path):
    video, folder = tmp_path / "old.mp4", tmp_path / "frames"
    video.write_bytes(b"an earlier recording")
    folder.mkdir()
    for index in range(20):  # a longer earlier run
        (folder / f"frame_{index:06d}.png").write_bytes(b"old")
    (folder / "notes.txt").write_text("mine")
    (folder / "frame_final.png").write_bytes(b"not a name the sink writes")
    done = run_cli("run", model, "--source", clip, "--out", video, "--out", folder, "--no-show", "--max-frames", "4",
                   "--exist-ok")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert decoded_frames(video) == 4
    frames = sorted(p.name for p in folder.glob("frame_??????.png"))
    assert frames == [f"frame_{i:06d}.png" for i in range(4)], "no stale frame is mixed with the new ones"
    assert all(cv2.imread(str(folder / name)) is not None for name in frames)
    assert (folder / "notes.txt").read_text() == "mine" and (folder / "frame_final.png").exists()


def test_segments_cut_a_recording_into_finished_files(model, clip, tmp_path):
    video = tmp_path / "rec.mp4"  # the clip runs at 10 FPS: --segment 1 is 10 frames a file
    done = run_cli("run", model, "--source", clip, "--out", video, "--no-show", "--max-frames", "25", "--segment", "1",
                   "--loop")  # fmt: skip
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["rec_0000.mp4", "rec_0001.mp4", "rec_0002.mp4"], names
    assert [decoded_frames(tmp_path / name) for name in names] == [10, 10, 5]
    # a second recording under the same name neither mixes with the first nor replaces it silently
    again = run_cli("run", model, "--source", clip, "--out", video, "--no-show", "--max-frames", "5", "--segment", "1")
    assert_one_line_error(again, f"--out {video}", "segments of an earlier recording", "--exist-ok")
    again = run_cli("run", model, "--source", clip, "--out", video, "--no-show", "--max-frames", "5", "--segment", "1",
                    "--exist-ok")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec_0000.mp4"] and decoded_frames(tmp_path / "rec_0000.mp4") == 5
    assert_one_line_error(run_cli("run", model, "--source", clip, "--out", video, "--no-show", "--segment", "0"), "--segment")


# --- statistics in fixed memory ----------------------------------------------------------------

TOLERANCE = StreamingStats.RELATIVE_ERROR * (1 + 1e-9)


def _check(values: np.ndarray) -> None:
    stats = StreamingStats()
    for value in values:
        stats.add(float(value))
    for q in (0.5, 0.9, 0.95, 0.99):
        true = float(np.percentile(values, 100 * q, method="lower"))
        assert abs(stats.quantile(q) - true) <= TOLERANCE * true, (q, stats.quantile(q), true)
    assert stats.mean() == pytest.approx(float(np.mean(values)), rel=1e-9)
    assert stats.max == values.max() and stats.count == len(values)


@pytest.mark.parametrize("kind", ["lognormal", "uniform", "bimodal", "constant", "spikes"])
def test_streaming_quantiles_stay_within_half_a_percent(kind):
    rng = np.random.default_rng(7)
    n = 50_000
    values = {
        "lognormal": rng.lognormal(3.0, 0.6, n),
        "uniform": rng.uniform(0.01, 500.0, n),
        "bimodal": np.concatenate([rng.normal(8, 0.5, n // 2), rng.normal(90, 5, n // 2)]).clip(0.01),
        "constant": np.full(n, 12.5),
        "spikes": np.where(rng.random(n) < 0.02, 3000.0, rng.normal(20, 1, n)),
    }[kind]
    _check(values)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=StreamingStats.LOW, max_value=StreamingStats.HIGH), min_size=1, max_size=300))
def test_streaming_quantiles_hold_for_any_sample(values):
    _check(np.array(values))


def test_run_statistics_do_not_grow_with_the_frames():
    stats = RunStats()
    for _ in range(1000):  # warm-up: the histogram and the recent window fill
        stats.model_ms.add(20.0)
        stats.latency_ms.add(40.0)
    values = np.random.default_rng(0).lognormal(3, 0.5, 100_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for value in values:
            stats.model_ms.add(float(value))
            stats.latency_ms.add(float(2 * value))
            stats.done()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 2048, f"{grown} bytes for 100,000 frames"
    summary = stats.to_dict()["model_latency_ms"]
    assert summary["count"] == 101_000 and summary["p50"] <= summary["p90"] <= summary["p99"] <= summary["max"]
