"""``run_video``: a frame's path from the source through the model to the sinks, each step in its own thread.

- capture thread: reads the source, pre-processes each frame and hands it to the Segmenter
  (``Segmenter.submit``). A live source keeps only the newest frame the model has not started
  (``latest_only``); frames it replaces are dropped and counted, so lag never builds up. A file
  or folder hands every frame over (at most QUEUE_DEPTH frames in flight make it wait), unless
  ``realtime`` paces it at its own frame rate and lets frames drop the way a camera would.
- the Segmenter's model threads: the model alone (the backend releases the GIL while it runs). A
  file or folder on a CPU gets two copies of the model ("streams", ``session.auto_streams``), each
  on half the threads and running its own frame: more frames a second, each one later; a camera gets one.
- drawing thread: ``Segmenter.collect`` (post-processing), overlay, legend and heads-up line;
  the main thread does it when a window is shown (the window belongs to the main thread).
- writer thread: encodes and writes the video files and image folders, and hands each frame to
  the live view (``http://`` sinks, video/live.py), whose own threads serve it to browsers.
With a model on the CPU, the drawing and writer threads, FFmpeg's, and the capture thread of a
file or folder run at a lower priority than the model's (on Linux; a camera's or ``realtime``
capture keeps the normal one, so frames drop on time), OpenCV's own thread pool is off during the
run and FFmpeg decodes on one thread (see threads.py). With a model on a GPU nothing is lowered.
A live source that drops is reopened with backoff. On any way out every sink is closed, so
the recorded file plays.

SIGINT (Ctrl-C), SIGTERM (``docker stop``, systemd) and SIGHUP (a closed terminal) end the run
the way q does: capture stops, the frames already read are dropped, every sink is closed and
the recording is renamed to its final name. The statistics say which signal stopped the run and
``exit_code`` gives the conventional 128 + N (130, 143, 129); 0 for the end of the input, q,
--max-frames or a lost stream.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.core.meta import ModelMeta
from edgeseg.runtime import Segmenter
from edgeseg.runtime.segmenter import Segmented
from edgeseg.video.render import Renderer
from edgeseg.video.sinks import DisplaySink, VideoSink
from edgeseg.video.sources import Frame, VideoSource
from edgeseg.video.stats import RunStats, hud_text
from edgeseg.video.threads import HELPER_NICENESS, StopEvent, Workers, opencv_threads, stop_on_signals

END = None  # queue sentinel: no more frames
QUEUE_DEPTH = 4  # frames in flight in the Segmenter, and frames drawn and waiting for the writer
POLL_S = 0.05


@dataclass
class RunOptions:
    """How a run goes, besides its source, model and outputs: ``edgeseg run``'s options, with its defaults.
    ``run_session`` opens the model, the source and the outputs with the first three groups; ``run_video``
    draws and loops with the last two."""

    # the model
    backend: str = "auto"
    device: str | None = "cpu"
    threads: int | None = None  # the backend's CPU threads, shared among the streams
    streams: int | None = None  # copies of the model running frames at once (Segmenter.load); None: auto_streams
    spin: bool = False  # False lets ONNX Runtime's idle threads sleep: those moments go to the helpers (benchmarks/video_fps.py)
    # the source (SourceOptions)
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    loop: bool = False
    # the outputs
    exist_ok: bool = False  # replace an existing video file, or delete a folder's old frame_*.png first
    segment_seconds: float | None = None  # cut video files into files of this length (NAME_0000.mp4, ...)
    stats_json: Path | None = None  # the report, written here too
    # drawing (Renderer)
    mode: str = "overlay"
    alpha: float = 0.5
    legend: bool = True
    hud: bool = True
    ignore_classes: Sequence[str] = ()
    # the loop
    realtime: bool = False  # pace a file or folder at its frame rate, dropping frames like a camera
    max_frames: int | None = None
    reconnect_attempts: int = 5  # for a live source that drops
    on_frame: Callable[[RunStats], None] | None = None  # called in the writer thread after each frame is written


def renderer_for(meta: ModelMeta, options: RunOptions) -> Renderer:
    """The run's drawing; a bad mode, alpha or class to leave out is refused here."""
    return Renderer(meta, options.mode, options.alpha, options.legend, options.hud, options.ignore_classes)


def run_video(source: VideoSource, segmenter: Segmenter, sinks: Sequence[VideoSink], options: RunOptions | None = None,
              stop: StopEvent | None = None) -> RunStats:  # fmt: skip
    """Segment ``source`` into ``sinks`` until the input ends, q, ``max_frames``, a lost stream or a signal.

    The frame's path, top to bottom: read and hand to the model, draw, write; each step loops in
    its own thread (see the module's text), so the model never waits for drawing or writing.
    ``stop``: the run's stop event, when the caller set up signals before opening the source and model.
    Every sink is closed on the way out; then a step's error (a write failure) is raised.
    """
    options = options or RunOptions()
    renderer = renderer_for(segmenter.meta, options)
    run = _Run(source, segmenter, sinks, options, stop)
    stats = run.stats

    def read() -> None:  # capture thread
        for frame in run.frames():  # paced with --realtime; a live source that drops is reopened
            run.submit(frame)  # pre-processed here; the model runs it in the Segmenter's own threads

    def draw() -> None:  # drawing thread, or the main thread when a window is shown
        for result in run.results():  # in the order read, post-processed here
            frame: Frame = result.tag  # type: ignore[assignment]
            stats.model_ms.add(result.model_ms)
            image = renderer.render(frame.image, result.labels, hud_text(stats))
            for window in run.windows:
                window.write(image)
            run.hand_over((frame, image, result.labels))
            if any(window.quit for window in run.windows):
                stats.stopped_by = "q"
                return

    def write() -> None:  # writer thread
        for frame, image, labels in run.drawn_frames():
            for sink in run.files:
                sink.write(image)
            stats.done()
            stats.latency_ms.add(1000 * (time.perf_counter() - frame.captured))
            for sink in run.files:
                sink.observe(stats, labels)
            if options.on_frame is not None:
                options.on_frame(stats)

    with stop_on_signals(run.stop), opencv_threads(run.opencv_threads):
        return run.go(read, draw, write)


class _Run:
    """What the steps of one run share (the source, the model, the sinks, the queue from drawing to writing,
    the statistics, the stop event), each step's loop over its frames, and the threads that run the steps."""

    def __init__(self, source: VideoSource, segmenter: Segmenter, sinks: Sequence[VideoSink], options: RunOptions,
                 stop: StopEvent | None = None) -> None:  # fmt: skip
        self.source, self.segmenter, self.sinks, self.options = source, segmenter, list(sinks), options
        self.stats = RunStats()
        self.stop = stop if stop is not None else StopEvent()
        self.windows = [sink for sink in self.sinks if isinstance(sink, DisplaySink)]
        self.files = [sink for sink in self.sinks if not isinstance(sink, DisplaySink)]
        for window in self.windows:
            window.stop = self.stop
        for sink in self.sinks:
            sink.describe(segmenter.meta)
        self.latest_only = source.is_live or options.realtime
        on_cpu = segmenter.device.split(":")[0] == "cpu"  # the helpers share the CPU with the model: they make way for it
        self.niceness = HELPER_NICENESS if on_cpu else 0  # added to the helper threads' nice value
        self.opencv_threads = 0 if on_cpu else None  # OpenCV's own pool: none beside a model on the CPU
        self.captured_all = threading.Event()  # the capture thread has submitted its last frame
        self.drawn: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)  # drawn frames for the writer thread

    def go(self, read: Callable[[], None], draw: Callable[[], None], write: Callable[[], None]) -> RunStats:
        """Run the steps in their threads until the run ends; every sink is closed, then an error is raised."""
        workers = Workers(self.stop, self.niceness)
        self.segmenter.start(QUEUE_DEPTH)  # from this thread, so that the model's thread keeps its priority
        # A source on its own clock (a camera, or --realtime) is read at the normal priority: a starved reader
        # would let frames age in the driver's queue instead of dropping them as a camera does.
        workers.start("capture", lambda: self._capture(read), lowered=not self.latest_only)
        writer = workers.start("writer", write)
        if not self.windows:
            workers.start("drawing", lambda: self._draw(draw))
        try:
            if self.windows:
                workers.run_here(lambda: self._draw(draw))
            while writer.is_alive() and not self.stop.is_set():  # the writer ends after the last frame
                writer.join(POLL_S)
        except KeyboardInterrupt:  # no handler installed (not the main thread)
            self.stop.signal = self.stop.signal or "SIGINT"
        finally:
            self.stop.set()
            workers.join(timeout=10)
            self.segmenter.stop()
            failure = self._close_sinks()
            self.stats.finished = time.perf_counter()
            if self.stop.signal is not None:
                self.stats.stopped_by = self.stop.signal
        if workers.error is not None:
            raise workers.error
        if failure is not None:
            raise failure
        return self.stats

    # --- capture: read, then submit to the model ---------------------------------------------
    def _capture(self, read: Callable[[], None]) -> None:
        try:
            read()
        finally:
            self.captured_all.set()

    def frames(self) -> Iterator[Frame]:
        """The source's frames until the run stops, the input ends or ``max_frames`` are read; paced at the
        source's frame rate with ``realtime``; a live source that drops is reopened."""
        period = 1.0 / self.source.fps if self.options.realtime and not self.source.is_live else 0.0
        next_due = time.perf_counter()
        while not self.stop.is_set():
            if self.options.max_frames is not None and self.stats.frames_in >= self.options.max_frames:
                return
            frame = self.source.read()
            if frame is None:
                if self.source.is_live and self._reconnect():
                    continue
                return
            self.stats.frames_in += 1
            yield frame
            if period:
                next_due += period
                time.sleep(max(0.0, next_due - time.perf_counter()))

    def submit(self, frame: Frame) -> None:
        """Pre-processing runs here, off the model's thread: the model never waits for it."""
        while not self.stop.is_set():
            if self.segmenter.submit(frame.image, frame, timeout=POLL_S, latest_only=self.latest_only):
                break
            if self.latest_only:  # left out: every slot holds a frame the model ran or runs
                break
        self.stats.dropped = self.segmenter.dropped

    def _reconnect(self) -> bool:
        delay, attempts = 0.5, self.options.reconnect_attempts
        for attempt in range(1, attempts + 1):
            print(f"{self.source.uri}: stream lost; reconnecting in {delay:.1f} s ({attempt}/{attempts})", flush=True)
            if self.stop.wait(delay):
                return False
            if self.source.reopen():
                self.stats.reconnects += 1
                print(f"{self.source.uri}: reconnected", flush=True)
                return True
            delay = min(delay * 2, 8.0)
        print(f"{self.source.uri}: gave up after {attempts} attempts; ending the run", flush=True)
        self.stats.stopped_by = "source lost"
        return False

    # --- drawing: post-processing, overlay, legend, heads-up line ---------------------------
    def _draw(self, draw: Callable[[], None]) -> None:
        try:
            draw()
        finally:
            self.hand_over(END)

    def results(self) -> Iterator[Segmented]:
        """The model's results in the order submitted, until the run stops or the last frame read is out."""
        while not self.stop.is_set():
            result = self.segmenter.collect(timeout=POLL_S)
            if result is None:
                if self.captured_all.is_set() and not self.segmenter.in_flight:
                    return
                continue
            yield result

    def hand_over(self, item: tuple[Frame, np.ndarray, np.ndarray] | None) -> None:
        """To the writer thread; waits while it is QUEUE_DEPTH frames behind."""
        while not self.stop.is_set():
            try:
                self.drawn.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    # --- writing: encoding, files, folders, the live view ---------------------------------
    def drawn_frames(self) -> Iterator[tuple[Frame, np.ndarray, np.ndarray]]:
        """(frame, drawn image, labels) as the drawing step hands them over, until its last or the run stops."""
        while not self.stop.is_set():
            try:
                item = self.drawn.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is END:
                return
            yield item

    def _close_sinks(self) -> BaseException | None:
        """Close every sink, even after one fails; returns the first failure (raised after the run's own error)."""
        failure = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as err:  # noqa: BLE001 - one failing sink must not keep the others from finishing
                failure = failure or err
        return failure


__all__ = ["RunOptions", "renderer_for", "run_video"]
