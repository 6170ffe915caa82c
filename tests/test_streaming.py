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

from conftest import CLIP_FRAMES, ROOT
from edgeseg.errors import EdgesegError
from edgeseg.runtime import Segmenter
from edgeseg.video import run_video
from edgeseg.video.pipeline import HELPER_NICENESS


@pytest.fixture(scope="module")
def model(video_model):
    return video_model


@pytest.fixture(scope="module")
def frames(camvid_clip):
    capture, images = cv2.VideoCapture(str(camvid_clip)), []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        images.append(image)
    capture.release()
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
        session = segmenter.backend.session
        segmenter.backend.session = None  # the model's thread now fails on the next frame
        assert segmenter.submit(frames[0], "broken", timeout=30)
        with pytest.raises(AttributeError):
            segmenter.collect(timeout=30)
        assert segmenter.in_flight == 0
        segmenter.backend.session = session
        assert segmenter.submit(frames[1], "fine", timeout=30)
        result = segmenter.collect(timeout=30)
        assert result.tag == "fine" and np.array_equal(result.labels, expected)


def test_stop_ends_the_model_thread(model, frames):
    with Segmenter.load(model, threads=1) as segmenter:
        segmenter.submit(frames[0], 0)
        assert any(t.name == "edgeseg-model" for t in threading.enumerate())
        segmenter.stop()
        assert not any(t.name == "edgeseg-model" for t in threading.enumerate())
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
    stats = run_video(model, str(camvid_clip), [str(tmp_path / "out.mp4")], legend=False, hud=False)
    assert stats["processed"] == CLIP_FRAMES
    assert calls == {"submit": CLIP_FRAMES, "collect": CLIP_FRAMES}


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
    run_video(model, str(camvid_clip), [str(tmp_path / "out.mp4")], max_frames=3, on_frame=on_frame)
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
        run_video(model, str(camvid_clip), [str(folder), str(tmp_path / "out.mp4")], on_frame=lose_the_folder)
    message = str(info.value)
    assert "\n" not in message and f"--out {folder}" in message and "writing frame 4 failed" in message
    assert not (tmp_path / "out.mp4").exists() or cv2.VideoCapture(str(tmp_path / "out.mp4")).isOpened()
    assert not list(tmp_path.glob(".*partial*")), "the other sink was closed and its partial file renamed or removed"


def test_the_legend_finds_every_class_present_even_a_single_pixel():
    from edgeseg.video.render import present_classes

    rng = np.random.default_rng(0)
    labels = np.zeros((360, 480), np.uint8)
    labels[rng.integers(0, 360, 5), rng.integers(0, 480, 5)] = [3, 7, 255, 10, 3]
    assert present_classes(labels) == [0, 3, 7, 10, 255]
    view = labels[::3, 1::2]  # a strided view, as a crop of a letterboxed label map
    assert present_classes(view) == np.unique(view).tolist()
    assert present_classes(labels.astype(np.int32)) == [0, 3, 7, 10, 255]
