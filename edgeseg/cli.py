"""The ``edgeseg`` command: parses arguments and calls library functions, nothing else.

Heavy modules (torch, the library stages) are imported inside each command so that
``edgeseg --help`` and the torch-free commands start fast and work without torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

import typer

from edgeseg import __version__
from edgeseg.errors import EdgesegError
from edgeseg.fileio import check_outputs

DEVICE_HELP = "cpu, cuda or cuda:N, tensorrt (ONNX Runtime's provider) (default: cuda for a TensorRT engine, else cpu)."
BACKEND_HELP = ("auto (by the file: .pt torch, .onnx onnxruntime, .engine tensorrt), torch, onnxruntime, tensorrt, "
                "or openvino for an .onnx on OpenVINO's CPU plugin. ONNX Runtime's AMX rewrite of INT8 models: "
                "EDGESEG_ORT_AMX=1 (off by default).")  # fmt: skip
MAX_THREADS = 1024  # --threads of every command
EXIST_OK_HELP = "Replace existing output files (checked before any work; without it they are refused)."

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
    img_size: Tuple[int, int] = typer.Option((360, 480), "--img-size", min=32, max=4096, help="Network input H W."),
    crop_size: Optional[Tuple[int, int]] = typer.Option(None, "--crop-size", min=32, max=4096, help="Training crop H W (default: --img-size)."),
    epochs: int = typer.Option(100, "--epochs", min=1, max=100000),
    batch_size: int = typer.Option(8, "--batch-size", min=1, max=4096),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default 0.01 SGD, 5e-4 AdamW)."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="sgd (momentum 0.9, nesterov) or adamw."),
    output_stride: int = typer.Option(16, "--output-stride", help="8 or 16."),
    head: str = typer.Option("seed", "--head", help="seed (the seed repository's ASPP and decoder) or separable (depthwise separable 3x3s: a fraction of the head's MACs)."),
    loss: str = typer.Option("ce", "--loss", help="ce, ce+dice or focal."),
    class_weights: str = typer.Option("median-freq", "--class-weights", help="none, median-freq, sqrt-median-freq or log (ENet's 1/ln(1.02 + p))."),
    train_split: str = typer.Option("train", "--train-split", help="Split to train on: a folder or a [splits] entry of the dataset TOML (e.g. camvid's train-heldout)."),
    val_split: str = typer.Option("val", "--val-split", help="Split that picks best.pt; shares no frame with --train-split (camvid: heldout holds out drive 0006R0)."),
    scale_range: Tuple[float, float] = typer.Option((0.5, 2.0), "--scale-range", help="Random scale MIN MAX of each training image."),
    color_jitter: float = typer.Option(1.0, "--color-jitter", min=0.0, max=3.0, help="Strength of brightness, contrast, saturation and hue jitter; 0 turns it off."),
    ema: float = typer.Option(0.0, "--ema", min=0.0, help="Decay of an exponential moving average of the weights (e.g. 0.999), validated and saved as best.pt; 0: off."),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing", min=0.0, help="Cross-entropy label smoothing, in [0, 1)."),
    ohem: bool = typer.Option(False, "--ohem", help="Online hard example mining: cross-entropy over pixels with p < 0.7, at least the hardest 1/16."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (CUDA only)."),
    workers: int = typer.Option(2, "--workers", min=0, max=256, help="Data-loader worker processes."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a run exactly from its last.pt."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from these weights (checkpoint or ImageNet MobileNetV2 backbone)."),
    seed: int = typer.Option(0, "--seed", min=0),
    val_every: int = typer.Option(1, "--val-every", min=1, help="Validate every N epochs (and after the last)."),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", min=1, help="Use only the first N training images."),
    val_limit: Optional[int] = typer.Option(None, "--val-limit", min=1, help="Validate on only the first N images."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", min=1, help="Stop after this epoch; --resume continues."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Reuse a non-empty --out folder."),
) -> None:
    """Train MobileNetV2-DeepLabv3+ (single process, or under torchrun for DDP)."""
    from edgeseg.train import TrainConfig, train as run_training

    if lr is not None and not 0 < lr <= 10:
        raise EdgesegError(f"--lr {lr}: give a learning rate above 0 (and at most 10), e.g. 0.01")
    config = TrainConfig(
        data=data, out=str(out), img_size=img_size, crop_size=crop_size, epochs=epochs, batch_size=batch_size,
        lr=lr, optimizer=optimizer, output_stride=output_stride, loss=loss, class_weights=class_weights,
        device=device, amp=amp, workers=workers, resume=str(resume) if resume else None,
        init=str(init) if init else None, seed=seed, val_every=val_every, train_limit=train_limit,
        val_limit=val_limit, stop_after=stop_after, exist_ok=exist_ok, train_split=train_split,
        val_split=val_split, scale_range=scale_range, color_jitter=color_jitter, ema=ema,
        label_smoothing=label_smoothing, ohem=ohem, head=head,
    )  # fmt: skip
    check_outputs({"--out": out}, exist_ok or resume is not None, folders={"--out"})
    best = run_training(config)
    typer.echo(f"best model: {best}")


@app.command("eval")
def eval_(
    model: Path = typer.Argument(..., help="Model file (.pt, .onnx, .engine)."),
    data: str = typer.Option(..., "--data", help="Dataset: NAME:ROOT, a .toml, or a folder with dataset.toml."),
    split: str = typer.Option("val", "--split", help="Split, or several comma-separated (e.g. heldout,val): a table and a summary row each; --json and --plots then hold them by split."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write metrics as JSON here."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for the confusion-matrix and per-class IoU images (default: beside --json)."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N images."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Compare with this reference model (e.g. the .pt it came from): deltas, agreement, worst images."),
    worst: int = typer.Option(4, "--worst", min=0, max=1000, help="With --reference: save this many most-different images side by side (in MODEL_NAME.worst/ beside --json)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the scores, per-class IoU, confusion matrix (and with --reference the most different images) as one self-contained .html page."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help=EXIST_OK_HELP),
) -> None:
    """Score a model on a labelled split: mIoU, per-class IoU, pixel and mean accuracy."""
    from edgeseg.commands import eval_outputs, plot_folder, run_eval, run_eval_splits, run_fidelity, worst_folder
    from edgeseg.report import check_report_name

    splits = _split(split) or ()
    if len(splits) > 1 and reference is not None:
        raise EdgesegError(f"--split {split}: --reference compares on one split; run it once per split")
    if reference is not None and plots is not None:
        raise EdgesegError(f"--plots {plots}: --reference draws no plots (its pictures go beside --json); leave --plots out")
    folder = plot_folder(plots, json_path) if reference is None else None
    worst_images = worst_folder(model, json_path, worst) if reference is not None else None
    check_outputs({**eval_outputs(json_path, plots, folder, splits, worst_images), "--report": report}, exist_ok,
                  inputs={"MODEL": model, "--reference": reference}, folders={"--json (worst images)"})  # fmt: skip
    check_report_name(report)
    if len(splits) > 1:
        run_eval_splits(model, data, splits, json_path, folder, backend, device, limit, report_path=report)
    elif reference is not None:
        run_fidelity(model, reference, data, split, json_path, backend, device, limit, worst, report_path=report)
    else:
        run_eval(model, data, split, json_path, folder, backend, device, limit, report_path=report)


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Model file (.pt, .onnx, .engine)."),
    source: str = typer.Argument(..., help="An image, a folder of images, or a glob."),
    out: Path = typer.Option(..., "--out", help="Folder for <stem>.png (class ids) and <stem>_overlay.jpg."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Overlay opacity."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Write into a non-empty --out folder."),
    side_by_side: bool = typer.Option(False, "--side-by-side", help="Also write <stem>_side.jpg: the image beside its colour mask."),
) -> None:
    """Segment images: class-id PNGs at each image's size (palette PNGs: viewers show colours, pixels stay ids) and overlays with a legend."""
    from edgeseg.commands import run_predict
    from edgeseg.images import list_images

    check_outputs({"--out": out}, exist_ok, inputs={"MODEL": model, "SOURCE": list_images(source)}, folders={"--out"})

    run_predict(model, source, out, alpha, backend, device, exist_ok, side_by_side)


@app.command("import-seed")
def import_seed(
    checkpoint: Path = typer.Argument(..., help="A bubbliiiing/deeplabv3-plus-pytorch MobileNetV2 .pth."),
    num_classes: int = typer.Option(..., "--num-classes", min=1, max=255, help="Classes the seed model was trained with."),
    out: Path = typer.Option(..., "--out", help="Where to write the edgeseg .pt."),
    data: Optional[str] = typer.Option(None, "--data", help="Take class names, palette and ignore index from this dataset."),
    img_size: Tuple[int, int] = typer.Option((512, 512), "--img-size", min=32, max=4096, help="Input H W (the seed trains at 512 512)."),
    output_stride: int = typer.Option(16, "--output-stride"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help=EXIST_OK_HELP),
) -> None:
    """Wrap a seed-repository state_dict with its conventions (RGB, x/255, letterbox grey)."""
    from edgeseg.commands import run_import_seed

    check_outputs({"--out": out}, exist_ok, inputs={"CHECKPOINT": checkpoint})

    run_import_seed(checkpoint, num_classes, out, data, img_size, output_stride)


@app.command("export")
def export_(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) to export."),
    out: Path = typer.Option(..., "--out", help="Folder for the ONNX models, calibration files, engines and reports."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Target profile: a name in export/ (e.g. jetson-orin-nano-int8) or a .toml file; flags override it."),
    img_size: Optional[Tuple[int, int]] = typer.Option(None, "--img-size", min=32, max=4096, help="Input H W (default: the checkpoint's)."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, max=1024, help="Fixed batch size (default 1)."),
    dynamic_batch: Optional[int] = typer.Option(None, "--dynamic-batch", min=1, max=1024, help="Dynamic batch axis up to MAX."),
    argmax: Optional[bool] = typer.Option(None, "--argmax/--logits", help="Output uint8 labels (N,H,W) computed in the graph, or logits."),
    opset: Optional[int] = typer.Option(None, "--opset", min=11, max=20, help="ONNX opset, 11 to 20 (default 17)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Comma-separated: fp32, fp16, int8 (default fp32)."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration images: a manifest from `edgeseg calib-data`, or a folder or glob of images."),
    calib_method: Optional[str] = typer.Option(None, "--calib-method", help="percentile (default), entropy or minmax."),
    percentile: Optional[float] = typer.Option(None, "--percentile", min=0.0, max=100.0, help="Percentile of |x| kept by --calib-method percentile (default 99.99)."),
    calib_images: Optional[int] = typer.Option(None, "--calib-images", min=1, help="Calibrate on the first N images of --calib (default 64)."),
    keep_fp: Optional[str] = typer.Option(None, "--keep-fp", help="Comma-separated node names or op types kept in floating point."),
    max_miou_drop: Optional[float] = typer.Option(None, "--max-miou-drop", min=0.0, max=100.0, help="Keep the most INT8-sensitive layers in float until INT8 is within D mIoU points of FP32 (on training images)."),
    equalize: Optional[str] = typer.Option(None, "--equalize", help="Before INT8, on a copy of the FP32 model: off (default), cle (cross-layer equalization), bias (bias correction) or cle+bias."),
    engine: Optional[bool] = typer.Option(None, "--engine/--no-engine", help="Also build TensorRT engines (needs the trt extra and a GPU)."),
    int8_source: Optional[str] = typer.Option(None, "--int8-source", help="INT8 engine from the Q/DQ ONNX (qdq), the calibration cache (cache), or the ranges set on the network (ranges)."),
    trt_version: Optional[str] = typer.Option(None, "--trt-version", help="TensorRT version of the target, for the calibration cache header (default 10.3.0)."),
    workspace: Optional[int] = typer.Option(None, "--workspace", min=1, help="TensorRT workspace limit in MiB (default 1024)."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", min=0, help="Build for this DLA core, with GPU fallback."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file, reused across builds."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Parity and fidelity proofs against PyTorch (needs --data)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset whose images the proofs use."),
    split: str = typer.Option("val", "--split", help="Split of --data for the parity, fidelity and verify images (e.g. camvid's heldout)."),
    num_verify: int = typer.Option(20, "--num-verify", min=1, help="Images in the FP32 parity proof."),
    fidelity_images: Optional[int] = typer.Option(None, "--fidelity-images", min=1, help="Images of --split in the FP16/INT8 fidelity report (default all)."),
    verify_images: int = typer.Option(16, "--verify-images", min=1, max=1000, help="Images of --split in the bundle's verify/ set, with the PyTorch reference's labels (for `edgeseg verify`)."),
    verify_threshold: Optional[List[str]] = typer.Option(None, "--verify-threshold", help="PRECISION=FRACTION: the pixel agreement `edgeseg verify` requires (defaults fp32=0.9999, fp16=0.999, int8=0.98); repeat for several."),
    allow_parity_failure: bool = typer.Option(False, "--allow-parity-failure", help="Keep the export even if parity fails."),
    name: str = typer.Option("model", "--name", help="File name stem."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace an earlier export in --out, whole: none of its files stay."),
) -> None:
    """Export a checkpoint to ONNX (FP32, FP16, INT8) and TensorRT, proving each matches PyTorch."""
    from edgeseg.export import ExportOptions, export_model
    from edgeseg.profiles import load_profile

    flags = {
        "img_size": img_size, "batch": batch, "dynamic_batch": dynamic_batch, "argmax": argmax, "opset": opset,
        "precisions": _split(precision), "calib": calib, "calib_method": calib_method, "percentile": percentile,
        "calib_images": calib_images, "keep_fp": _split(keep_fp), "max_miou_drop": max_miou_drop, "engine": engine,
        "equalize": equalize,
        "int8_source": int8_source, "trt_version": trt_version, "workspace_mib": workspace, "dla_core": dla_core,
        "timing_cache": str(timing_cache) if timing_cache else None, "fidelity_images": fidelity_images,
    }  # fmt: skip
    settings = load_profile(profile) if profile else {}
    settings.update({key: value for key, value in flags.items() if value is not None})
    for key in ("precisions", "keep_fp", "img_size"):
        if isinstance(settings.get(key), (list, tuple)):  # other types stay as given: export names the bad value
            settings[key] = tuple(settings[key])
    options = ExportOptions(**settings, verify=verify, data=data, split=split, num_verify=num_verify,
                            allow_parity_failure=allow_parity_failure, name=name, exist_ok=exist_ok,
                            verify_images=verify_images, verify_thresholds=tuple(verify_threshold or ()))  # fmt: skip
    check_outputs({"--out": out}, exist_ok, inputs={"MODEL": model, "--timing-cache": timing_cache},
                  folders={"--out"}, own_rules={"--out"})  # export judges an existing --out itself: replaced whole
    result = export_model(model, out, options)
    typer.echo(f"exported to {out}: " + ", ".join(p.name for p in result.files.values()))


@app.command("build")
def build_(
    bundle: Path = typer.Argument(..., help="The export bundle (the --out folder of `edgeseg export`), or one .onnx model."),
    precision: Optional[str] = typer.Option(None, "--precision", help="Comma-separated: fp16, int8, fp32 (default: the bundle's build precisions)."),
    int8_source: Optional[str] = typer.Option(None, "--int8-source", help="INT8 from the Q/DQ model (qdq, default), the calibration cache (cache) or the calibrated ranges (ranges); cache and ranges need TensorRT < 11."),
    workspace: Optional[int] = typer.Option(None, "--workspace", min=1, help="Builder scratch memory in MiB (default: the bundle's, else 1024)."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", min=0, help="Build for this DLA core, with GPU fallback (Jetson Xavier / AGX Orin)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file, read and updated (rebuilds get faster)."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, max=1024, help="Fixed batch size."),
    dynamic_batch: Optional[int] = typer.Option(None, "--dynamic-batch", min=1, max=1024, help="Dynamic batch up to MAX (the ONNX needs a dynamic batch axis)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the engines (default: beside the ONNX)."),
    device: Optional[str] = typer.Option(None, "--device", help="The GPU to build on: cuda or cuda:N (default cuda:0)."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace engines (and their manifests) built before."),
) -> None:
    """Build TensorRT engines on this device from a bundle's ONNX models, with a manifest each (needs TensorRT, pycuda)."""
    from edgeseg.build import build_bundle
    from edgeseg.runtime.backends.tensorrt_backend import gpu_index

    engines = build_bundle(bundle, _split(precision), int8_source, workspace, dla_core, timing_cache, batch,
                           dynamic_batch, out, device_index=gpu_index(device), exist_ok=exist_ok)  # fmt: skip
    typer.echo("built: " + ", ".join(str(p) for p in engines))


@app.command("verify")
def verify_(
    model: Path = typer.Argument(..., help="Model file (.onnx, .engine, .pt) to check against the bundle's PyTorch reference labels, or a bundle folder: every model in it (its ONNX models and the engines built there; --backend picks among them)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="The export bundle (the --out folder of `edgeseg export`; default: the model's folder)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here (for a bundle folder: {bundle, passed, models: [one report per model]})."),
    min_agreement: Optional[float] = typer.Option(None, "--min-agreement", min=0.0, max=1.0, help="Required share of pixels equal to the reference (default: the bundle's threshold for the model's precision)."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=MAX_THREADS, help="CPU threads for the backend."),
    report_path: Optional[Path] = typer.Option(None, "--report", help="Write the result, per-class IoU, confusion matrix and least agreeing images (of every model verified) as one self-contained .html page."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help=EXIST_OK_HELP),
) -> None:
    """Check a deployed model (or every model of a bundle) against the PyTorch reference labels in its bundle; exit 1 below the threshold."""
    from edgeseg.report import check_report_name
    from edgeseg.verify import failure_line, run_verify, run_verify_bundle

    check_outputs({"--json": json_path, "--report": report_path}, exist_ok, inputs={"MODEL": model, "--bundle": bundle})
    check_report_name(report_path)
    if model.is_dir():
        if bundle is not None:
            raise EdgesegError(f"--bundle {bundle}: MODEL {model} is a bundle folder already; pass the folder once")
        reports = run_verify_bundle(model, json_path, min_agreement, backend, device, threads, report_path)
    else:
        reports = [run_verify(model, bundle, json_path, min_agreement, backend, device, threads, report_path)]
    failed = [report for report in reports if not report.passed]
    for report in failed:
        typer.echo(failure_line(report), err=True)
    if failed:
        raise typer.Exit(1)


@app.command("calib-data")
def calib_data(
    data: str = typer.Option(..., "--data", help="Dataset: NAME:ROOT, a .toml, or a folder with dataset.toml."),
    out: Path = typer.Option(..., "--out", help="Folder for manifest.json (e.g. calib_data/camvid-train-256)."),
    split: str = typer.Option("train", "--split", help="Split to choose from; never the one you evaluate on."),
    n: int = typer.Option(256, "--n", min=1, help="Images to choose."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace an existing manifest."),
) -> None:
    """Choose calibration images covering rare classes; write a manifest (paths and sha256)."""
    from edgeseg.calibration import make_calibration_manifest, manifest_file

    check_outputs({"--out": manifest_file(out)}, exist_ok)

    path = make_calibration_manifest(data, split, n, out)
    typer.echo(f"calibration manifest: {path}")


@app.command()
def bench(
    models: List[Path] = typer.Argument(..., help="Models to compare (.pt, .onnx, .engine); ratios are to the first."),
    backend: str = typer.Option("auto", "--backend", help="auto, torch, onnxruntime, tensorrt or openvino; comma-separated (e.g. onnxruntime,openvino) for one row per backend and model. ONNX Runtime's AMX rewrite of INT8 models (the variant column): EDGESEG_ORT_AMX=1, off by default."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or tensorrt (ONNX Runtime providers), cuda for .pt/.engine (default: cuda when every model is an engine, else cpu)."),
    batch_size: int = typer.Option(1, "--batch-size", min=1, max=1024),
    iters: int = typer.Option(50, "--iters", min=1, help="Timed batches per model."),
    warmup: int = typer.Option(10, "--warmup", min=0, help="Untimed batches first."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=MAX_THREADS, help="CPU threads for the backend (default: the library's)."),
    img_size: Optional[Tuple[int, int]] = typer.Option(None, "--img-size", min=16, max=8192, help="Source image H W (default: the model's input size)."),
    data: Optional[str] = typer.Option(None, "--data", help="Use real val images of this dataset instead of a synthetic one."),
    model_only: bool = typer.Option(False, "--model-only", help="Time the backend alone, on a prepared input."),
    streams: int = typer.Option(1, "--streams", min=1, max=64, help="Copies of each model running --iters batches each at the same time, sharing --threads: the throughput of `edgeseg run`'s streams."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Results JSON (default: bench-<time>.json beside the first model, e.g. in its bundle)."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Markdown table (default: beside --json)."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help=EXIST_OK_HELP),
) -> None:
    """Latency (mean, p50, p90, p99), throughput, per-stage times and peak memory, side by side."""
    from edgeseg.bench import results_paths, run_bench

    json_path, markdown = results_paths(models, json_path, markdown)
    check_outputs({"--json": json_path, "--markdown": markdown}, exist_ok, inputs={"MODELS": list(models)})
    run_bench(models, backend=backend, device=device, batch_size=batch_size, iters=iters, warmup=warmup,
              threads=threads, img_size=img_size, data=data, model_only=model_only, streams=streams, json_path=json_path,
              markdown_path=markdown)  # fmt: skip


@app.command("run")
def run_(
    model: Path = typer.Argument(..., help="Model file (.pt, .onnx, .engine)."),
    camera: Optional[int] = typer.Option(None, "--camera", min=0, help="OpenCV camera index."),
    source: Optional[str] = typer.Option(None, "--source", help="/dev/videoN, csi://N, a video file, an image folder or glob, rtsp:// or http:// URL, or a GStreamer pipeline."),
    out: Optional[List[str]] = typer.Option(None, "--out", help="Output: a .mp4/.avi file, a folder, or http://HOST:PORT for a live view in a browser (loopback by default; any other address needs the printed token); repeat for several."),
    show: Optional[bool] = typer.Option(None, "--show/--no-show", help="Show a window (default: on when there is no --out)."),
    mode: str = typer.Option("overlay", "--mode", help="overlay, mask or side-by-side."),
    alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="Overlay opacity."),
    legend: bool = typer.Option(True, "--legend/--no-legend", help="Draw the classes present."),
    hud: bool = typer.Option(True, "--hud/--no-hud", help="Draw FPS, model latency and capture-to-display latency."),
    ignore_class: Optional[List[str]] = typer.Option(None, "--ignore-class", help="A class name or id not to draw; repeat for several."),
    realtime: bool = typer.Option(False, "--realtime", help="Pace files and folders at their frame rate, dropping frames like a camera."),
    loop: bool = typer.Option(False, "--loop", help="Start a file or folder again at its end."),
    width: Optional[int] = typer.Option(None, "--width", min=1, max=8192, help="Frame width to ask the source for (files are resized)."),
    height: Optional[int] = typer.Option(None, "--height", min=1, max=8192, help="Frame height to ask the source for (files are resized)."),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.1, max=1000.0, help="Frame rate to ask the camera for (and of image folders)."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after this many frames."),
    reconnect: int = typer.Option(5, "--reconnect", min=0, max=1000, help="Attempts to reopen a live source that drops."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the run's statistics here."),
    backend: str = typer.Option("auto", "--backend", help=BACKEND_HELP),
    device: Optional[str] = typer.Option(None, "--device", help=DEVICE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=MAX_THREADS, help="CPU threads for the backend."),
    streams: Optional[int] = typer.Option(None, "--streams", min=1, max=64, help="Copies of the model running frames at once, sharing --threads: more FPS, each frame later. Default: 2 for a file or folder on a CPU, else 1."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace an existing --out video (when the new one is finished) or --json; delete an --out folder's old frame_*.png first."),
    segment: Optional[float] = typer.Option(None, "--segment", min=1.0, max=86400.0, help="Cut video --out files into files of this many seconds (NAME_0000.mp4, ...): flat memory on recordings of days."),
) -> None:
    """Live segmentation of a camera, file, folder or stream into a window, video files, folders or a browser.

    SIGINT, SIGTERM and SIGHUP end it like q: every recording is closed under its final name.
    Exit code: 0 at the end of the input, on q or --max-frames; 130 SIGINT, 143 SIGTERM, 129 SIGHUP;
    2 for an error (a write failure included: then no file is left under the output's name).
    """
    from edgeseg.video import exit_code, run_video

    if (camera is None) == (source is None):
        raise EdgesegError("edgeseg run: pass exactly one of --camera N or --source URI")
    sinks = list(out or [])
    check_outputs({"--out": sinks, "--json": json_path}, exist_ok, inputs={"MODEL": model, "--source": source},
                  own_rules={"--out"})  # the sinks judge an existing --out themselves (segments, frame folders)
    if show or (show is None and not sinks):
        sinks.append("display://")
    report = run_video(model, str(camera) if camera is not None else source, sinks, backend=backend, device=device,
                       threads=threads, streams=streams, mode=mode, alpha=alpha, legend=legend, hud=hud, ignore_classes=ignore_class or (),
                       realtime=realtime, loop=loop, width=width, height=height, fps=fps, max_frames=max_frames,
                       reconnect_attempts=reconnect, stats_json=json_path, exist_ok=exist_ok, segment_seconds=segment)  # fmt: skip
    code = exit_code(report)
    if code and code != 130:  # 130 (SIGINT): the entry point says "interrupted" itself
        typer.echo(f"interrupted ({report['stopped_by']})", err=True)
    if code:
        raise typer.Exit(code)


@app.command()
def doctor(
    for_: Optional[str] = typer.Option(None, "--for", help="Exit 1 unless this machine can run it: trt, ort, cpu or camera (comma-separated)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write every fact found here as JSON."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help=EXIST_OK_HELP),
) -> None:
    """What this machine can run: Python, numpy, OpenCV, ONNX Runtime, TensorRT, GPU, DLA, Jetson, cameras."""
    from edgeseg.doctor import run_doctor

    check_outputs({"--json": json_path}, exist_ok)

    code = run_doctor(for_, json_path)
    if code:
        raise typer.Exit(code)


def _split(value: Optional[str]) -> Optional[Tuple[str, ...]]:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def _main() -> None:
    """``app`` outside click's standalone mode, so that edgeseg decides what the user sees.

    Standalone, typer turns Ctrl-C into a silent exit 130 (older click: "Aborted!", exit 1)
    before ``run`` can say so, and prints usage errors as a multi-line panel.
    """
    click_error: Any = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    try:
        code = app(standalone_mode=False)
    except typer.Abort as err:
        if isinstance(err.__cause__ or err.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        typer.echo("Aborted!", err=True)
        sys.exit(1)
    except click_error as err:  # bad or missing options and arguments: one line, like edgeseg's own errors
        context = getattr(err, "ctx", None)
        if type(err).__name__ == "NoArgsIsHelpError":
            err.show()  # the help text, as click shows it
        else:
            message = " ".join((_given(err) or err.format_message()).split()).rstrip(".")
            where = f"; see '{context.command_path} --help'" if context is not None else ""
            typer.echo(f"error: {message}{where}", err=True)
        sys.exit(err.exit_code)
    if code == 130:  # typer's own answer to KeyboardInterrupt, and `run`'s after SIGINT: both are "interrupted"
        raise KeyboardInterrupt
    sys.exit(code if isinstance(code, int) else 0)


def _given(err: Any) -> Optional[str]:
    """"--iters 0: <what is wrong>" for a bad option value, in edgeseg's style (click's range
    messages leave the value out); None when the option is not found as typed."""
    param, args = getattr(err, "param", None), sys.argv[1:]
    if param is None or not getattr(err, "message", ""):
        return None
    for opt in getattr(param, "opts", ()):
        for index, arg in enumerate(args):
            if arg == opt:
                value = " ".join(args[index + 1 : index + 1 + max(1, param.nargs)])
            elif arg.startswith(opt + "="):
                value = arg.split("=", 1)[1]
            else:
                continue
            return f"{opt} {value}: {err.message}" if opt.startswith("-") else None
    return None


def run() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        _main()
    except EdgesegError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except ModuleNotFoundError as err:
        hint = _missing_module_hint((err.name or "").split(".")[0])
        if hint is None:
            raise
        typer.echo(f"error: {hint}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


def _missing_module_hint(module: str) -> Optional[str]:
    """The one-line fix for an optional module that is missing at first use; None for any other module."""
    if module == "cv2":
        return ("OpenCV (cv2) is not installed; pip install 'edgeseg[opencv]' — on a Jetson use JetPack's own "
                "OpenCV: make the venv with --system-site-packages")  # fmt: skip
    if module in ("torch", "onnx", "onnxslim", "matplotlib"):
        hint = f"{module} is not installed; training, export and .pt models need it: pip install 'edgeseg[train]'"
        if sys.version_info < (3, 9):  # PyTorch 2.5 and newer need Python 3.9
            hint += f" (Python {sys.version_info[0]}.{sys.version_info[1]} gets PyTorch 2.4 at most; on a Jetson, NVIDIA's wheel for your JetPack)"
        return hint
    if module == "tomli":
        return "tomli is not installed; Python before 3.11 reads TOML with it: pip install 'tomli>=1.1'"
    return None
