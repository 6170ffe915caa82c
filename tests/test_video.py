"""edgeseg run on real video: clips written and read by OpenCV, a live HTTP stream served by ffmpeg, SIGINT.

Every loop is bounded in frames and time.
"""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import CLIP_FRAMES, ROOT, assert_one_line_error, decoded_frames, run_cli, wait_for
from edgeseg.core.errors import EdgesegError
from edgeseg.runtime import Segmenter
from edgeseg.video import RunOptions, run_session
from edgeseg.video.render import Renderer

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg (Debian package) is needed to serve a stream")


@pytest.fixture(scope="module")
def model(video_model):
    return video_model


@pytest.fixture(scope="module")
def clip(camvid_clip):
    return camvid_clip


def test_clip_to_folder_and_mp4_keeps_every_frame_and_the_overlay_colours(model, clip, tmp_path):
    stats = run_session(model, str(clip), [str(tmp_path / "frames"), str(tmp_path / "out.mp4")], RunOptions(legend=False, hud=False))
    assert stats["frames_in"] == stats["processed"] == CLIP_FRAMES and stats["dropped"] == 0
    written = sorted((tmp_path / "frames").glob("*.png"))
    assert len(written) == CLIP_FRAMES
    assert len(decoded_frames(tmp_path / "out.mp4")) == CLIP_FRAMES
    assert not list(tmp_path.glob(".*partial*"))
    with Segmenter.load(model) as segmenter:
        for frame, path in zip(decoded_frames(clip), written):
            expected = segmenter.overlay(frame, segmenter.segment(frame))
            assert np.abs(cv2.imread(str(path)).astype(int) - expected).mean() < 0.5


def test_cli_run_matches_predict_on_the_same_frames(model, clip, tmp_path):
    frames_dir = tmp_path / "decoded"
    frames_dir.mkdir()
    for index, frame in enumerate(decoded_frames(clip, 4)):
        cv2.imwrite(str(frames_dir / f"f{index}.png"), frame)
    done = run_cli("run", model, "--source", clip, "--out", tmp_path / "run", "--no-show", "--no-hud", "--no-legend",
                   "--max-frames", "4", "--json", tmp_path / "stats.json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "processed 4" in done.stdout and json.loads((tmp_path / "stats.json").read_text())["processed"] == 4
    assert run_cli("predict", model, frames_dir, "--out", tmp_path / "pred").returncode == 0
    with Segmenter.load(model) as segmenter:  # only for its palette: the labels come from predict's PNGs
        for index in range(4):
            ours = cv2.imread(str(tmp_path / "run" / f"frame_{index:06d}.png")).astype(int)
            labels = np.asarray(Image.open(tmp_path / "pred" / f"f{index}.png"))  # a palette PNG of class ids
            frame = cv2.imread(str(frames_dir / f"f{index}.png"))
            assert np.abs(ours - segmenter.overlay(frame, labels)).mean() < 0.5


def test_render_modes_and_ignored_classes(model):
    with Segmenter.load(model) as segmenter:
        meta = segmenter.meta
    image = np.full((60, 80, 3), 100, np.uint8)
    labels = np.zeros((60, 80), np.uint8)
    labels[:, 40:] = 3
    side = Renderer(meta, "side-by-side", legend=False, hud=False).render(image, labels)
    assert side.shape == (60, 160, 3) and np.array_equal(side[:, :80], image)
    hidden = Renderer(meta, "overlay", legend=False, hud=False, ignore_classes=[meta.classes[3]]).render(image, labels)
    assert np.array_equal(hidden[:, 40:], image[:, 40:]) and not np.array_equal(hidden[:, :40], image[:, :40])
    mask = Renderer(meta, "mask", legend=False, hud=False, ignore_classes=["0"]).render(image, labels)
    assert not mask[:, :40].any() and mask[:, 40:].any()
    with pytest.raises(EdgesegError, match="--ignore-class Zebra"):
        Renderer(meta, ignore_classes=["Zebra"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_run(*args):
    command = [sys.executable, "-m", "edgeseg", "run", *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _serve(clip, port: int) -> subprocess.Popen:
    """An MJPEG-over-HTTP camera stand-in: ffmpeg plays the clip in a loop at its frame rate. Returns once it
    listens (read from /proc/net/tcp: a probe connection would be taken for its one client). Started again
    while the port is still held by the connection of a server killed a moment ago (ffmpeg then exits 1)."""
    deadline = time.monotonic() + 20
    while True:
        server = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "quiet", "-re", "-stream_loop", "-1", "-i", str(clip), "-c:v", "mjpeg",
             "-q:v", "5", "-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{port}/cam"]  # fmt: skip
        )
        wait_for(lambda: _listening(port) or server.poll() is not None, max(0.1, deadline - time.monotonic()))
        if server.poll() is None or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert server.poll() is None and _listening(port), "ffmpeg never listened"
    return server


def _listening(port: int) -> bool:
    table = Path("/proc/net/tcp")
    if not table.exists():  # not Linux: give ffmpeg the time it usually needs
        time.sleep(1.0)
        return True
    rows = [line.split() for line in table.read_text().splitlines()[1:]]
    return any(row[1].endswith(f":{port:04X}") and row[3] == "0A" for row in rows)  # 0A: LISTEN


def _wait_until_writing(run: subprocess.Popen, folder) -> None:
    """Until the run has a recording open; else its own words, so a failure says why."""
    if wait_for(lambda: _partials(folder) or run.poll() is not None, 30) and _partials(folder):
        return
    run.kill()
    stdout, stderr = run.communicate(timeout=10)
    raise AssertionError(f"run never started writing (exit {run.returncode}): {(stderr or stdout)[-1500:]}")


@needs_ffmpeg
def test_network_stream_killed_midway_ends_cleanly_with_a_playable_file(model, clip, tmp_path):
    port = _free_port()
    server = _serve(clip, port)
    out = tmp_path / "stream.mp4"
    try:
        run = _start_run(model, "--source", f"http://127.0.0.1:{port}/cam", "--out", out, "--no-show",
                         "--reconnect", "2", "--max-frames", "2000")  # fmt: skip
        _wait_until_writing(run, tmp_path)
        time.sleep(1.5)
    finally:
        server.kill()
        server.wait(timeout=10)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert "reconnecting" in stdout and "gave up after 2 attempts" in stdout and "source lost" in stdout
    assert len(decoded_frames(out)) > 0 and not _partials(tmp_path)


@needs_ffmpeg
def test_network_stream_that_comes_back_is_reconnected(model, clip, tmp_path):
    port, out, stats = _free_port(), tmp_path / "stream.mp4", tmp_path / "stats.json"
    server = _serve(clip, port)
    try:
        run = _start_run(model, "--source", f"http://127.0.0.1:{port}/cam", "--out", out, "--no-show",
                         "--reconnect", "6", "--max-frames", "40", "--json", stats)  # fmt: skip
        _wait_until_writing(run, tmp_path)
        time.sleep(1.0)
        server.kill()
        server.wait(timeout=10)
        time.sleep(0.3)
        server = _serve(clip, port)
        stdout, stderr = run.communicate(timeout=90)
    finally:
        server.kill()
        server.wait(timeout=10)
    assert run.returncode == 0, stderr
    assert "reconnected" in stdout, stdout
    report = json.loads(stats.read_text())
    assert report["reconnects"] >= 1 and report["frames_in"] == 40 and len(decoded_frames(out)) == report["processed"]


def _partials(folder):
    return list(folder.glob(".*partial*"))


def test_sigint_leaves_a_playable_file(model, clip, tmp_path):
    out = tmp_path / "looped.mp4"
    run = _start_run(model, "--source", clip, "--loop", "--out", out, "--no-show", "--max-frames", "100000")
    assert wait_for(lambda: _partials(tmp_path), 30), "run never started writing"
    time.sleep(1.0)
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=30)
    assert run.returncode == 130, stderr  # 128 + SIGINT, after the recording was closed
    assert "(SIGINT)" in stdout
    assert len(decoded_frames(out)) > 0 and not list(tmp_path.glob(".*partial*"))


def test_bad_sources_and_sinks_are_one_line(model, clip, tmp_path):
    no_screen = {"--no-show"}
    cases = [
        (("--camera", "7", "--out", tmp_path / "a.mp4"), ("--camera 7", "no camera")),
        (("--source", "http://127.0.0.1:1/none", "--out", tmp_path / "a.mp4"), ("http://127.0.0.1:1/none", "cannot open")),
        (("--source", tmp_path / "missing.mp4", "--out", tmp_path / "a.mp4"), ("missing.mp4", "no such file")),
        (("--source", "videotestsrc ! appsink", "--out", tmp_path / "a.mp4"), ("GStreamer",)),
        (("--source", clip, "--out", "/proc/edgeseg/out.mp4"), ("/proc/edgeseg/out.mp4",)),
        (("--source", clip, "--out", tmp_path / "a.gif"), ("a.gif", ".mp4")),
        (("--source", clip, "--camera", "0", "--out", tmp_path / "a.mp4"), ("exactly one",)),
        (("--source", clip, "--ignore-class", "Zebra", "--out", tmp_path / "a.mp4"), ("--ignore-class Zebra",)),
    ]
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("not a video")
    cases.append((("--source", not_video, "--out", tmp_path / "a.mp4"), ("notes.mp4",)))
    for args, fragments in cases:
        assert_one_line_error(run_cli("run", model, *args, *no_screen), *fragments)
    assert not (tmp_path / "a.mp4").exists()


def test_a_camera_node_that_is_missing_names_the_flag_it_came_from(model, tmp_path):
    """`--source /dev/videoN` was answered with an error naming --camera, a flag the user never typed."""
    node = next(f"/dev/video{n}" for n in range(9, 99) if not Path(f"/dev/video{n}").exists())
    done = run_cli("run", model, "--source", node, "--out", tmp_path / "a.mp4", "--no-show")
    assert_one_line_error(done, f"--source {node}", "no camera there")
    assert "--camera" not in done.stderr


def test_run_refuses_a_json_it_cannot_write_before_the_run(model, clip, tmp_path):
    """--json used to be checked only when the whole run was over."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    done = run_cli("run", model, "--source", clip, "--out", tmp_path / "a.mp4", "--no-show", "--json", a_file / "s.json")
    assert_one_line_error(done, f"--json {a_file / 's.json'}", "is a file, not a folder")
    assert done.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_window_without_a_screen_is_one_line(model, clip):
    import os

    env_display = os.environ.pop("DISPLAY", None)
    try:
        done = run_cli("run", model, "--source", clip, "--max-frames", "2")
    finally:
        if env_display is not None:
            os.environ["DISPLAY"] = env_display
    assert_one_line_error(done, "display://", "--no-show")


def test_realtime_paces_a_file_and_drops_frames_like_a_camera(model, clip, tmp_path):
    stats = run_session(model, str(clip), [str(tmp_path / "frames")], RunOptions(realtime=True, fps=1000, legend=False, hud=False))
    assert stats["frames_in"] == CLIP_FRAMES and stats["dropped"] > 0
    assert stats["processed"] + stats["dropped"] == CLIP_FRAMES
    assert len(list((tmp_path / "frames").glob("*.png"))) == stats["processed"]


def test_file_sinks_open_at_a_known_size_and_leave_nothing_when_empty(clip, tmp_path):
    from edgeseg.video import SourceOptions, open_sink, open_source

    source = open_source(str(clip), SourceOptions(width=240, height=180))
    sink = open_sink(str(tmp_path / "small.avi"), source.fps, (240, 180))  # size known: the file opens at once
    assert list(tmp_path.glob(".small.avi.*partial*")), "a sink given its size opens before the first frame"
    while (frame := source.read()) is not None:
        sink.write(frame.image)
    with pytest.raises(EdgesegError, match="480x360.*240x180"):
        sink.write(np.zeros((360, 480, 3), np.uint8))
    source.close()
    sink.close()
    assert len(decoded_frames(tmp_path / "small.avi")) == CLIP_FRAMES
    empty = open_sink(str(tmp_path / "empty.mp4"), 10.0, (240, 180))
    empty.close()
    assert not list(tmp_path.glob("*empty*")), "a sink that got no frame leaves no empty video"
