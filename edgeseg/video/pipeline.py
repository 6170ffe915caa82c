"""``edgeseg run``: capture, inference and render/write in their own threads, with bounded queues.

- capture thread: reads the source. A live source (camera, stream) keeps only the newest frame
  in a one-slot mailbox; frames it replaces are dropped and counted, so lag never builds up.
  A file or folder hands every frame over (a bounded queue makes it wait), unless ``realtime``
  paces it at its own frame rate and lets frames drop the way a camera would.
- inference thread: pre-processing and the model (the backend releases the GIL while it runs).
- main thread: post-processing, drawing and the sinks; it also owns the window and Ctrl-C.
A live source that drops is reopened with backoff. On any way out every sink is closed, so
the recorded file plays.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.fileio import write_json
from edgeseg.runtime import Segmenter
from edgeseg.runtime.preprocess import Preprocessor, to_bgr8
from edgeseg.video.render import Renderer
from edgeseg.video.sinks import DisplaySink, VideoSink, open_sink
from edgeseg.video.sources import Frame, VideoSource, open_source

END = None  # queue sentinel: no more frames
QUEUE_DEPTH = 4
POLL_S = 0.05


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
    model_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)  # capture -> written/displayed
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
                "model_latency_ms": _summary(self.model_ms), "capture_to_display_ms": _summary(self.latency_ms)}  # fmt: skip


class _Mailbox:
    """Hands frames from the capture thread to inference: newest-only (live) or every frame (files)."""

    def __init__(self, latest_only: bool, stats: RunStats) -> None:
        self.latest_only, self.stats = latest_only, stats
        self._queue: queue.Queue = queue.Queue(maxsize=1 if latest_only else QUEUE_DEPTH)

    def put(self, item: Frame | None, stop: threading.Event) -> None:
        if self.latest_only:
            try:
                self._queue.get_nowait()
                self.stats.dropped += 1
            except queue.Empty:
                pass
            self._queue.put(item)
            return
        while not stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def get(self, stop: threading.Event) -> Frame | None:
        while not stop.is_set():
            try:
                return self._queue.get(timeout=POLL_S)
            except queue.Empty:
                continue
        return END


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
) -> dict:
    """Segment a video source into the sinks; returns (and prints) the run's statistics.

    ``spin=False`` lets ONNX Runtime's idle threads sleep, which leaves those moments to the
    capture and drawing threads that share the CPU with the model (see benchmarks/video_fps.py).
    """
    if not sinks:
        raise EdgesegError("edgeseg run: no output; pass --out FILE_OR_FOLDER, or leave --show on")
    options = {"spin": spin, **({"threads": threads} if threads else {})}
    with Segmenter.load(model, backend=backend, device=device, **options) as segmenter:
        renderer = Renderer(segmenter.meta, mode, alpha, legend, hud, ignore_classes)
        source = open_source(source_uri, width=width, height=height, fps=fps, loop=loop)
        try:
            outputs = [open_sink(uri, source.fps) for uri in sinks]
            stats = _Run(segmenter, renderer, source, outputs, realtime, max_frames, reconnect_attempts).go()
        finally:
            source.close()
    report = {"source": source_uri, "sinks": list(sinks), **stats.to_dict()}
    print(format_stats(report))
    if stats_json is not None:
        write_json(stats_json, report)
    return report


class _Run:
    def __init__(self, segmenter: Segmenter, renderer: Renderer, source: VideoSource, sinks: list[VideoSink],
                 realtime: bool, max_frames: int | None, reconnect_attempts: int) -> None:  # fmt: skip
        self.segmenter, self.renderer, self.source, self.sinks = segmenter, renderer, source, sinks
        self.realtime, self.max_frames, self.reconnect_attempts = realtime, max_frames, reconnect_attempts
        self.stats = RunStats()
        self.stop = threading.Event()
        self.frames = _Mailbox(source.is_live or realtime, self.stats)
        self.preprocessor = Preprocessor(segmenter.meta.preprocess, segmenter.meta.input_size)
        self.results: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self.error: BaseException | None = None

    def go(self) -> RunStats:
        workers = [threading.Thread(target=self._guard, args=(self._capture,), daemon=True, name="capture"),
                   threading.Thread(target=self._guard, args=(self._infer,), daemon=True, name="inference")]  # fmt: skip
        for worker in workers:
            worker.start()
        try:
            self._render()
        except KeyboardInterrupt:
            self.stats.stopped_by = "Ctrl-C"
        finally:
            self.stop.set()
            for worker in workers:
                worker.join(timeout=10)
            self._close_sinks()
            self.stats.finished = time.perf_counter()
        if self.error is not None:
            raise self.error
        return self.stats

    def _guard(self, body) -> None:
        """Run a worker; an error stops the run and is raised again in the main thread."""
        try:
            body()
        except BaseException as err:  # noqa: BLE001 - handed to the main thread
            self.error = err
            self.stop.set()

    # --- capture thread ------------------------------------------------------------------
    def _capture(self) -> None:
        period = 1.0 / self.source.fps if self.realtime and not self.source.is_live else 0.0
        next_due = time.perf_counter()
        while not self.stop.is_set():
            if self.max_frames is not None and self.stats.frames_in >= self.max_frames:
                break
            frame = self.source.read()
            if frame is None:
                if self.source.is_live and self._reconnect():
                    continue
                break
            self.stats.frames_in += 1
            self.frames.put(self._prepared(frame), self.stop)
            if period:
                next_due += period
                time.sleep(max(0.0, next_due - time.perf_counter()))
        self.frames.put(END, self.stop)

    def _prepared(self, frame: Frame) -> tuple[Frame, np.ndarray, list]:
        """Pre-process here, off the inference thread: the model never waits for it."""
        place = self.preprocessor(to_bgr8(frame.image), 0)
        return frame, self.preprocessor.buffer.copy(), [place]

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

    # --- inference thread ----------------------------------------------------------------
    def _infer(self) -> None:
        while True:
            item = self.frames.get(self.stop)
            if item is END:
                break
            frame, batch, places = item
            begin = time.perf_counter()
            outputs = self.segmenter.backend.infer(batch)
            self.stats.model_ms.append(1000 * (time.perf_counter() - begin))
            self._hand_over((frame, outputs, places))
        self._hand_over(END)

    def _hand_over(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.results.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    # --- main thread: post-processing, drawing, sinks -------------------------------------
    def _render(self) -> None:
        while not self.stop.is_set():
            try:
                item = self.results.get(timeout=POLL_S)
            except queue.Empty:
                continue
            if item is END:
                return
            frame, outputs, places = item
            labels = self.segmenter.finish(outputs, places)[0]
            image = self.renderer.render(frame.image, labels, self._hud_text())
            for sink in self.sinks:
                sink.write(image)
            self.stats.done()
            self.stats.latency_ms.append(1000 * (time.perf_counter() - frame.captured))
            if any(isinstance(s, DisplaySink) and s.quit for s in self.sinks):
                self.stats.stopped_by = "q"
                return

    def _hud_text(self) -> str:
        recent = self.stats.model_ms[-30:]
        latency = self.stats.latency_ms[-30:]
        model = statistics.fmean(recent) if recent else 0.0
        total = statistics.fmean(latency) if latency else 0.0
        return f"{self.stats.fps():.1f} FPS  model {model:.0f} ms  capture-to-display {total:.0f} ms"

    def _close_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as err:  # one failing sink must not keep the others from finishing
                print(f"{sink.uri}: could not be closed cleanly ({err})")


def _summary(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "p50": None, "p95": None}
    return {"mean": statistics.fmean(values), "p50": float(np.percentile(values, 50)), "p95": float(np.percentile(values, 95))}


def format_stats(report: dict) -> str:
    model, latency = report["model_latency_ms"], report["capture_to_display_ms"]

    def ms(summary: dict) -> str:
        if summary["mean"] is None:
            return "-"
        return f"mean {summary['mean']:.1f}, p50 {summary['p50']:.1f}, p95 {summary['p95']:.1f} ms"

    return "\n".join([
        f"frames in {report['frames_in']}, processed {report['processed']}, dropped {report['dropped']}, "
        f"reconnects {report['reconnects']} ({report['stopped_by']})",
        f"FPS {report['fps']:.1f}",
        f"model latency       {ms(model)}",
        f"capture to display  {ms(latency)}",
    ])


__all__ = ["RunStats", "format_stats", "run_video"]
