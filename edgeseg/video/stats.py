"""The run's statistics: counts, the frame rate and latencies in fixed memory, the heads-up line and the report.

The statistics keep each per-frame value in fixed memory (``StreamingStats``), so a run of
days does not grow.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from edgeseg.video.threads import STOP_SIGNALS

HUD_WINDOW = 30  # frames averaged in the heads-up line


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


def exit_code(report: dict) -> int:
    """0 for a run that ended by itself or on q, 128 + N for one stopped by signal N."""
    return STOP_SIGNALS.get(report.get("stopped_by", ""), 0)


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


__all__ = ["RunStats", "StreamingStats", "exit_code", "format_stats", "hud_text"]
