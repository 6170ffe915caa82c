"""``edgeseg export``: a checkpoint to an ONNX model that carries its own metadata, with a parity proof.

Everything is written into a hidden folder beside DIR and moved in only when the export and
its parity check succeed, so a failed or interrupted export leaves nothing partial in DIR.
"""

from __future__ import annotations

import hashlib
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from edgeseg.checkpoint import load_model
from edgeseg.commands import prepare_output_dir
from edgeseg.errors import EdgesegError
from edgeseg.meta import ModelMeta
from edgeseg.onnx_meta import meta_properties, write_meta

SUPPORTED_PRECISIONS = ("fp32",)


@dataclass
class ExportResult:
    onnx_path: Path
    parity_path: Path | None
    parity: dict | None


class _ArgmaxHead(torch.nn.Module):
    """Logits -> uint8 class ids inside the graph: C times less to copy off the device."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).argmax(dim=1).to(torch.uint8)


def export_onnx(
    checkpoint: Path,
    out_dir: Path,
    *,
    name: str = "model",
    img_size: tuple[int, int] | None = None,
    batch: int = 1,
    dynamic_batch: bool = False,
    argmax: bool = False,
    opset: int = 17,
    precisions: tuple[str, ...] = ("fp32",),
    verify: bool = True,
    data: str | None = None,
    num_verify: int = 20,
    allow_parity_failure: bool = False,
    exist_ok: bool = False,
) -> ExportResult:
    _check_precisions(precisions)
    model, meta = load_model(checkpoint)
    meta = replace(meta, input_size=_input_size(img_size or meta.input_size))
    if verify and data is None:
        raise EdgesegError("--verify needs real images: pass --data DATA (its val split is used) or --no-verify")
    prepare_output_dir(out_dir, exist_ok, flag="--out")
    staging = out_dir.parent / f".{out_dir.name}.export-partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        onnx_file = staging / f"{name}.fp32.onnx"
        output_kind = "labels" if argmax else "logits"
        _torch_to_onnx(model, meta, onnx_file, batch, dynamic_batch, argmax, opset)
        _finish_onnx(onnx_file, meta_properties(meta, output_kind, "fp32", _sha256(checkpoint)))
        parity = None
        if verify:
            from edgeseg.parity import check_parity

            parity = check_parity(model, meta, onnx_file, data, num_verify, allow_parity_failure, staging / "parity.json")
        return _publish(staging, out_dir, onnx_file.name, parity)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_precisions(precisions: tuple[str, ...]) -> None:
    unknown = [p for p in precisions if p not in ("fp32", "fp16", "int8")]
    if unknown:
        raise EdgesegError(f"--precision {','.join(unknown)}: choose from fp32, fp16, int8")
    missing = [p for p in precisions if p not in SUPPORTED_PRECISIONS]
    if missing:
        raise EdgesegError(f"--precision {','.join(missing)}: not available in this version yet; use --precision fp32")


def _input_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = int(size[0]), int(size[1])
    if height < 32 or width < 32 or height % 8 or width % 8:
        raise EdgesegError(f"--img-size {height} {width}: use multiples of 8, at least 32 (e.g. 360 480)")
    return height, width


def _torch_to_onnx(
    model: torch.nn.Module, meta: ModelMeta, path: Path, batch: int, dynamic: bool, argmax: bool, opset: int
) -> None:
    if batch < 1:
        raise EdgesegError(f"--batch {batch}: must be at least 1")
    network = _ArgmaxHead(model).eval() if argmax else model.eval()
    output = "labels" if argmax else "logits"
    dummy = torch.rand(batch, 3, *meta.input_size)
    axes = {"images": {0: "batch"}, output: {0: "batch"}} if dynamic else None
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deliberate: torch's dynamo exporter cannot emit opset 17.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            network, (dummy,), str(path), input_names=["images"], output_names=[output],
            opset_version=opset, dynamic_axes=axes, do_constant_folding=True, dynamo=False,
        )  # fmt: skip


def _finish_onnx(path: Path, properties: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    modes = [
        attr.s.decode()
        for node in model.graph.node
        if node.op_type == "Resize"
        for attr in node.attribute
        if attr.name == "coordinate_transformation_mode"
    ]
    if any(mode != "align_corners" for mode in modes):
        raise EdgesegError(f"{path.name}: a Resize node lost align_corners ({sorted(set(modes))}); report this export")
    write_meta(model, properties)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _publish(staging: Path, out_dir: Path, onnx_name: str, parity: dict | None) -> ExportResult:
    for item in staging.iterdir():
        item.replace(out_dir / item.name)
    parity_path = out_dir / "parity.json" if parity is not None else None
    return ExportResult(out_dir / onnx_name, parity_path, parity)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()

