"""The ``edgeseg`` command: parses arguments and calls library functions, nothing else.

Heavy modules (torch, the library stages) are imported inside each command so that
``edgeseg --help`` and the torch-free commands start fast and work without torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

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
    img_size: tuple[int, int] = typer.Option((360, 480), "--img-size", help="Network input H W."),
    crop_size: Optional[tuple[int, int]] = typer.Option(None, "--crop-size", help="Training crop H W (default: --img-size)."),
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
    model: Path = typer.Argument(..., help="Model file (.pt)."),
    data: str = typer.Option(..., "--data", help="Dataset: NAME:ROOT, a .toml, or a folder with dataset.toml."),
    split: str = typer.Option("val", "--split"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write metrics as JSON here."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for the confusion-matrix and per-class IoU images (default: beside --json)."),
    backend: str = typer.Option("auto", "--backend"),
    device: str = typer.Option("cpu", "--device"),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N images."),
) -> None:
    """Score a model on a labelled split: mIoU, per-class IoU, pixel and mean accuracy."""
    from edgeseg.commands import run_eval

    run_eval(model, data, split, json_path, plots, backend, device, limit)


@app.command()
def predict(
    model: Path = typer.Argument(..., help="Model file (.pt)."),
    source: str = typer.Argument(..., help="An image, a folder of images, or a glob."),
    out: Path = typer.Option(..., "--out", help="Folder for <stem>.png (class ids) and <stem>_overlay.jpg."),
    alpha: float = typer.Option(0.5, "--alpha", help="Overlay opacity."),
    backend: str = typer.Option("auto", "--backend"),
    device: str = typer.Option("cpu", "--device"),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Write into a non-empty --out folder."),
) -> None:
    """Segment images: class-id PNGs at each image's size and palette overlays."""
    from edgeseg.commands import run_predict

    run_predict(model, source, out, alpha, backend, device, exist_ok)


@app.command("import-seed")
def import_seed(
    checkpoint: Path = typer.Argument(..., help="A bubbliiiing/deeplabv3-plus-pytorch MobileNetV2 .pth."),
    num_classes: int = typer.Option(..., "--num-classes", help="Classes the seed model was trained with."),
    out: Path = typer.Option(..., "--out", help="Where to write the edgeseg .pt."),
    data: Optional[str] = typer.Option(None, "--data", help="Take class names, palette and ignore index from this dataset."),
    img_size: tuple[int, int] = typer.Option((512, 512), "--img-size", help="Input H W (the seed trains at 512 512)."),
    output_stride: int = typer.Option(16, "--output-stride"),
) -> None:
    """Wrap a seed-repository state_dict with its conventions (RGB, x/255, letterbox grey)."""
    from edgeseg.commands import run_import_seed

    run_import_seed(checkpoint, num_classes, out, data, img_size, output_stride)


@app.command("export")
def export_(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) to export."),
    out: Path = typer.Option(..., "--out", help="Folder for <name>.fp32.onnx and parity.json."),
    img_size: Optional[tuple[int, int]] = typer.Option(None, "--img-size", help="Input H W (default: the checkpoint's)."),
    batch: int = typer.Option(1, "--batch", help="Fixed batch size."),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Dynamic batch axis."),
    argmax: bool = typer.Option(False, "--argmax", help="Output uint8 labels (N,H,W) computed in the graph."),
    opset: int = typer.Option(17, "--opset"),
    precision: str = typer.Option("fp32", "--precision", help="Comma-separated precisions (this version: fp32)."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Parity proof against PyTorch (needs --data)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset whose val images the parity proof uses."),
    num_verify: int = typer.Option(20, "--num-verify", help="Images in the parity proof."),
    allow_parity_failure: bool = typer.Option(False, "--allow-parity-failure", help="Keep the export even if parity fails."),
    name: str = typer.Option("model", "--name", help="File name stem."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Write into a non-empty --out folder."),
) -> None:
    """Export a checkpoint to ONNX with its metadata, and prove it matches PyTorch."""
    from edgeseg.export import export_onnx

    result = export_onnx(
        model, out, name=name, img_size=img_size, batch=batch, dynamic_batch=dynamic_batch, argmax=argmax,
        opset=opset, precisions=tuple(p.strip() for p in precision.split(",") if p.strip()), verify=verify,
        data=data, num_verify=num_verify, allow_parity_failure=allow_parity_failure, exist_ok=exist_ok,
    )  # fmt: skip
    typer.echo(f"onnx: {result.onnx_path}")


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
