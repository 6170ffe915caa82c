"""``--max-miou-drop``: keep the INT8-sensitive layers in float until the drop is within budget.

On a slice of the training split (never the evaluation split), each Conv is left in float on
its own and the mIoU it wins back is measured; then the most sensitive ones are kept in float,
one at a time, until the INT8 model (TensorRT form, the stricter of the two) is within the
budget of the FP32 model on that slice, or ``max_layers`` are kept.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgeseg.data import SegmentationData, resolve_dataset
from edgeseg.evaluate import evaluate
from edgeseg.quantize import quantize_int8
from edgeseg.runtime import Segmenter

SLICE_IMAGES = 12
MAX_LAYERS = 8


def keep_sensitive_layers(
    fp32: Path,
    ranges_path: Path,
    data: str,
    max_drop_points: float,
    already_kept: list[str],
    work_dir: Path,
    slice_images: int = SLICE_IMAGES,
    max_layers: int = MAX_LAYERS,
    max_candidates: int | None = None,
) -> dict:
    dataset = SegmentationData(resolve_dataset(data), "train")
    dataset.pairs = dataset.pairs[-slice_images:]
    with tempfile.TemporaryDirectory(prefix="sensitivity-", dir=work_dir) as scratch:
        score = _Scorer(fp32, ranges_path, dataset, Path(scratch))
        reference = score.model(fp32)
        kept = list(already_kept)
        before = score.int8(kept)
        report = {"slice": f"{dataset.spec.name} train, last {len(dataset)} images", "fp32_miou": reference,
                  "int8_miou_before": before, "budget_points": max_drop_points}  # fmt: skip
        if _drop(reference, before) <= max_drop_points:
            return {**report, "layers": [], "kept_in_float": [], "int8_miou_after": before, "met": True}
        gains = sorted(((score.int8(kept + [node]) - before, node) for node in score.conv_nodes(kept)[:max_candidates]), reverse=True)
        added, after = [], before
        for gain, node in gains[:max_layers]:
            if _drop(reference, after) <= max_drop_points:
                break
            added.append(node)
            after = score.int8(kept + added)
            print(f"  kept {node} in float: +{100 * gain:.2f} alone, INT8 now {100 * after:.2f} % mIoU")
    layers = [{"node": node, "miou_gain_alone": gain} for gain, node in gains]
    met = _drop(reference, after) <= max_drop_points
    return {**report, "layers": layers, "kept_in_float": added, "int8_miou_after": after, "met": met}


def _drop(reference: float, quantized: float) -> float:
    return 100 * (reference - quantized)


class _Scorer:
    def __init__(self, fp32: Path, ranges_path: Path, dataset: SegmentationData, scratch: Path) -> None:
        self.fp32, self.ranges_path, self.dataset, self.scratch = fp32, ranges_path, dataset, scratch

    def model(self, path: Path) -> float:
        with Segmenter.load(path) as segmenter:
            return float(evaluate(segmenter, self.dataset).metrics.miou)

    def int8(self, keep_fp: list[str]) -> float:
        path = quantize_int8(self.fp32, self.ranges_path, self.scratch / "candidate.onnx", "tensorrt", keep_fp)
        return self.model(path)

    def conv_nodes(self, exclude: list[str]) -> list[str]:
        import onnx

        graph = onnx.load(str(self.fp32), load_external_data=False).graph
        return [n.name for n in graph.node if n.op_type == "Conv" and n.name not in exclude]
