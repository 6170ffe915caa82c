"""``edgeseg bench``: latency, throughput, per-stage times and memory of deployed models, side by side.

End to end means what every command runs: the Segmenter's pre-processing into its input
buffer, the backend, and the post-processing back to labels at the image's size. Model only
means the backend on a prepared buffer. Torch-free (a .pt model imports torch itself).
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import write_bytes, write_json
from edgeseg.runtime import Segmenter, backend_names
from edgeseg.runtime.segmenter import check_streams, share_threads
from edgeseg.core.sysinfo import TegrastatsSampler, environment, summary

MIN_SIDE, MAX_SIDE = 16, 8192  # --img-size of the synthetic source picture (8192x8192x3 is 192 MiB)


@dataclass
class BenchResult:
    model: str
    backend: str
    device: str
    mode: str  # "end-to-end" or "model-only"
    batch_size: int
    threads: int | None
    iters: int
    latency_ms: dict[str, float]  # per batch: mean, p50, p90, p99
    throughput_fps: float  # images per second
    stages_ms: dict[str, float]  # per batch: preprocess, inference, postprocess (means)
    backend_stages_ms: dict[str, float] | None  # e.g. TensorRT h2d / compute / d2h
    peak_rss_mb: float | None
    power_w: float | None = None
    fps_per_watt: float | None = None
    ratio: float = 1.0  # mean latency / the first row's
    streams: int = 1  # copies of the model running batches at the same time, sharing the threads
    gmacs: float | None = None  # per image, from the model's metadata (export counts them); None: not recorded
    variant: str = ""  # how the backend ran it, beside its name: "amx" (ONNX Runtime's AMX rewrite), "bf16" (OpenVINO)


@dataclass(frozen=True)
class BenchOptions:
    """How each model is run and timed (``edgeseg bench``'s options but the files and the images).

    ``streams``: copies of each model run batches at the same time, each on its own thread with its
    share of ``threads``; throughput counts every copy's images, latency is each batch's own."""

    backend: str = "auto"  # one name, or several comma-separated: one row per backend for each model
    device: str | None = None
    batch_size: int = 1
    iters: int = 50
    warmup: int = 10
    threads: int | None = None
    img_size: tuple[int, int] | None = None  # H W of the synthetic picture (default: the model's input size)
    model_only: bool = False
    streams: int = 1


def benchmark_models(
    models: list[str | Path], options: BenchOptions = BenchOptions(), images: list[np.ndarray] | None = None
) -> list[BenchResult]:
    """One row per model and backend, timed as ``options`` says, on ``images`` (default: a synthetic one)."""
    _check_options(options)
    backends = _backend_list(options.backend)
    results = [_bench_one(Path(m), name, options, images) for m in models for name in backends]
    for result in results:
        result.ratio = result.latency_ms["mean"] / results[0].latency_ms["mean"]
    return results


def _check_options(options: BenchOptions) -> None:
    check_streams(options.streams, options.threads)
    if options.iters < 1 or options.warmup < 0:
        raise EdgesegError(f"--iters {options.iters} / --warmup {options.warmup}: need at least one timed iteration")
    if options.batch_size < 1 or (options.threads is not None and options.threads < 1):
        raise EdgesegError(f"--batch-size {options.batch_size} / --threads {options.threads}: give whole numbers of at least 1")
    size = options.img_size
    if size is not None and not all(MIN_SIDE <= side <= MAX_SIDE for side in size):
        raise EdgesegError(f"--img-size {' '.join(map(str, size))}: give H W from {MIN_SIDE} to {MAX_SIDE}, e.g. 360 480")


def _backend_list(backend: str) -> list[str]:
    """``--backend onnxruntime,openvino``: one row per backend for each model, all names checked before any run."""
    names = [name.strip() for name in backend.split(",") if name.strip()] or ["auto"]
    unknown = [name for name in names if name not in ("auto", *backend_names())]
    if unknown:
        raise EdgesegError(f"--backend {backend}: unknown {', '.join(unknown)}; choose from "
                           f"{', '.join(('auto', *backend_names()))}, comma-separated to compare")  # fmt: skip
    return names


def _bench_one(model: Path, backend: str, options: BenchOptions, images: list[np.ndarray] | None) -> BenchResult:
    _reset_peak_rss()
    batch_size, streams = options.batch_size, options.streams
    shares = share_threads(options.threads, streams) if streams > 1 else [options.threads]
    with ExitStack() as opened:
        copies = [opened.enter_context(Segmenter.load(model, backend=backend, device=options.device, batch_size=batch_size,
                                                      **({"threads": share} if share else {})))
                  for share in shares]  # fmt: skip
        segmenter = copies[0]
        frames = images or [_synthetic_image(options.img_size or segmenter.meta.input_size)]
        batches = [[frames[(i * batch_size + k) % len(frames)] for k in range(batch_size)] for i in range(len(frames))]
        for i in range(options.warmup):
            for copy in copies:
                _one_batch(copy, batches[i % len(batches)], options.model_only)
        with TegrastatsSampler() as power:
            stage_rows, backend_rows, wall_s = _timed_batches(copies, batches, options.iters, options.model_only)
        totals = [sum(row.values()) for row in stage_rows]
        mean_ms = statistics.fmean(totals)
        watts = power.mean_power_w()
        fps = len(totals) * batch_size / wall_s if streams > 1 else 1000 * batch_size / mean_ms
        return BenchResult(
            model=str(model), backend=segmenter.backend.name, device=str(segmenter.backend.device),
            mode="model-only" if options.model_only else "end-to-end", batch_size=batch_size, threads=options.threads,
            iters=options.iters,
            latency_ms={"mean": mean_ms, **{f"p{q}": float(np.percentile(totals, q)) for q in (50, 90, 99)}},
            throughput_fps=fps, stages_ms={k: statistics.fmean(r[k] for r in stage_rows) for k in stage_rows[0]},
            backend_stages_ms={k: statistics.fmean(r[k] for r in backend_rows) for k in backend_rows[0]} if backend_rows else None,
            peak_rss_mb=_peak_rss_mb(), power_w=watts, fps_per_watt=fps / watts if watts else None,
            gmacs=segmenter.meta.macs / 1e9 if segmenter.meta.macs is not None else None, streams=streams,
            variant=segmenter.backend.variant,
        )  # fmt: skip


def _timed_batches(copies: list[Segmenter], batches: list, iters: int, model_only: bool) -> tuple[list, list, float]:
    """Stage times of ``iters`` batches on each copy of the model, the copies in threads of their own at
    the same time; also the backends' own stage times and the wall seconds of it all."""
    stage_rows: list[dict[str, float]] = []
    backend_rows: list[dict[str, float]] = []

    def loop(copy: Segmenter) -> None:
        for i in range(iters):
            stage_rows.append(_one_batch(copy, batches[i % len(batches)], model_only))
            if getattr(copy.backend, "stage_times", None):
                backend_rows.append(dict(copy.backend.stage_times))

    begin = time.perf_counter()
    if len(copies) == 1:
        loop(copies[0])
    else:
        with ThreadPoolExecutor(len(copies)) as pool:
            for done in [pool.submit(loop, copy) for copy in copies]:
                done.result()
    return stage_rows, backend_rows, time.perf_counter() - begin


def _one_batch(segmenter: Segmenter, batch: list[np.ndarray], model_only: bool) -> dict[str, float]:
    """Milliseconds of each stage for one batch. ``model_only`` runs the file's whole graph; end to end
    runs what ``Segmenter.segment`` does (on a CPU, the model may stop before its last upsample)."""
    if model_only:
        begin = time.perf_counter()
        segmenter.run(len(batch))
        return {"inference": 1000 * (time.perf_counter() - begin)}
    t0 = time.perf_counter()
    places = segmenter.prepare(batch)
    t1 = time.perf_counter()
    outputs = segmenter.run(len(places), for_labels=True)
    t2 = time.perf_counter()
    segmenter.finish(outputs, places)
    t3 = time.perf_counter()
    return {"preprocess": 1000 * (t1 - t0), "inference": 1000 * (t2 - t1), "postprocess": 1000 * (t3 - t2)}


def _synthetic_image(size: tuple[int, int]) -> np.ndarray:
    """A deterministic street-like test picture: smooth gradients plus noise, so codecs and argmax do real work."""
    height, width = size
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    base = np.broadcast_to(ramp, (height, width, 3)) * np.array([0.4, 0.7, 1.0], dtype=np.float32)
    return np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM on Linux
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except (ImportError, OSError):
        return None


# --- reporting -------------------------------------------------------------------------
def format_table(results: list[BenchResult]) -> str:
    header = ["model", "backend", "mode", "batch", "GMACs", "mean ms", "p50", "p90", "p99", "img/s", "pre ms", "infer ms",
              "post ms", "peak MB", "ratio"]  # fmt: skip
    rows = [_row(r) for r in results]
    if any(r.variant for r in results):  # a column of its own, only when a backend ran a variant
        header.insert(2, "variant")
        for row, result in zip(rows, results):
            row.insert(2, result.variant or "-")
    if any(r.backend_stages_ms for r in results):
        header.append("device stages ms")
    if any(r.power_w for r in results):
        header += ["W", "img/s/W"]
    widths = [max(len(h), *(len(row[i]) if i < len(row) else 0 for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _row(r: BenchResult) -> list[str]:
    stages = r.stages_ms
    mode = f"{r.mode}, {r.streams} streams" if r.streams > 1 else r.mode
    row = [Path(r.model).name, r.backend, mode, str(r.batch_size),
           "-" if r.gmacs is None else f"{r.gmacs:.2f}", f"{r.latency_ms['mean']:.1f}",
           f"{r.latency_ms['p50']:.1f}", f"{r.latency_ms['p90']:.1f}", f"{r.latency_ms['p99']:.1f}",
           f"{r.throughput_fps:.1f}", _ms(stages.get("preprocess")), _ms(stages.get("inference")),
           _ms(stages.get("postprocess")), f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb else "-", f"{r.ratio:.2f}x"]  # fmt: skip
    if r.backend_stages_ms:
        row.append(" ".join(f"{k} {v:.1f}" for k, v in r.backend_stages_ms.items()))
    if r.power_w:
        row += [f"{r.power_w:.1f}", f"{r.fps_per_watt:.2f}"]
    return row


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def save_results(results: list[BenchResult], env: dict[str, Any], json_path: Path, markdown_path: Path | None) -> None:
    write_json(json_path, {"environment": env, "results": [asdict(r) for r in results]})
    if markdown_path is not None:
        text = f"Environment: {summary(env)}\n\n```\n{format_table(results)}\n```\n"
        write_bytes(markdown_path, text.encode())


def run_bench(
    models: list[Path],
    options: BenchOptions = BenchOptions(),
    *,
    data: str | None = None,
    num_images: int = 8,
    json_path: Path | None = None,
    markdown_path: Path | None = None,
) -> list[BenchResult]:
    """``edgeseg bench``: print the table and the environment, save JSON and markdown; ``data``: time the
    first ``num_images`` val images of that dataset instead of a synthetic picture."""
    images = _dataset_images(data, num_images) if data else None
    results = benchmark_models(models, options, images)
    env = environment(options.threads)
    print(f"environment: {summary(env)}")
    print(format_table(results))
    json_path, markdown_path = results_paths(models, json_path, markdown_path)
    save_results(results, env, json_path, markdown_path)
    print(f"results: {json_path}, {markdown_path}")
    return results


def results_paths(models: list[Path], json_path: Path | None, markdown_path: Path | None) -> tuple[Path, Path]:
    """--json, by default ``bench-<time>.json`` beside the first model (in its bundle, wherever the user
    stands), and --markdown, by default beside --json."""
    json_path = json_path or Path(models[0]).parent / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    return json_path, markdown_path or json_path.with_suffix(".md")


def _dataset_images(data: str, count: int) -> list[np.ndarray]:
    import cv2

    from edgeseg.data import SegmentationData, resolve_dataset

    dataset = SegmentationData(resolve_dataset(data), "val", check=False)
    return [cv2.cvtColor(dataset.read_image(i), cv2.COLOR_RGB2BGR) for i in range(min(count, len(dataset)))]
