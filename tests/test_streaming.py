"""The Segmenter's stream (submit/collect) and `edgeseg run` on top of it: order, results, bounds, errors, threads.

Real ONNX Runtime sessions on the small test model, real clips and files.
"""

import ast
import os
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import CLIP_FRAMES, ROOT, decoded_frames
from edgeseg.core.errors import EdgesegError
from edgeseg.runtime import Segmenter
from edgeseg.video import RunOptions, run_session
from edgeseg.video.threads import HELPER_NICENESS


@pytest.fixture(scope="module")
def model(video_model):
    return video_model


@pytest.fixture(scope="module")
def frames(camvid_clip):
    images = decoded_frames(camvid_clip)
    assert len(images) == CLIP_FRAMES
    return images


def _varied(frames):
    """Clip frames at their own size, smaller, grey and BGRA: every pre-processing path."""
    return [frames[0], cv2.resize(frames[1], (200, 150)), cv2.cvtColor(frames[2], cv2.COLOR_BGR2GRAY),
            cv2.cvtColor(frames[3], cv2.COLOR_BGR2BGRA), *frames[4:]]  # fmt: skip


def test_collect_returns_every_frame_in_submit_order_equal_to_segment(model, frames):
    images = _varied(frames)
    with Segmenter.load(model, threads=1) as segmenter:
        expected = [segmenter.segment(image) for image in images]
        segmenter.start(depth=3)
        collected = []
        for index, image in enumerate(images):
            assert segmenter.submit(image, tag=("frame", index), timeout=30)
            if segmenter.in_flight == 3:
                collected.append(segmenter.collect(timeout=30))
        while segmenter.in_flight:
            collected.append(segmenter.collect(timeout=30))
        assert segmenter.collect(timeout=0.01) is None, "nothing in flight: collect returns at once"
    assert [result.tag for result in collected] == [("frame", i) for i in range(len(images))]
    for result, labels, image in zip(collected, expected, images):
        assert result.labels.shape == image.shape[:2] and result.labels.dtype == np.uint8
        assert np.array_equal(result.labels, labels)
        assert result.model_ms > 0


def test_two_streams_run_frames_at_once_and_return_them_in_submit_order(model, frames):
    images = _varied(frames) * 2
    with Segmenter.load(model, threads=1) as single:
        expected = [single.segment(image) for image in images]
    with Segmenter.load(model, streams=2, threads=2) as segmenter:
        assert segmenter.streams == 2 and segmenter.backends[0] is not segmenter.backends[1]
        segmenter.start()  # depth: one more than the streams
        assert sorted(t.name for t in threading.enumerate() if t.name.startswith("edgeseg-model")) == [
            "edgeseg-model-0", "edgeseg-model-1"]  # fmt: skip
        ran = {0: 0, 1: 0}
        for index, backend in enumerate(segmenter.backends):
            backend.infer_for_labels = _counting(backend.infer_for_labels, ran, index)
        collected = []
        for index, image in enumerate(images):
            assert segmenter.submit(image, tag=index, timeout=30)
            if segmenter.in_flight == 3:
                collected.append(segmenter.collect(timeout=30))
        while segmenter.in_flight:
            collected.append(segmenter.collect(timeout=30))
        assert not segmenter.submit(images[0], "x", timeout=0) or segmenter.collect(timeout=30).tag == "x"
    assert [result.tag for result in collected] == list(range(len(images)))
    for result, labels in zip(collected, expected):
        assert np.array_equal(result.labels, labels)
    assert ran[0] > 0 and ran[1] > 0 and sum(ran.values()) >= len(images), ran


def _counting(infer, counts, key):
    def counted(batch):
        counts[key] += 1
        return infer(batch)

    return counted


@pytest.mark.parametrize(("streams", "threads", "message"), [(0, 1, "--streams 0: give at least 1"),
                                                             (3, 2, "--streams 3 with --threads 2")])  # fmt: skip
def test_streams_the_threads_cannot_feed_are_refused(model, streams, threads, message):
    with pytest.raises(EdgesegError, match=message):
        Segmenter.load(model, streams=streams, threads=threads)


def test_submit_waits_while_depth_frames_are_in_flight(model, frames):
    with Segmenter.load(model, threads=1) as segmenter:
        segmenter.start(depth=2)
        assert segmenter.submit(frames[0], 0) and segmenter.submit(frames[1], 1)
        assert not segmenter.submit(frames[2], 2, timeout=0.2), "a third frame must wait for a collect"
        assert segmenter.in_flight == 2
        assert segmenter.collect(timeout=30).tag == 0
        assert segmenter.submit(frames[2], 2, timeout=30)
        assert [segmenter.collect(timeout=30).tag for _ in range(2)] == [1, 2]
        assert segmenter.in_flight == 0 and segmenter.dropped == 0


def test_latest_only_never_waits_and_accounts_for_every_frame(model, frames):
    submitted = len(frames) * 3
    with Segmenter.load(model, threads=1) as segmenter:
        segmenter.start(depth=1)
        for index in range(submitted):
            segmenter.submit(frames[index % len(frames)], index, latest_only=True)  # never blocks
        tags = []
        while segmenter.in_flight:
            tags.append(segmenter.collect(timeout=30).tag)
        dropped = segmenter.dropped
    assert dropped > 0, "a depth-1 stream fed without collecting must drop frames"
    assert len(tags) + dropped == submitted
    assert tags == sorted(tags)


def test_a_model_error_is_raised_by_collect_and_the_stream_goes_on(model, frames):
    with Segmenter.load(model, threads=1) as segmenter:
        expected = segmenter.segment(frames[1])
        working = segmenter.backend.infer_for_labels

        def broken(batch):
            raise RuntimeError("the model failed")

        segmenter.backend.infer_for_labels = broken  # the model's thread now fails on the next frame
        assert segmenter.submit(frames[0], "broken", timeout=30)
        with pytest.raises(RuntimeError, match="the model failed"):
            segmenter.collect(timeout=30)
        assert segmenter.in_flight == 0
        segmenter.backend.infer_for_labels = working
        assert segmenter.submit(frames[1], "fine", timeout=30)
        result = segmenter.collect(timeout=30)
        assert result.tag == "fine" and np.array_equal(result.labels, expected)


def test_stop_ends_the_model_thread(model, frames):
    with Segmenter.load(model, threads=1) as segmenter:
        segmenter.submit(frames[0], 0)
        assert any(t.name.startswith("edgeseg-model") for t in threading.enumerate())
        segmenter.stop()
        assert not any(t.name.startswith("edgeseg-model") for t in threading.enumerate())
        assert segmenter.in_flight == 0 and segmenter.collect(timeout=0.01) is None


def test_run_goes_through_submit_and_collect(model, camvid_clip, tmp_path, monkeypatch):
    calls = {"submit": 0, "collect": 0}
    submit, collect = Segmenter.submit, Segmenter.collect

    def counting_submit(self, *args, **kwargs):
        queued = submit(self, *args, **kwargs)
        calls["submit"] += queued  # a submit that timed out is tried again
        return queued

    def counting_collect(self, *args, **kwargs):
        result = collect(self, *args, **kwargs)
        calls["collect"] += result is not None
        return result

    monkeypatch.setattr(Segmenter, "submit", counting_submit)
    monkeypatch.setattr(Segmenter, "collect", counting_collect)
    stats = run_session(model, str(camvid_clip), [str(tmp_path / "out.mp4")], RunOptions(legend=False, hud=False))
    assert stats["processed"] == CLIP_FRAMES
    assert calls == {"submit": CLIP_FRAMES, "collect": CLIP_FRAMES}


def test_run_video_takes_a_source_a_segmenter_and_sinks_opened_by_the_caller(model, camvid_clip, tmp_path):
    """The loop without names (what run_session opens, opened here): it closes the sinks, not the source or model."""
    from edgeseg.video import SourceOptions, open_sink, open_source, run_video

    source = open_source(str(camvid_clip), SourceOptions(width=240, height=180))
    sinks = [open_sink(str(tmp_path / "out.avi"), source.fps), open_sink(str(tmp_path / "frames"), source.fps)]
    with Segmenter.load(model, threads=1) as segmenter:
        stats = run_video(source, segmenter, sinks, RunOptions(max_frames=5, hud=False))
        assert segmenter.segment(np.zeros((8, 8, 3), np.uint8)).shape == (8, 8), "the model is still open"
    assert source.read() is not None, "the source is still open"
    source.close()
    assert (stats.frames_in, stats.processed, stats.dropped, stats.stopped_by) == (5, 5, 0, "end of input")
    written = decoded_frames(tmp_path / "out.avi")
    assert len(written) == 5 and written[0].shape == (180, 240, 3)
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 5


def test_a_file_runs_on_two_streams_with_the_same_frames_in_the_same_order(model, camvid_clip, tmp_path):
    one = run_session(model, str(camvid_clip), [str(tmp_path / "one.mp4")], RunOptions(threads=2, streams=1, hud=False))
    auto = run_session(model, str(camvid_clip), [str(tmp_path / "auto.mp4")], RunOptions(threads=2, hud=False))
    assert (one["streams"], auto["streams"]) == (1, 2), "a file on 2 CPU threads gets 2 streams by default"
    frames_one, frames_auto = decoded_frames(tmp_path / "one.mp4"), decoded_frames(tmp_path / "auto.mp4")
    assert len(frames_one) == len(frames_auto) == CLIP_FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(frames_one, frames_auto))


def test_where_a_model_runs_is_known_before_it_opens(model):
    from edgeseg.runtime.backends import runs_on_cpu

    with Segmenter.load(model, threads=1) as opened:
        assert runs_on_cpu(model) == (opened.device == "cpu") is True
    assert runs_on_cpu("m.onnx", "openvino") and runs_on_cpu("m.pt") and runs_on_cpu("m.onnx", device="cpu")
    assert not runs_on_cpu("m.engine") and not runs_on_cpu("m.onnx", device="cuda")
    assert not runs_on_cpu("m.onnx", device="tensorrt") and not runs_on_cpu("m.pt", device="cuda:0")


@pytest.mark.parametrize(("options", "streams"), [({"threads": 1}, 1), ({"threads": 2, "realtime": True}, 1),
                                                  ({"threads": 4, "streams": 3}, 3)])  # fmt: skip
def test_one_stream_for_a_paced_source_or_one_thread_unless_asked(model, camvid_clip, tmp_path, options, streams):
    report = run_session(model, str(camvid_clip), [str(tmp_path / "out.mp4")], RunOptions(max_frames=4, **options))
    assert report["streams"] == streams and report["processed"] >= 1


def test_the_pipeline_leaves_the_backend_and_the_preprocessor_to_the_segmenter():
    source = (ROOT / "edgeseg" / "video" / "pipeline.py").read_text()
    names = {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)}
    assert "backend" not in names and "infer" not in names and "preprocessor" not in names
    assert "Preprocessor" not in source


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_helper_threads_run_below_the_model_and_opencv_threads_come_back(model, camvid_clip, tmp_path):
    seen = []

    def on_frame(_stats):
        thread = threading.get_native_id()
        seen.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, thread)))

    before = cv2.getNumThreads()
    run_session(model, str(camvid_clip), [str(tmp_path / "out.mp4")], RunOptions(max_frames=3, on_frame=on_frame))
    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert seen and all(name == "writer" for name, _ in seen)
    assert all(nice == min(19, main_nice + HELPER_NICENESS) for _, nice in seen), (seen, main_nice)
    assert cv2.getNumThreads() == before


def test_a_write_failure_in_the_writer_thread_stops_the_run_in_one_line(model, camvid_clip, tmp_path):
    folder = tmp_path / "frames"

    def lose_the_folder(stats):
        if stats.processed == 3:
            for path in folder.iterdir():
                path.unlink()
            folder.rmdir()
            folder.write_text("not a folder any more")  # the next frame cannot be written

    with pytest.raises(EdgesegError) as info:
        run_session(model, str(camvid_clip), [str(folder), str(tmp_path / "out.mp4")], RunOptions(on_frame=lose_the_folder))
    message = str(info.value)
    assert "\n" not in message and f"--out {folder}" in message and "writing frame 4 failed" in message
    assert not (tmp_path / "out.mp4").exists() or cv2.VideoCapture(str(tmp_path / "out.mp4")).isOpened()
    assert not list(tmp_path.glob(".*partial*")), "the other sink was closed and its partial file renamed or removed"


def test_the_legend_counts_every_class_present_even_a_single_pixel():
    """Classes under the legend's pixel threshold are not listed, and not left out unsaid: its last row counts them."""
    from edgeseg.runtime.visualize import LEGEND_MIN_PIXELS, class_pixels, draw_legend, palette_lut_bgr

    rng = np.random.default_rng(0)
    labels = np.zeros((360, 480), np.uint8)
    labels[rng.integers(0, 360, 5), rng.integers(0, 480, 5)] = [3, 7, 255, 10, 3]
    assert class_pixels(labels, 11).tolist() == [360 * 480 - 5, 0, 0, 2, 0, 0, 0, 1, 0, 0, 1]  # 255 (ignore) not counted
    view = labels[::3, 1::2]  # a strided view, as a crop of a letterboxed label map
    assert class_pixels(view, 11).tolist() == np.bincount(view[view < 11], minlength=11).tolist()
    assert class_pixels(labels.astype(np.int32), 11).tolist() == class_pixels(labels, 11).tolist()
    classes = [f"class{i}" for i in range(11)]
    image = np.full((360, 480, 3), 255, np.uint8)
    rows = draw_legend(image, labels, classes, palette_lut_bgr([(255, 255, 255)] * 11))
    assert rows == ["class0", f"+3 under {LEGEND_MIN_PIXELS} px"]
    assert draw_legend(image.copy(), labels, classes, palette_lut_bgr([(0, 0, 0)] * 11), min_pixels=1) == [
        "class0", "class3", "class7", "class10"]


def test_the_heads_up_line_shows_no_figure_before_it_is_measured():
    """The first frames said "0.0 FPS": a rate needs two frames out, a capture-to-display time one."""
    from edgeseg.video.stats import RunStats, hud_text

    stats = RunStats()
    stats.model_ms.add(41.0)  # the first frame's model time is known when it is drawn
    assert hud_text(stats) == "-- FPS  model 41 ms  capture-to-display -- ms"
    stats.done()
    stats.latency_ms.add(60.0)
    assert hud_text(stats).startswith("-- FPS") and "capture-to-display 60 ms" in hud_text(stats)
    stats.first_done -= 0.1  # two frames out, 0.1 s apart: 10 frames a second
    stats.done()
    assert hud_text(stats).startswith("10.0 FPS") or hud_text(stats).startswith("9.9 FPS")
