"""The parity proof: an exported model against the PyTorch model it came from, on real images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import write_json
from edgeseg.core.meta import ModelMeta
from edgeseg.runtime import Segmenter
from edgeseg.runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from edgeseg.model.torch_backend import TorchBackend

MIN_ARGMAX_AGREEMENT = 0.999


def check_parity(
    model: torch.nn.Module,
    meta: ModelMeta,
    onnx_path: Path,
    data: str,
    num_images: int,
    allow_failure: bool,
    report_path: Path,
    split: str = "val",
) -> dict:
    """Compare ONNX Runtime with PyTorch on the first ``num_images`` of DATA's ``split``; write the report."""
    from edgeseg.data import SegmentationData, resolve_dataset

    dataset = SegmentationData(resolve_dataset(data), split)
    images = [cv2.cvtColor(dataset.read_image(i), cv2.COLOR_RGB2BGR) for i in range(min(num_images, len(dataset)))]
    reference = Segmenter(TorchBackend(model, meta, "cpu"))
    with Segmenter(OnnxRuntimeBackend.load(onnx_path)) as exported:
        report = compare(reference, exported, images)
    report.update(source=f"{data} {split}, first {len(images)} images", onnx=onnx_path.name,
                  threshold_argmax_agreement=MIN_ARGMAX_AGREEMENT, override_used=allow_failure)  # fmt: skip
    report["passed"] = report["argmax_agreement"] >= MIN_ARGMAX_AGREEMENT
    write_json(report_path, report)
    print(format_parity(report))
    if not report["passed"] and not allow_failure:
        raise EdgesegError(
            f"{onnx_path.name}: argmax agreement with PyTorch is {100 * report['argmax_agreement']:.3f} % "
            f"(< {100 * MIN_ARGMAX_AGREEMENT:.1f} %); nothing was written. Pass --allow-parity-failure to keep it anyway"
        )
    return report


def compare(reference: Segmenter, candidate: Segmenter, images: list[np.ndarray]) -> dict:
    """Network-size outputs of two segmenters on the same images: logit differences and label agreement."""
    max_abs = max_ref = 0.0
    agree = total = 0
    for image in images:
        ref_out, _ = reference.logits(image)
        cand_out, _ = candidate.logits(image)
        ref_labels = ref_out.argmax(axis=0)
        if candidate.backend.output_kind == "labels":
            cand_labels = cand_out
        else:
            cand_labels = cand_out.argmax(axis=0)
            max_abs = max(max_abs, float(np.abs(ref_out - cand_out).max()))
        max_ref = max(max_ref, float(np.abs(ref_out).max()))
        agree += int((ref_labels == cand_labels).sum())
        total += ref_labels.size
    report = {"num_images": len(images), "argmax_agreement": agree / max(total, 1)}
    if candidate.backend.output_kind == "logits":
        report.update(max_abs_logit_diff=max_abs, max_rel_logit_diff=max_abs / max(max_ref, 1e-12), max_abs_logit=max_ref)
    return report


def format_parity(report: dict) -> str:
    lines = [f"parity: {report['onnx']} vs PyTorch on {report['num_images']} images",
             f"  argmax agreement  {100 * report['argmax_agreement']:.4f} %"]  # fmt: skip
    if "max_abs_logit_diff" in report:
        lines.append(f"  max |logit diff|  {report['max_abs_logit_diff']:.3e} ({report['max_rel_logit_diff']:.2e} of max |logit|)")
    lines.append("  " + ("PASSED" if report["passed"] else "FAILED") + (" (override used)" if report["override_used"] else ""))
    return "\n".join(lines)
