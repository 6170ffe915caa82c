"""The ``edgeseg`` command: parses arguments and calls library functions, nothing else.

Heavy modules (torch, the library stages) are imported inside each command so that
``edgeseg --help`` and the torch-free commands start fast and work without torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Tuple

import typer

from edgeseg import __version__
from edgeseg.errors import EdgesegError

app = typer.Typer(
    name="edgeseg",
    help="Train a MobileNetV2-DeepLabv3+, take it to an edge device, and prove it still matches.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """edgeseg: data -> model -> train -> export -> quantize -> build -> runtime -> eval / bench / run."""


@app.command()
def train(
    data: str = typer.Option(..., "--data", help="Dataset: NAME:ROOT (camvid, voc, cityscapes), a .toml, or a folder with dataset.toml."),
    out: Path = typer.Option(..., "--out", help="Run folder for best.pt, last.pt, log.csv, curves.png."),
    img_size: Tuple[int, int] = typer.Option((360, 480), "--img-size", help="Network input H W."),
    crop_size: Optional[Tuple[int, int]] = typer.Option(None, "--crop-size", help="Training crop H W (default: --img-size)."),
    epochs: int = typer.Option(100, "--epochs"),
    batch_size: int = typer.Option(8, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default 0.01 SGD, 5e-4 AdamW)."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (momentum 0.9, nesterov) or adamw."),
    output_stride: int = typer.Option(16, "--output-stride", help="8 or 16."),
    loss: str = typer.Option("ce", "--loss", help="ce, ce+dice or focal."),
    class_weights: str = typer.Option("median-freq", "--class-weights", help="none or median-freq."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (CUDA only)."),
    workers: int = typer.Option(2, "--workers", help="Data-loader worker processes."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a run exactly from its last.pt."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from these weights (checkpoint or ImageNet MobileNetV2 backbone)."),
    seed: int = typer.Option(0, "--seed"),
    val_every: int = typer.Option(1, "--val-every", help="Validate every N epochs (and after the last)."),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", help="Use only the first N training images."),
    val_limit: Optional[int] = typer.Option(None, "--val-limit", help="Validate on only the first N images."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="Stop after this epoch; --resume continues."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Reuse a non-empty --out folder."),
) -> None:
    """Train MobileNetV2-DeepLabv3+ (single process, or under torchrun for DDP)."""
    from edgeseg.train import TrainConfig, train as run_training

    config = TrainConfig(
        data=data, out=str(out), img_size=img_size, crop_size=crop_size, epochs=epochs, batch_size=batch_size,
        lr=lr, optimizer=optimizer, output_stride=output_stride, loss=loss, class_weights=class_weights,
        device=device, amp=amp, workers=workers, resume=str(resume) if resume else None,
        init=str(init) if init else None, seed=seed, val_every=val_every, train_limit=train_limit,
        val_limit=val_limit, stop_after=stop_after, exist_ok=exist_ok,
    )  # fmt: skip
    best = run_training(config)
    typer.echo(f"best model: {best}")


@app.command("eval")
def eval_(
    model: Path = typer.Argument(..., help="Model file (.pt, .onnx, .engine)."),
    data: str = typer.Option(..., "--data", help="Dataset: NAME:ROOT, a .toml, or a folder with dataset.toml."),
    split: str = typer.Option("val", "--split"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write metrics as JSON here."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for the confusion-matrix and per-class IoU images (default: beside --json)."),
    backend: str = typer.Option("auto", "--backend"),
    device: str = typer.Option("cpu", "--device"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N images."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Compare with this reference model (e.g. the .pt it came from): deltas, agreement, worst images."),
    worst: int = typer.Option(4, "--worst", help="With --reference: save this many most-different images side by side."),
) -> None:
    """Score a model on a labelled split: mIoU, per-class IoU, pixel and mean accuracy."""
    from edgeseg.commands import run_eval, run_fidelity

    if reference is not None:
        run_fidelity(model, reference, data, split, json_path, backend, device, limit, worst)
    else:
        run_eval(model, data, split, json_path, plots, backend, device, limit)


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Model file (.pt, .onnx, .engine)."),
    source: str = typer.Argument(..., help="An image, a folder of images, or a glob."),
    out: Path = typer.Option(..., "--out", help="Folder for <stem>.png (class ids) and <stem>_overlay.jpg."),
    alpha: float = typer.Option(0.5, "--alpha", help="Overlay opacity."),
    backend: str = typer.Option("auto", "--backend"),
    device: str = typer.Option("cpu", "--device"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Write into a non-empty --out folder."),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="Also write <stem>_side.jpg: the image beside its colour mask."),
) -> None:
    """Segment images: class-id PNGs at each image's size and palette overlays."""
    from edgeseg.commands import run_predict

    run_predict(model, source, out, alpha, backend, device, exist_ok, side_by_side)


@app.command("import-seed")
def import_seed(
    checkpoint: Path = typer.Argument(..., help="A bubbliiiing/deeplabv3-plus-pytorch MobileNetV2 .pth."),
    num_classes: int = typer.Option(..., "--num-classes", help="Classes the seed model was trained with."),
    out: Path = typer.Option(..., "--out", help="Where to write the edgeseg .pt."),
    data: Optional[str] = typer.Option(None, "--data", help="Take class names, palette and ignore index from this dataset."),
    img_size: Tuple[int, int] = typer.Option((512, 512), "--img-size", help="Input H W (the seed trains at 512 512)."),
    output_stride: int = typer.Option(16, "--output-stride"),
) -> None:
    """Wrap a seed-repository state_dict with its conventions (RGB, x/255, letterbox grey)."""
    from edgeseg.commands import run_import_seed

    run_import_seed(checkpoint, num_classes, out, data, img_size, output_stride)


@app.command("export")
def export_(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) to export."),
    out: Path = typer.Option(..., "--out", help="Folder for the ONNX models, calibration files, engines and reports."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Target profile: a name in export/ (e.g. jetson-orin-nano-int8) or a .toml file; flags override it."),
    img_size: Optional[Tuple[int, int]] = typer.Option(None, "--img-size", help="Input H W (default: the checkpoint's)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Fixed batch size (default 1)."),
    dynamic_batch: Optional[int] = typer.Option(None, "--dynamic-batch", help="Dynamic batch axis up to MAX."),
    argmax: Optional[bool] = typer.Option(None, "--argmax/--logits", help="Output uint8 labels (N,H,W) computed in the graph, or logits."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (default 17)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Comma-separated: fp32, fp16, int8 (default fp32)."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration images: a manifest from `edgeseg calib-data`, or a folder or glob of images."),
    calib_method: Optional[str] = typer.Option(None, "--calib-method", help="percentile (default), entropy or minmax."),
    percentile: Optional[float] = typer.Option(None, "--percentile", help="Percentile of |x| kept by --calib-method percentile (default 99.99)."),
    calib_images: Optional[int] = typer.Option(None, "--calib-images", help="Calibrate on the first N images of --calib (default 64)."),
    keep_fp: Optional[str] = typer.Option(None, "--keep-fp", help="Comma-separated node names or op types kept in floating point."),
    max_miou_drop: Optional[float] = typer.Option(None, "--max-miou-drop", help="Keep the most INT8-sensitive layers in float until INT8 is within D mIoU points of FP32 (on training images)."),
    engine: Optional[bool] = typer.Option(None, "--engine/--no-engine", help="Also build TensorRT engines (needs the trt extra and a GPU)."),
    int8_source: Optional[str] = typer.Option(None, "--int8-source", help="INT8 engine from the Q/DQ ONNX (qdq), the calibration cache (cache), or the ranges set on the network (ranges)."),
    trt_version: Optional[str] = typer.Option(None, "--trt-version", help="TensorRT version of the target, for the calibration cache header (default 10.3.0)."),
    workspace: Optional[int] = typer.Option(None, "--workspace", help="TensorRT workspace limit in MiB (default 1024)."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", help="Build for this DLA core, with GPU fallback."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file, reused across builds."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Parity and fidelity proofs against PyTorch (needs --data)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset whose val images the proofs use."),
    num_verify: int = typer.Option(20, "--num-verify", help="Images in the FP32 parity proof."),
    fidelity_images: Optional[int] = typer.Option(None, "--fidelity-images", help="Images of the val split in the FP16/INT8 fidelity report (default all)."),
    allow_parity_failure: bool = typer.Option(False, "--allow-parity-failure", help="Keep the export even if parity fails."),
    name: str = typer.Option("model", "--name", help="File name stem."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Write into a non-empty --out folder."),
) -> None:
    """Export a checkpoint to ONNX (FP32, FP16, INT8) and TensorRT, proving each matches PyTorch."""
    from edgeseg.export import ExportOptions, export_model
    from edgeseg.profiles import load_profile

    flags = {
        "img_size": img_size, "batch": batch, "dynamic_batch": dynamic_batch, "argmax": argmax, "opset": opset,
        "precisions": _split(precision), "calib": calib, "calib_method": calib_method, "percentile": percentile,
        "calib_images": calib_images, "keep_fp": _split(keep_fp), "max_miou_drop": max_miou_drop, "engine": engine,
        "int8_source": int8_source, "trt_version": trt_version, "workspace_mib": workspace, "dla_core": dla_core,
        "timing_cache": str(timing_cache) if timing_cache else None, "fidelity_images": fidelity_images,
    }  # fmt: skip
    settings = load_profile(profile) if profile else {}
    settings.update({key: value for key, value in flags.items() if value is not None})
    for key in ("precisions", "keep_fp", "img_size"):
        if key in settings:
            settings[key] = tuple(settings[key])
    options = ExportOptions(**settings, verify=verify, data=data, num_verify=num_verify,
                            allow_parity_failure=allow_parity_failure, name=name, exist_ok=exist_ok)  # fmt: skip
    result = export_model(model, out, options)
    typer.echo(f"exported to {out}: " + ", ".join(p.name for p in result.files.values()))


@app.command("calib-data")
def calib_data(
    data: str = typer.Option(..., "--data", help="Dataset: NAME:ROOT, a .toml, or a folder with dataset.toml."),
    out: Path = typer.Option(..., "--out", help="Folder for manifest.json (e.g. calib_data/camvid-train-256)."),
    split: str = typer.Option("train", "--split", help="Split to choose from; never the one you evaluate on."),
    n: int = typer.Option(256, "--n", help="Images to choose."),
) -> None:
    """Choose calibration images covering rare classes; write a manifest (paths and sha256)."""
    from edgeseg.calibration import make_calibration_manifest

    path = make_calibration_manifest(data, split, n, out)
    typer.echo(f"calibration manifest: {path}")


@app.command()
def bench(
    models: List[Path] = typer.Argument(..., help="Models to compare (.pt, .onnx, .engine); ratios are to the first."),
    backend: str = typer.Option("auto", "--backend"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or tensorrt (ONNX Runtime providers), cuda for .pt/.engine."),
    batch_size: int = typer.Option(1, "--batch-size"),
    iters: int = typer.Option(50, "--iters", help="Timed batches per model."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed batches first."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the backend (default: the library's)."),
    img_size: Optional[Tuple[int, int]] = typer.Option(None, "--img-size", help="Source image H W (default: the model's input size)."),
    data: Optional[str] = typer.Option(None, "--data", help="Use real val images of this dataset instead of a synthetic one."),
    model_only: bool = typer.Option(False, "--model-only", help="Time the backend alone, on a prepared input."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Results JSON (default benchmarks/results/bench-<time>.json)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Markdown table (default: beside --json)."),
) -> None:
    """Latency (mean, p50, p90, p99), throughput, per-stage times and peak memory, side by side."""
    from edgeseg.bench import run_bench

    run_bench(models, backend=backend, device=device, batch_size=batch_size, iters=iters, warmup=warmup,
              threads=threads, img_size=img_size, data=data, model_only=model_only, json_path=json_path,
              markdown_path=markdown)  # fmt: skip


@app.command("run")
def run_(
    model: Path = typer.Argument(..., help="Model file (.pt, .onnx, .engine)."),
    camera: Optional[int] = typer.Option(None, "--camera", help="OpenCV camera index."),
    source: Optional[str] = typer.Option(None, "--source", help="/dev/videoN, csi://N, a video file, an image folder or glob, rtsp:// or http:// URL, or a GStreamer pipeline."),
    out: Optional[List[str]] = typer.Option(None, "--out", help="Output: a .mp4/.avi file or a folder; repeat for several."),
    show: Optional[bool] = typer.Option(None, "--show/--no-show", help="Show a window (default: on when there is no --out)."),
    mode: str = typer.Option("overlay", "--mode", help="overlay, mask or side-by-side."),
    alpha: float = typer.Option(0.5, "--alpha", help="Overlay opacity."),
    legend: bool = typer.Option(True, "--legend/--no-legend", help="Draw the classes present."),
    hud: bool = typer.Option(True, "--hud/--no-hud", help="Draw FPS, model latency and capture-to-display latency."),
    ignore_class: Optional[List[str]] = typer.Option(None, "--ignore-class", help="A class name or id not to draw; repeat for several."),
    realtime: bool = typer.Option(False, "--realtime", help="Pace files and folders at their frame rate, dropping frames like a camera."),
    loop: bool = typer.Option(False, "--loop", help="Start a file or folder again at its end."),
    width: Optional[int] = typer.Option(None, "--width"),
    height: Optional[int] = typer.Option(None, "--height"),
    fps: Optional[float] = typer.Option(None, "--fps", help="Frame rate to ask the camera for (and of image folders)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Stop after this many frames."),
    reconnect: int = typer.Option(5, "--reconnect", help="Attempts to reopen a live source that drops."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the run's statistics here."),
    backend: str = typer.Option("auto", "--backend"),
    device: str = typer.Option("cpu", "--device"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the backend."),
) -> None:
    """Live segmentation of a camera, file, folder or stream into a window, video files or folders."""
    from edgeseg.video import run_video

    if (camera is None) == (source is None):
        raise EdgesegError("edgeseg run: pass exactly one of --camera N or --source URI")
    sinks = list(out or [])
    if show or (show is None and not sinks):
        sinks.append("display://")
    run_video(model, str(camera) if camera is not None else source, sinks, backend=backend, device=device,
              threads=threads, mode=mode, alpha=alpha, legend=legend, hud=hud, ignore_classes=ignore_class or (),
              realtime=realtime, loop=loop, width=width, height=height, fps=fps, max_frames=max_frames,
              reconnect_attempts=reconnect, stats_json=json_path)  # fmt: skip


def _split(value: Optional[str]) -> Optional[Tuple[str, ...]]:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def run() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except EdgesegError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
