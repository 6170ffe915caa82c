"""``Segmenter``: a model of any kind, with its own pre- and post-processing, on BGR images.

The three stages are public (``prepare``, ``run``, ``finish``) so that ``edgeseg bench`` times
exactly the code every other command runs.

For a stream of frames (``edgeseg run``), ``submit`` and ``collect`` keep the model busy: the
model runs on the Segmenter's own thread while the caller pre-processes the next frame and
post-processes the last one. See ``submit``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.meta import ModelMeta
from edgeseg.runtime.backends import Backend, open_backend
from edgeseg.runtime.preprocess import Placement, Preprocessor, labels_to_source, to_bgr8
from edgeseg.runtime import visualize


@dataclass
class Segmented:
    """One finished frame of the stream: the caller's tag, its class ids (uint8) at the image's size."""

    tag: object
    labels: np.ndarray
    model_ms: float  # the model alone, on the Segmenter's thread


@dataclass
class _Job:
    slot: int  # which row of the stream's input buffer holds the prepared image
    place: Placement
    tag: object
    outputs: np.ndarray | None = None
    model_ms: float = 0.0
    error: BaseException | None = None


class Segmenter:
    def __init__(self, backend: Backend, batch_size: int = 1) -> None:
        if batch_size < 1 or batch_size > backend.max_batch:
            raise EdgesegError(
                f"--batch-size {batch_size}: this model takes batches of 1 to {backend.max_batch}; "
                "re-export it with --dynamic-batch or a larger --batch"
            )
        self.backend = backend
        self.meta: ModelMeta = backend.meta
        self.batch_size = batch_size
        self.preprocessor = Preprocessor(self.meta.preprocess, self.meta.input_size, max_batch=batch_size)
        self.lut_bgr = visualize.palette_lut_bgr(self.meta.palette)
        self._stream: _Stream | None = None

    @classmethod
    def load(
        cls, path: str | Path, backend: str = "auto", device: str | None = None, batch_size: int = 1, **options: object
    ) -> "Segmenter":
        return cls(open_backend(path, backend=backend, device=device, **options), batch_size)

    def segment(self, image: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Class ids (uint8) at each input image's own size, for one BGR image or a list of them."""
        if isinstance(image, np.ndarray):
            return self._segment_batch([image])[0]
        labels: list[np.ndarray] = []
        for start in range(0, len(image), self.batch_size):
            labels.extend(self._segment_batch(image[start : start + self.batch_size]))
        return labels

    def _segment_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        places = self.prepare(images)
        return self.finish(self.run(len(places)), places)

    # --- the stages ------------------------------------------------------------------
    def prepare(self, images: Sequence[np.ndarray]) -> list[Placement]:
        """Pre-process up to batch_size images into the input buffer."""
        return [self.preprocessor(to_bgr8(image), slot) for slot, image in enumerate(images)]

    def run(self, count: int) -> np.ndarray:
        """The model on the first ``count`` prepared inputs: logits (N,C,H,W) or labels (N,H,W)."""
        return self.backend.infer(self.preprocessor.buffer[:count])

    def finish(self, outputs: np.ndarray, places: Sequence[Placement]) -> list[np.ndarray]:
        """Network outputs to labels at each source image's size."""
        labels_kind = self.backend.output_kind == "labels"
        return [labels_to_source(out if labels_kind else argmax(out), place) for out, place in zip(outputs, places)]

    def logits(self, image: np.ndarray) -> tuple[np.ndarray, Placement]:
        """Raw network output (C,H,W) at the network's input size, and where the image sits in it."""
        place = self.prepare([image])[0]
        return self.run(1)[0], place

    # --- pictures --------------------------------------------------------------------
    def colorize(self, labels: np.ndarray) -> np.ndarray:
        return visualize.colorize(labels, self.lut_bgr)

    def overlay(self, image_bgr: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        return visualize.overlay(to_bgr8(image_bgr), labels, self.lut_bgr, alpha)

    @property
    def device(self) -> str:
        """Where the model runs: cpu, cuda, cuda:N."""
        return str(self.backend.device)

    # --- a stream of frames -------------------------------------------------------------
    def start(self, depth: int = 2) -> None:
        """Start the model's thread for ``submit``/``collect``, with at most ``depth`` frames in flight.

        ``submit`` starts it too; call ``start`` first from a thread of normal priority, because a
        thread inherits its creator's priority (``edgeseg run`` lowers its own helper threads').
        While the thread runs, ``start`` does nothing; ``stop`` it first to change ``depth``.
        """
        if self._stream is None:
            self._stream = _Stream(self, depth)

    def submit(self, image: np.ndarray, tag: object = None, timeout: float | None = None, latest_only: bool = False) -> bool:
        """Pre-process a BGR image in this thread and queue it for the model; True once it is queued.

        Waits while ``depth`` frames are in flight (submitted, not yet collected); False if
        ``timeout`` seconds pass first, and nothing is queued. ``latest_only`` (a live camera)
        never waits: a frame the model has not started yet is replaced by this one, or, with every
        slot taken, this one is left out (False); ``dropped`` counts both. One thread submits.
        """
        self.start()
        assert self._stream is not None
        return self._stream.submit(image, tag, timeout, latest_only)

    def collect(self, timeout: float | None = None) -> Segmented | None:
        """The oldest submitted frame's result, in submit order, post-processed in this thread;
        None if ``timeout`` seconds pass first or nothing is in flight. A model error is raised here."""
        if self._stream is None:
            return None
        return self._stream.collect(timeout)

    @property
    def in_flight(self) -> int:
        """Frames submitted and not yet collected."""
        return self._stream.in_flight if self._stream is not None else 0

    @property
    def dropped(self) -> int:
        """Frames submitted with ``latest_only`` that the model never ran on."""
        return self._stream.dropped if self._stream is not None else 0

    def stop(self) -> None:
        """End the model's thread; frames still in flight are forgotten."""
        if self._stream is not None:
            self._stream.stop()
            self._stream = None

    def close(self) -> None:
        self.stop()
        self.backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Stream:
    """The model's thread and the frames in flight, behind one lock.

    Every frame holds one row of the stream's input buffer from ``submit`` until the model has run
    on it; there are ``depth + 1`` rows, so the submitting thread always finds a free one to
    prepare into (no copy of the input), whatever the model's thread is doing.
    """

    def __init__(self, segmenter: Segmenter, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth {depth}: at least 1 frame must be allowed in flight")
        self.segmenter, self.depth = segmenter, depth
        self.preprocessor = Preprocessor(segmenter.meta.preprocess, segmenter.meta.input_size, max_batch=depth + 1)
        self.free = list(range(depth + 1))
        self.waiting: deque[_Job] = deque()  # prepared, the model not started
        self.done: deque[_Job] = deque()  # the model has run, not yet collected
        self.in_flight = self.dropped = 0
        self.running = True
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._work, daemon=True, name="edgeseg-model")
        self.thread.start()

    def submit(self, image: np.ndarray, tag: object, timeout: float | None, latest_only: bool) -> bool:
        with self.changed:
            if not latest_only and not self.changed.wait_for(self._has_room, timeout):
                return False
            slot = self.free.pop()  # one row is always free: rows held <= frames in flight <= depth
        try:
            place = self.preprocessor(to_bgr8(image), slot)
        except BaseException:
            with self.changed:
                self.free.append(slot)
            raise
        with self.changed:
            job = _Job(slot, place, tag)
            if latest_only and self.waiting:
                self.free.append(self.waiting.pop().slot)  # the model never started it
                self.waiting.append(job)
                self.dropped += 1
            elif self._has_room():
                self.waiting.append(job)
                self.in_flight += 1
            else:  # latest_only, every slot taken by frames the model ran or runs
                self.free.append(slot)
                self.dropped += 1
                return False
            self.changed.notify_all()
        return True

    def _has_room(self) -> bool:
        return self.in_flight < self.depth

    def collect(self, timeout: float | None) -> Segmented | None:
        with self.changed:
            if not self.changed.wait_for(lambda: self.done or not self.in_flight, timeout) or not self.done:
                return None
            job = self.done.popleft()
        try:
            if job.error is not None:
                raise job.error
            assert job.outputs is not None
            labels = self.segmenter.finish(job.outputs, [job.place])[0]
        finally:
            with self.changed:
                self.in_flight -= 1
                self.changed.notify_all()
        return Segmented(job.tag, labels, job.model_ms)

    def _work(self) -> None:
        buffer = self.preprocessor.buffer
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.waiting or not self.running)
                if not self.running:
                    return
                job = self.waiting.popleft()
            begin = time.perf_counter()
            try:
                job.outputs = self.segmenter.backend.infer(buffer[job.slot : job.slot + 1])
            except BaseException as err:  # noqa: BLE001 - raised again by collect, in the caller's thread
                job.error = err
            job.model_ms = 1000 * (time.perf_counter() - begin)
            with self.changed:
                self.free.append(job.slot)
                self.done.append(job)
                self.changed.notify_all()

    def stop(self) -> None:
        with self.changed:
            self.running = False
            self.changed.notify_all()
        self.thread.join()


def argmax(logits: np.ndarray) -> np.ndarray:
    """Class ids (uint8) of one (C,H,W) logits array, the first class on ties as numpy's argmax.

    numpy's argmax over the strided class axis takes 7.8 ms at 11x360x480; one max and a
    compare per class take 5 ms (2 cores), which matters next to a 40 ms INT8 model.
    """
    best = logits.max(axis=0)
    labels = np.zeros(best.shape, dtype=np.uint8)
    is_best = np.empty(best.shape, dtype=bool)
    for index in range(logits.shape[0] - 1, -1, -1):
        np.equal(logits[index], best, out=is_best)
        np.copyto(labels, index, where=is_best)
    return labels
