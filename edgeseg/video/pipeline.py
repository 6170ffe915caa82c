"""``edgeseg run``: capture, the model, drawing and writing in their own threads, with bounded queues.

- capture thread: reads the source, pre-processes each frame and hands it to the Segmenter
  (``Segmenter.submit``). A live source keeps only the newest frame the model has not started
  (``latest_only``); frames it replaces are dropped and counted, so lag never builds up. A file
  or folder hands every frame over (at most QUEUE_DEPTH frames in flight make it wait), unless
  ``realtime`` paces it at its own frame rate and lets frames drop the way a camera would.
- the Segmenter's model threads: the model alone (the backend releases the GIL while it runs). A
  file or folder on a CPU gets two copies of the model ("streams", ``auto_streams``), each on half
  the threads and running its own frame: more frames a second, each one later; a camera gets one.
- drawing thread: ``Segmenter.collect`` (post-processing), overlay, legend and heads-up line;
  the main thread does it when a window is shown (the window belongs to the main thread).
- writer thread: encodes and writes the video files and image folders, and hands each frame to
  the live view (``http://`` sinks, video/live.py), whose own threads serve it to browsers.
With a model on the CPU, the drawing and writer threads, FFmpeg's, and the capture thread of a
file or folder run at a lower priority than the model's (on Linux; a camera's or ``realtime``
capture keeps the normal one, so frames drop on time), OpenCV's own thread pool is off during the
run and FFmpeg decodes on one thread: the threads of one copy of the model meet at a barrier after
every layer, so a helper that takes a core from one of them delays both; at a lower priority the
helpers use the moments the model leaves idle (benchmarks/video_fps.py). With a model on a GPU
nothing is lowered.
A live source that drops is reopened with backoff. On any way out every sink is closed, so
the recorded file plays.

SIGINT (Ctrl-C), SIGTERM (``docker stop``, systemd) and SIGHUP (a closed terminal) end the run
the way q does: capture stops, the frames already read are dropped, every sink is closed and
the recording is renamed to its final name. The statistics say which signal stopped the run and
``exit_code`` gives the conventional 128 + N (130, 143, 129); 0 for the end of the input, q,
--max-frames or a lost stream. The handlers are installed for the run only, when it runs in the
main thread, and the previous ones restored after.

The statistics keep each per-frame value in fixed memory (``StreamingStats``), so a run of
days does not grow.
"""

from __future__ import annotations

import math
import os
import queue
import signal
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import write_json
from edgeseg.runtime import Segmenter
from edgeseg.runtime.backends import runs_on_cpu
from edgeseg.video.render import Renderer
from edgeseg.video.sinks import DisplaySink, VideoSink, check_output, open_sink
from edgeseg.video.sources import Frame, VideoSource, open_source

END = None  # queue sentinel: no more frames
QUEUE_DEPTH = 4  # frames in flight in the Segmenter, and frames drawn and waiting for the writer
HELPER_NICENESS = 10  # added to the capture, drawing and writer threads' nice value (Linux)
POLL_S = 0.05
HUD_WINDOW = 30  # frames averaged in the heads-up line
T = TypeVar("T")
STOP_SIGNALS = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}  # name -> exit code, 128 + the signal's number


class StreamingStats:
    """Count, mean, min, max and quantiles of a stream of non-negative values, in fixed memory.

    Quantiles come from a histogram with logarithmic buckets (as in DDSketch): a value x in
    [LOW, HIGH] falls in bucket i with gamma^(i-1) < x <= gamma^i, reported as 2 gamma^i / (gamma + 1).
    So every quantile is within RELATIVE_ERROR (0.5 %) of the sample's own quantile (the
    "lower" order statistic, numpy's method="lower"), however many values came in; the mean,
    min and max are exact. The histogram is about 2,300 counters (18 KB), whatever the run length.
    """

    RELATIVE_ERROR = 0.005
    LOW, HIGH = 1e-3, 1e7  # in the caller's unit (ms here: 1 us to 2.8 hours); outside, clamped to min/max

    def __init__(self, recent: int = HUD_WINDOW) -> None:
        self.gamma = (1 + self.RELATIVE_ERROR) / (1 - self.RELATIVE_ERROR)
        self._log_gamma = math.log(self.gamma)
        self._offset = math.ceil(math.log(self.LOW) / self._log_gamma)  # bucket 0 holds values <= LOW
        buckets = math.ceil(math.log(self.HIGH) / self._log_gamma) - self._offset + 2
        self.counts = np.zeros(buckets, np.int64)
        self.count, self.total = 0, 0.0
        self.min, self.max = math.inf, -math.inf
        self.recent: deque[float] = deque(maxlen=recent)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.min, self.max = min(self.min, value), max(self.max, value)
        self.recent.append(value)
        self.counts[self._bucket(value)] += 1

    def _bucket(self, value: float) -> int:
        if value <= self.LOW:
            return 0
        index = math.ceil(math.log(value) / self._log_gamma) - self._offset
        return min(index, len(self.counts) - 1)

    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def recent_mean(self) -> float:
        return statistics.fmean(self.recent) if self.recent else 0.0

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) of every value added, within RELATIVE_ERROR."""
        if not self.count:
            return None
        rank = math.floor(q * (self.count - 1))
        bucket = int(np.searchsorted(np.cumsum(self.counts), rank, side="right"))
        if bucket == 0:
            return self.min
        if bucket == len(self.counts) - 1:
            return self.max
        value = 2 * self.gamma ** (bucket + self._offset) / (self.gamma + 1)
        return min(max(value, self.min), self.max)

    def summary(self) -> dict:
        if not self.count:
            return {"count": 0, "mean": None, "p50": None, "p90": None, "p95": None, "p99": None, "max": None}
        return {"count": self.count, "mean": self.mean(), "p50": self.quantile(0.5), "p90": self.quantile(0.9),
                "p95": self.quantile(0.95), "p99": self.quantile(0.99), "max": self.max}  # fmt: skip


@dataclass
class RunStats:
    frames_in: int = 0
    processed: int = 0
    dropped: int = 0
    reconnects: int = 0
    started: float = field(default_factory=time.perf_counter)
    finished: float | None = None
    first_done: float | None = None  # when the first frame left the pipeline
    last_done: float | None = None
    model_ms: StreamingStats = field(default_factory=StreamingStats)
    latency_ms: StreamingStats = field(default_factory=StreamingStats)  # capture -> written/displayed
    stopped_by: str = "end of input"

    def fps(self) -> float:
        """Frames out per second between the first and the last frame out: the rate the loop sustains,
        without the model's warm-up and the file's finalisation."""
        if self.processed < 2 or self.first_done is None or self.last_done is None:
            return 0.0
        return (self.processed - 1) / (self.last_done - self.first_done)

    def done(self) -> None:
        now = time.perf_counter()
        self.first_done = self.first_done or now
        self.last_done = now
        self.processed += 1

    def to_dict(self) -> dict:
        return {"frames_in": self.frames_in, "processed": self.processed, "dropped": self.dropped,
                "reconnects": self.reconnects, "fps": self.fps(), "stopped_by": self.stopped_by,
                "wall_seconds": (self.finished or time.perf_counter()) - self.started,
                "model_latency_ms": self.model_ms.summary(), "capture_to_display_ms": self.latency_ms.summary(),
                "exit_code": STOP_SIGNALS.get(self.stopped_by, 0)}  # fmt: skip


def run_video(
    model: str | Path,
    source_uri: str,
    sinks: Sequence[str],
    *,
    backend: str = "auto",
    device: str = "cpu",
    threads: int | None = None,
    mode: str = "overlay",
    alpha: float = 0.5,
    legend: bool = True,
    hud: bool = True,
    ignore_classes: Sequence[str] = (),
    realtime: bool = False,
    loop: bool = False,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    max_frames: int | None = None,
    reconnect_attempts: int = 5,
    stats_json: Path | None = None,
    spin: bool = False,
    streams: int | None = None,
    exist_ok: bool = False,
    segment_seconds: float | None = None,
    on_frame: Callable[[RunStats], None] | None = None,
) -> dict:
    """Segment a video source into the sinks; returns (and prints) the run's statistics.

    ``spin=False`` lets ONNX Runtime's idle threads sleep, which leaves those moments to the
    capture and drawing threads that share the CPU with the model (see benchmarks/video_fps.py).
    ``streams``: copies of the model that run frames at the same time (``Segmenter.load``); None: ``auto_streams``.
    ``exist_ok``: replace an existing video file, or delete a folder's old frame_*.png first.
    ``segment_seconds``: cut video files into files of this length (``NAME_0000.mp4``, ...).
    ``on_frame`` is called in the writer thread after each frame is written (benchmarks sample memory there).
    The report's ``exit_code`` says how the run ended (see the module's text); a write failure raises.
    """
    if not sinks:
        raise EdgesegError("edgeseg run: no output; pass --out FILE_OR_FOLDER, or leave --show on")
    if segment_seconds is not None and not segment_seconds > 0:
        raise EdgesegError(f"--segment {segment_seconds}: give the length of each recording file in seconds, e.g. 600")
    for uri in sinks:  # before the model loads: a refused output costs nothing
        check_output(uri, exist_ok, segmented=segment_seconds is not None)
    options = {"spin": spin, **({"threads": threads} if threads else {})}
    on_cpu = runs_on_cpu(model, backend, device)  # the helpers share the CPU with the model: they make way for it
    niceness = HELPER_NICENESS if on_cpu else 0
    decode_threads = 1 if on_cpu else None  # the cores belong to the model
    with _stop_on_signals() as stop, ExitStack() as opened:
        source = _at_priority(niceness, lambda: open_source(source_uri, width=width, height=height, fps=fps, loop=loop,
                                                            decode_threads=decode_threads))  # fmt: skip
        opened.callback(source.close)
        wanted = streams or auto_streams(on_cpu, source.is_live or realtime, threads)
        segmenter = opened.enter_context(Segmenter.load(model, backend=backend, device=device, streams=wanted, **options))
        renderer = Renderer(segmenter.meta, mode, alpha, legend, hud, ignore_classes)
        segment_frames = max(1, round(segment_seconds * source.fps)) if segment_seconds else None
        outputs = [open_sink(uri, source.fps, exist_ok=exist_ok, segment_frames=segment_frames) for uri in sinks]
        run = _Run(segmenter, renderer, source, outputs, realtime, max_frames, reconnect_attempts, stop, on_frame,
                   niceness)  # fmt: skip
        with _opencv_threads(0 if on_cpu else cv2.getNumThreads()):
            stats = run.go()
    report = {"source": source_uri, "sinks": list(sinks), "streams": segmenter.streams, **stats.to_dict()}
    print(format_stats(report), flush=True)
    if stats_json is not None:
        try:
            write_json(stats_json, report)
        except OSError as err:
            raise EdgesegError(f"--json {stats_json}: cannot be written ({err.strerror}); choose a writable path") from None
    return report


class _StopEvent(threading.Event):
    """Set when the run must stop; ``signal`` names the signal that set it, if one did."""

    signal: str | None = None


def auto_streams(on_cpu: bool, paced: bool, threads: int | None) -> int:
    """Copies of the model for a run that leaves --streams out: 2 on a CPU with 2 threads or more, for a
    file or folder read as fast as it goes; 1 for a camera, a network stream or --realtime, whose
    frames must each come out soonest, and for a GPU.

    On 2 cores, two copies of one thread each run 4 to 10 % more frames a second than one copy of
    two threads (both INT8 models, benchmarks/video_fps.py): a layer's threads no longer wait for
    each other at its end.
    """
    if not on_cpu or paced or (threads or os.cpu_count() or 1) < 2:
        return 1
    return 2


@contextmanager
def _stop_on_signals() -> Iterator[_StopEvent]:
    """SIGINT, SIGTERM and SIGHUP set the run's stop event instead of ending the process; restored after."""
    stop = _StopEvent()
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield stop
        return

    def handler(number: int, _frame) -> None:
        if stop.signal is None:
            stop.signal = signal.Signals(number).name
        stop.set()

    previous = {}
    for name in STOP_SIGNALS:
        number = getattr(signal, name, None)  # no SIGHUP on Windows
        if number is not None:
            previous[number] = signal.signal(number, handler)
    try:
        yield stop
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


@contextmanager
def _opencv_threads(count: int) -> Iterator[None]:
    """OpenCV's thread pool at ``count`` threads (0: none, each call runs in its caller's thread) for the run only."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def _lower_priority(niceness: int) -> None:
    """Lower the calling thread's priority by ``niceness`` (Linux: a thread is a task with its own nice value).

    Elsewhere ``setpriority`` would take the thread's id for a process id, so it is left alone.
    The threads a library starts from this thread (FFmpeg's encoder) inherit the lower priority.
    """
    if not niceness or not sys.platform.startswith("linux"):
        return
    try:
        thread_id = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread_id, min(19, os.getpriority(os.PRIO_PROCESS, thread_id) + niceness))
    except (OSError, AttributeError):  # a sandbox that forbids it: run at the normal priority
        pass


def _at_priority(niceness: int, call: Callable[[], T]) -> T:
    """``call()`` in a short-lived thread at the helpers' priority: the threads a library starts there
    (FFmpeg's decoder threads, GStreamer's) keep that priority for the run. Its error is raised here."""
    outcome: dict = {}

    def body() -> None:
        _lower_priority(niceness)
        try:
            outcome["value"] = call()
        except BaseException as err:  # noqa: BLE001 - raised again in the calling thread
            outcome["error"] = err

    thread = threading.Thread(target=body, daemon=True, name="open")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def exit_code(report: dict) -> int:
    """0 for a run that ended by itself or on q, 128 + N for one stopped by signal N."""
    return STOP_SIGNALS.get(report.get("stopped_by", ""), 0)


class _Run:
    def __init__(self, segmenter: Segmenter, renderer: Renderer, source: VideoSource, sinks: list[VideoSink],
                 realtime: bool, max_frames: int | None, reconnect_attempts: int, stop: _StopEvent | None = None,
                 on_frame: Callable[[RunStats], None] | None = None, niceness: int = 0) -> None:  # fmt: skip
        self.segmenter, self.renderer, self.source, self.sinks = segmenter, renderer, source, sinks
        self.niceness = niceness  # added to the helper threads' nice value
        self.realtime, self.max_frames, self.reconnect_attempts = realtime, max_frames, reconnect_attempts
        self.stats = RunStats()
        self.stop = stop if stop is not None else _StopEvent()
        self.on_frame = on_frame
        self.displays = [sink for sink in sinks if isinstance(sink, DisplaySink)]
        self.files = [sink for sink in sinks if not isinstance(sink, DisplaySink)]
        for sink in self.displays:
            sink.stop = self.stop
        for sink in sinks:
            sink.describe(renderer.meta)
        self.latest_only = source.is_live or realtime
        self.captured_all = threading.Event()  # the capture thread has submitted its last frame
        self.drawn: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)  # drawn frames for the writer thread
        self.error: BaseException | None = None

    def go(self) -> RunStats:
        self.segmenter.start(QUEUE_DEPTH)  # from this thread, so that the model's thread keeps its priority
        # A source on its own clock (a camera, or --realtime) is read at the normal priority: a starved reader
        # would let frames age in the driver's queue instead of dropping them as a camera does.
        workers = [self._thread(self._capture, "capture", lowered=not self.latest_only), self._thread(self._write, "writer")]
        if not self.displays:
            workers.append(self._thread(self._draw, "drawing"))
        for worker in workers:
            worker.start()
        try:
            if self.displays:
                self._draw_here()
            while workers[1].is_alive() and not self.stop.is_set():  # the writer ends after the last frame
                workers[1].join(POLL_S)
        except KeyboardInterrupt:  # no handler installed (not the main thread)
            self.stop.signal = self.stop.signal or "SIGINT"
        finally:
            self.stop.set()
            for worker in workers:
                worker.join(timeout=10)
            self.segmenter.stop()
            failure = self._close_sinks()
            self.stats.finished = time.perf_counter()
            if self.stop.signal is not None:
                self.stats.stopped_by = self.stop.signal
        if self.error is not None:
            raise self.error
        if failure is not None:
            raise failure
        return self.stats

    def _thread(self, body: Callable[[], None], name: str, lowered: bool = True) -> threading.Thread:
        return threading.Thread(target=self._guard, args=(body, lowered), daemon=True, name=name)

    def _guard(self, body: Callable[[], None], lowered: bool = True) -> None:
        """Run a worker (at the helpers' priority if ``lowered``); an error stops the run and is raised in the main thread."""
        if lowered:
            _lower_priority(self.niceness)
        try:
            body()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            self.error = self.error or err
            self.stop.set()

    # --- capture thread ------------------------------------------------------------------
    def _capture(self) -> None:
        period = 1.0 / self.source.fps if self.realtime and not self.source.is_live else 0.0
        next_due = time.perf_counter()
        try:
            while not self.stop.is_set():
                if self.max_frames is not None and self.stats.frames_in >= self.max_frames:
                    break
                frame = self.source.read()
                if frame is None:
                    if self.source.is_live and self._reconnect():
                        continue
                    break
                self.stats.frames_in += 1
                self._submit(frame)
                if period:
                    next_due += period
                    time.sleep(max(0.0, next_due - time.perf_counter()))
        finally:
            self.captured_all.set()

    def _submit(self, frame: Frame) -> None:
        """Pre-processing runs here, off the model's thread: the model never waits for it."""
        while not self.stop.is_set():
            if self.segmenter.submit(frame.image, frame, timeout=POLL_S, latest_only=self.latest_only):
                break
            if self.latest_only:  # left out: every slot holds a frame the model ran or runs
                break
        self.stats.dropped = self.segmenter.dropped

    def _reconnect(self) -> bool:
        delay = 0.5
        for attempt in range(1, self.reconnect_attempts + 1):
            print(f"{self.source.uri}: stream lost; reconnecting in {delay:.1f} s ({attempt}/{self.reconnect_attempts})", flush=True)
            if self.stop.wait(delay):
                return False
            if self.source.reopen():
                self.stats.reconnects += 1
                print(f"{self.source.uri}: reconnected", flush=True)
                return True
            delay = min(delay * 2, 8.0)
        print(f"{self.source.uri}: gave up after {self.reconnect_attempts} attempts; ending the run", flush=True)
        self.stats.stopped_by = "source lost"
        return False

    # --- drawing: post-processing, overlay, legend, heads-up line ---------------------------
    def _draw(self) -> None:
        try:
            while not self.stop.is_set():
                result = self.segmenter.collect(timeout=POLL_S)
                if result is None:
                    if self.captured_all.is_set() and not self.segmenter.in_flight:
                        return
                    continue
                frame: Frame = result.tag  # type: ignore[assignment]
                self.stats.model_ms.add(result.model_ms)
                image = self.renderer.render(frame.image, result.labels, hud_text(self.stats))
                for sink in self.displays:
                    sink.write(image)
                self._hand_over((frame, image, result.labels))
                if any(sink.quit for sink in self.displays):
                    self.stats.stopped_by = "q"
                    return
        finally:
            self._hand_over(END)

    def _draw_here(self) -> None:
        """Draw in the main thread (a window is shown); an error stops the run like a worker's."""
        try:
            self._draw()
        except Exception as err:  # noqa: BLE001 - raised after the sinks are closed
            self.error = self.error or err
            self.stop.set()

    def _hand_over(self, item: tuple[Frame, np.ndarray, np.ndarray] | None) -> None:
        while not self.stop.is_set():
            try:
                self.drawn.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    # --- writer thread: encoding and writing -----------------------------------------------
    def _write(self) -> None:
        while not self.stop.is_set():
            try:
                item = self.drawn.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is END:
                return
            frame, image, labels = item
            for sink in self.files:
                sink.write(image)
            self.stats.done()
            self.stats.latency_ms.add(1000 * (time.perf_counter() - frame.captured))
            for sink in self.files:
                sink.observe(self.stats, labels)
            if self.on_frame is not None:
                self.on_frame(self.stats)

    def _close_sinks(self) -> BaseException | None:
        """Close every sink, even after one fails; returns the first failure (raised after the run's own error)."""
        failure = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as err:  # noqa: BLE001 - one failing sink must not keep the others from finishing
                failure = failure or err
        return failure


def hud_text(stats: RunStats) -> str:
    """The heads-up line: FPS, model and capture-to-display latency; "--" for a figure not measured yet (FPS
    needs two frames out, capture-to-display one), never a 0 that reads as a measurement."""
    fps = f"{stats.fps():.1f}" if stats.processed >= 2 else "--"
    model = f"{stats.model_ms.recent_mean():.0f}" if stats.model_ms.count else "--"
    total = f"{stats.latency_ms.recent_mean():.0f}" if stats.latency_ms.count else "--"
    return f"{fps} FPS  model {model} ms  capture-to-display {total} ms"


def format_stats(report: dict) -> str:
    model, latency = report["model_latency_ms"], report["capture_to_display_ms"]

    def ms(summary: dict) -> str:
        if summary["mean"] is None:
            return "-"
        return f"mean {summary['mean']:.1f}, p50 {summary['p50']:.1f}, p90 {summary['p90']:.1f}, p99 {summary['p99']:.1f} ms"

    return "\n".join([
        f"frames in {report['frames_in']}, processed {report['processed']}, dropped {report['dropped']}, "
        f"reconnects {report['reconnects']} ({report['stopped_by']})",
        f"FPS {report['fps']:.1f}" + (f" ({report['streams']} streams of the model)" if report.get("streams", 1) > 1 else ""),
        f"model latency       {ms(model)}",
        f"capture to display  {ms(latency)}",
    ])


__all__ = ["RunStats", "StreamingStats", "exit_code", "format_stats", "hud_text", "run_video"]
