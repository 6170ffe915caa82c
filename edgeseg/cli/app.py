"""The typer application and what its commands share: help texts, limits, the list splitter."""

from __future__ import annotations

from typing import Optional, Tuple

import typer

from edgeseg import __version__

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


def split_list(value: Optional[str]) -> Optional[Tuple[str, ...]]:
    """"a, b,c" -> ("a", "b", "c"); None stays None."""
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())
