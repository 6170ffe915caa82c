"""The workstation's commands: train, calib-data, export, import-seed (they need torch; imported at first use)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import typer

from edgeseg.cli.app import BACKEND_HELP, DEVICE_HELP, EXIST_OK_HELP, MAX_THREADS, app, split_list
from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import check_outputs


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
    from edgeseg.train.trainer import TrainConfig, train as run_training

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


@app.command("calib-data")
def calib_data(
    data: str = typer.Option(..., "--data", help="Dataset: NAME:ROOT, a .toml, or a folder with dataset.toml."),
    out: Path = typer.Option(..., "--out", help="Folder for manifest.json (e.g. calib_data/camvid-train-256)."),
    split: str = typer.Option("train", "--split", help="Split to choose from; never the one you evaluate on."),
    n: int = typer.Option(256, "--n", min=1, help="Images to choose."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Replace an existing manifest."),
) -> None:
    """Choose calibration images covering rare classes; write a manifest (paths and sha256)."""
    from edgeseg.export.calibration import make_calibration_manifest, manifest_file

    check_outputs({"--out": manifest_file(out)}, exist_ok)

    path = make_calibration_manifest(data, split, n, out)
    typer.echo(f"calibration manifest: {path}")


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
    from edgeseg.export.exporter import ExportOptions, export_model
    from edgeseg.export.profiles import load_profile

    flags = {
        "img_size": img_size, "batch": batch, "dynamic_batch": dynamic_batch, "argmax": argmax, "opset": opset,
        "precisions": split_list(precision), "calib": calib, "calib_method": calib_method, "percentile": percentile,
        "calib_images": calib_images, "keep_fp": split_list(keep_fp), "max_miou_drop": max_miou_drop, "engine": engine,
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
    from edgeseg.model.checkpoint import import_seed_with_data

    check_outputs({"--out": out}, exist_ok, inputs={"CHECKPOINT": checkpoint})

    import_seed_with_data(checkpoint, num_classes, out, data, img_size, output_stride)
