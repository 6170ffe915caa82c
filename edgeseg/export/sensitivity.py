"""``--max-miou-drop``: keep the INT8-sensitive layers in float until the drop is within budget.

On a slice of the training split (never the evaluation split):

1. rank: each Conv is left in float on its own, and the INT8 model is scored against the FP32
   model's own predictions on the first few images (mIoU with FP32 as ground truth). That
   measures what quantizing the layer changes, without the noise of ground-truth mIoU on a
   handful of images;
2. keep: the best-ranked layers are kept in float one at a time until the INT8 model's
   ground-truth mIoU on the whole slice is within the budget of FP32's, or ``max_layers`` are kept.

Scored on the TensorRT form (symmetric activations), the stricter of the two INT8 files.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from edgeseg.data import SegmentationData, resolve_dataset
from edgeseg.evaluate.scoring import evaluate
from edgeseg.evaluate.fidelity import compare_to_reference, reference_predictions
from edgeseg.export.quantize import quantize_int8, scratch_dir
from edgeseg.runtime import Segmenter

SLICE_IMAGES = 32
RANKING_IMAGES = 8
MAX_LAYERS = 8


@dataclass(frozen=True)
class SearchLimits:
    """How far the search goes: the images it scores, the layers it ranks and how many it keeps in float."""

    slice_images: int = SLICE_IMAGES  # the last images of the training split, scored against ground truth
    ranking_images: int = RANKING_IMAGES  # the first of those, scored against FP32's predictions to rank layers
    max_layers: int = MAX_LAYERS  # kept in float at most
    max_candidates: int | None = None  # Convs ranked at most (None: every one)


def keep_sensitive_layers(
    fp32: Path,
    ranges_path: Path,
    data: str,
    max_drop_points: float,
    already_kept: list[str],
    work_dir: Path,
    limits: SearchLimits = SearchLimits(),
) -> dict:
    """Keep Convs in float one at a time (on top of ``already_kept``) until INT8's mIoU is within ``max_drop_points``
    of FP32's; returns the ranking, the layers kept and the scores, as export.json records them (``sensitivity``)."""
    dataset = SegmentationData(resolve_dataset(data), "train")
    dataset.pairs = dataset.pairs[-limits.slice_images:]
    ranking_images = limits.ranking_images
    with scratch_dir(Path(work_dir), "sensitivity") as scratch:
        score = _Scorer(fp32, ranges_path, dataset, scratch, ranking_images)
        kept = list(already_kept)
        fp32_miou, before = score.ground_truth(fp32), score.ground_truth(score.int8(kept))
        report = {"slice": f"{dataset.spec.name} train, last {len(dataset)} images ({ranking_images} for ranking)",
                  "fp32_miou": fp32_miou, "int8_miou_before": before, "budget_points": max_drop_points}  # fmt: skip
        if _drop(fp32_miou, before) <= max_drop_points:
            return {**report, "layers": [], "kept_in_float": [], "int8_miou_after": before, "met": True}
        baseline = score.against_fp32(score.int8(kept))
        ranked = sorted(((score.against_fp32(score.int8(kept + [node])) - baseline, node)
                         for node in score.conv_nodes(kept)[:limits.max_candidates]), reverse=True)  # fmt: skip
        added, after = [], before
        for gain, node in ranked[:limits.max_layers]:
            if _drop(fp32_miou, after) <= max_drop_points:
                break
            added.append(node)
            after = score.ground_truth(score.int8(kept + added))
            print(f"  kept {node} in float (+{100 * gain:.2f} mIoU vs FP32 alone): INT8 now {100 * after:.2f} % mIoU")
    layers = [{"node": node, "miou_vs_fp32_gain_alone": gain} for gain, node in ranked]
    met = _drop(fp32_miou, after) <= max_drop_points
    return {**report, "layers": layers, "kept_in_float": added, "int8_miou_after": after, "met": met}


def _drop(reference: float, quantized: float) -> float:
    return 100 * (reference - quantized)


class _Scorer:
    def __init__(self, fp32: Path, ranges_path: Path, dataset: SegmentationData, scratch: Path, ranking_images: int) -> None:
        self.fp32, self.ranges_path, self.dataset, self.scratch = fp32, ranges_path, dataset, scratch
        self.ranking = copy.copy(dataset)
        self.ranking.pairs = dataset.pairs[:ranking_images]
        with Segmenter.load(fp32) as model:
            self.fp32_labels = reference_predictions(model, self.ranking, fp32.name)

    def ground_truth(self, path: Path) -> float:
        with Segmenter.load(path) as segmenter:
            return float(evaluate(segmenter, self.dataset).metrics.miou)

    def against_fp32(self, path: Path) -> float:
        with Segmenter.load(path) as segmenter:
            return float(compare_to_reference(segmenter, self.fp32_labels, self.ranking, path.name, 0).agreement_metrics.miou)

    def int8(self, keep_fp: list[str]) -> Path:
        return quantize_int8(self.fp32, self.ranges_path, self.scratch / "candidate.onnx", "tensorrt", keep_fp)

    def conv_nodes(self, exclude: list[str]) -> list[str]:
        import onnx

        graph = onnx.load(str(self.fp32), load_external_data=False).graph
        return [n.name for n in graph.node if n.op_type == "Conv" and n.name not in exclude]
