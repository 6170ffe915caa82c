"""``Segmenter``: a model of any kind, with its own pre- and post-processing, on BGR images.

The three stages are public (``prepare``, ``run``, ``finish``) so that ``edgeseg bench`` times
exactly the code every other command runs.

For a stream of frames (``edgeseg run``), ``submit`` and ``collect`` keep the model busy: the
model runs on the Segmenter's own thread while the caller pre-processes the next frame and
post-processes the last one. See ``submit``. With ``streams`` > 1 (``load``), as many copies of the
model each run a frame on their own thread, with the CPU threads shared out among them: more frames
a second on a CPU (no barrier between a layer's threads), each frame no sooner. Frames still come
back in submit order.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.meta import ModelMeta
from edgeseg.runtime.backends import Backend, open_backend
from edgeseg.runtime.labels import argmax, to_labels  # noqa: F401 - argmax: where callers have found it
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
    finished: bool = False  # the model has run on it (or failed)


class Segmenter:
    def __init__(self, backend: Backend, batch_size: int = 1, more_streams: Sequence[Backend] = ()) -> None:
        """``more_streams``: further copies of the model for ``submit``/``collect`` (see ``load``)."""
        if batch_size < 1 or batch_size > backend.max_batch:
            raise EdgesegError(
                f"--batch-size {batch_size}: this model takes batches of 1 to {backend.max_batch}; "
                "re-export it with --dynamic-batch or a larger --batch"
            )
        self.backend = backend
        self.backends = [backend, *more_streams]  # one per stream; the first also serves segment() and run()
        self.meta: ModelMeta = backend.meta
        self.batch_size = batch_size
        self.preprocessor = Preprocessor(self.meta.preprocess, self.meta.input_size, max_batch=batch_size)
        self.lut_bgr = visualize.palette_lut_bgr(self.meta.palette)
        self._stream: _Stream | None = None

    @classmethod
    def load(
        cls,
        path: str | Path,
        backend: str = "auto",
        device: str | None = None,
        batch_size: int = 1,
        streams: int = 1,
        **options: object,
    ) -> "Segmenter":
        """Open a model file. ``streams`` copies of it run the frames of ``submit``/``collect`` at the same
        time; a ``threads`` option is then the total, shared out among them (default: every CPU)."""
        if streams == 1:
            return cls(open_backend(path, backend=backend, device=device, **options), batch_size)
        shares = share_threads(options.pop("threads", None), streams)  # type: ignore[arg-type]
        opened: list[Backend] = []
        try:
            for share in shares:
                opened.append(open_backend(path, backend=backend, device=device, threads=share, **options))
        except BaseException:
            for one in opened:
                one.close()
            raise
        return cls(opened[0], batch_size, opened[1:])

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
        return self.finish(self.run(len(places), for_labels=True), places)

    # --- the stages ------------------------------------------------------------------
    def prepare(self, images: Sequence[np.ndarray]) -> list[Placement]:
        """Pre-process up to batch_size images into the input buffer."""
        return [self.preprocessor(to_bgr8(image), slot) for slot, image in enumerate(images)]

    def run(self, count: int, for_labels: bool = False) -> np.ndarray:
        """The model on the first ``count`` prepared inputs: the file's output, logits (N,C,H,W) or labels
        (N,H,W); ``for_labels``: whatever ``finish`` turns into labels soonest, which may be the logits
        before the model's last upsample (see ``Backend.infer_for_labels``)."""
        batch = self.preprocessor.buffer[:count]
        return self.backend.infer_for_labels(batch) if for_labels else self.backend.infer(batch)

    def finish(self, outputs: np.ndarray, places: Sequence[Placement]) -> list[np.ndarray]:
        """Network outputs (of either kind of ``run``) to labels at each source image's size."""
        size = self.meta.input_size
        return [labels_to_source(to_labels(out, size), place) for out, place in zip(outputs, places)]

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
    def streams(self) -> int:
        """Copies of the model that run a stream's frames at the same time."""
        return len(self.backends)

    @property
    def device(self) -> str:
        """Where the model runs: cpu, cuda, cuda:N."""
        return str(self.backend.device)

    # --- a stream of frames -------------------------------------------------------------
    def start(self, depth: int | None = None) -> None:
        """Start the model's threads (one per stream) for ``submit``/``collect``, with at most ``depth``
        frames in flight (default: one more than the streams).

        ``submit`` starts it too; call ``start`` first from a thread of normal priority, because a
        thread inherits its creator's priority (``edgeseg run`` lowers its own helper threads').
        While the thread runs, ``start`` does nothing; ``stop`` it first to change ``depth``.
        """
        if self._stream is None:
            self._stream = _Stream(self, self.streams + 1 if depth is None else depth)

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
        for backend in self.backends:
            backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Stream:
    """The model's threads (one per stream) and the frames in flight, behind one lock.

    Every frame holds one row of the stream's input buffer from ``submit`` until the model has run
    on it; there are ``depth + 1`` rows, so the submitting thread always finds a free one to
    prepare into (no copy of the input), whatever the model's threads are doing.
    """

    def __init__(self, segmenter: Segmenter, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"depth {depth}: at least 1 frame must be allowed in flight")
        self.segmenter, self.depth = segmenter, depth
        self.preprocessor = Preprocessor(segmenter.meta.preprocess, segmenter.meta.input_size, max_batch=depth + 1)
        self.free = list(range(depth + 1))
        self.waiting: deque[_Job] = deque()  # prepared, no model started: the newest frames in flight
        self.in_order: deque[_Job] = deque()  # every frame in flight (submitted, not collected), oldest first
        self.dropped = 0
        self.running = True
        self.changed = threading.Condition()
        self.threads = [
            threading.Thread(target=self._work, args=(backend,), daemon=True, name=f"edgeseg-model-{index}")
            for index, backend in enumerate(segmenter.backends)
        ]
        for thread in self.threads:
            thread.start()

    @property
    def in_flight(self) -> int:
        return len(self.in_order)

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
            if latest_only and self.waiting:  # no model started the newest frame: this one replaces it
                replaced = self.waiting.pop()
                assert self.in_order[-1] is replaced
                self.free.append(replaced.slot)
                self.waiting.append(job)
                self.in_order[-1] = job
                self.dropped += 1
            elif self._has_room():
                self.waiting.append(job)
                self.in_order.append(job)
            else:  # latest_only, every slot taken by frames the model ran or runs
                self.free.append(slot)
                self.dropped += 1
                return False
            self.changed.notify_all()
        return True

    def _has_room(self) -> bool:
        return len(self.in_order) < self.depth

    def _oldest_finished_or_none(self) -> bool:
        """Results leave in submit order: the oldest frame in flight must be done first."""
        return not self.in_order or self.in_order[0].finished

    def collect(self, timeout: float | None) -> Segmented | None:
        with self.changed:
            if not self.changed.wait_for(self._oldest_finished_or_none, timeout) or not self.in_order:
                return None
            job = self.in_order.popleft()
            self.changed.notify_all()  # room for one more frame
        if job.error is not None:
            raise job.error
        assert job.outputs is not None
        labels = self.segmenter.finish(job.outputs, [job.place])[0]
        return Segmented(job.tag, labels, job.model_ms)

    def _work(self, backend: Backend) -> None:
        buffer = self.preprocessor.buffer
        while True:
            with self.changed:
                self.changed.wait_for(lambda: self.waiting or not self.running)
                if not self.running:
                    return
                job = self.waiting.popleft()
            begin = time.perf_counter()
            try:
                job.outputs = backend.infer_for_labels(buffer[job.slot : job.slot + 1])
            except BaseException as err:  # noqa: BLE001 - raised again by collect, in the caller's thread
                job.error = err
            job.model_ms = 1000 * (time.perf_counter() - begin)
            with self.changed:
                job.finished = True
                self.free.append(job.slot)
                self.changed.notify_all()

    def stop(self) -> None:
        with self.changed:
            self.running = False
            self.changed.notify_all()
        for thread in self.threads:
            thread.join()


def check_streams(streams: int, threads: int | None) -> None:
    if streams < 1:
        raise EdgesegError(f"--streams {streams}: give at least 1 copy of the model")
    if threads is not None and threads < streams:
        raise EdgesegError(f"--streams {streams} with --threads {threads}: give each stream a thread at least")


def share_threads(threads: int | None, streams: int) -> list[int]:
    """CPU threads of each of ``streams`` copies of a model that share ``threads`` (default: every CPU)."""
    total = threads or os.cpu_count() or 1
    check_streams(streams, total)
    return [total // streams + (1 if index < total % streams else 0) for index in range(streams)]
