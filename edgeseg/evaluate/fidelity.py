"""Fidelity: a deployed model against its reference on a labelled split.

Both are scored against the ground truth; then the model is scored against the reference's own
predictions (every pixel, void included), which isolates what deployment changed from what the
network gets wrong anyway. ``edgeseg eval MODEL --reference REF`` and ``edgeseg export``'s
FP16/INT8 reports both use this. Torch-free (the reference may be a .pt through the runtime).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edgeseg.data import SegmentationData
from edgeseg.evaluate.scoring import check_compatible, predictions
from edgeseg.core.metrics import ConfusionMatrix, SegMetrics
from edgeseg.runtime import Segmenter, visualize


@dataclass
class ReferencePredictions:
    """The reference's labels for each image of a split, kept to compare several models with one pass."""

    labels: list[np.ndarray]
    metrics: SegMetrics
    name: str


@dataclass
class FidelityResult:
    model: str
    reference: str
    model_metrics: SegMetrics
    reference_metrics: SegMetrics
    agreement_metrics: SegMetrics  # the model scored with the reference's predictions as ground truth
    pixel_agreement: float
    num_images: int
    worst: list[tuple[float, int]] = field(default_factory=list)  # (disagreement, image index), worst first
    confusion: np.ndarray | None = None  # the model against the ground truth: pixel counts, rows = ground truth

    def miou_delta(self) -> float:
        return self.model_metrics.miou - self.reference_metrics.miou

    def class_deltas(self) -> np.ndarray:
        return self.model_metrics.iou - self.reference_metrics.iou

    def to_dict(self, class_names: tuple[str, ...]) -> dict:
        deltas = self.class_deltas()
        return {
            "model": self.model,
            "reference": self.reference,
            "num_images": self.num_images,
            "miou": self.model_metrics.miou,
            "reference_miou": self.reference_metrics.miou,
            "miou_delta": self.miou_delta(),
            "class_iou_delta": {name: _none_if_nan(d) for name, d in zip(class_names, deltas)},
            "worst_class_delta": _none_if_nan(np.nanmin(deltas)) if np.isfinite(deltas).any() else None,
            "pixel_agreement": self.pixel_agreement,
            "miou_vs_reference": self.agreement_metrics.miou,
            "model_metrics": self.model_metrics.to_dict(class_names),
            "reference_metrics": self.reference_metrics.to_dict(class_names),
            "most_different_images": [{"index": i, "disagreement": d} for d, i in self.worst],
            **({"confusion_matrix": self.confusion.tolist()} if self.confusion is not None else {}),
        }


def reference_predictions(reference: Segmenter, data: SegmentationData, name: str, limit: int | None = None) -> ReferencePredictions:
    check_compatible(reference, data)
    confusion = ConfusionMatrix(data.spec.num_classes, data.spec.ignore_index)
    labels = []
    for _, predicted, target in predictions(reference, data, limit):
        confusion.update(predicted, target)
        labels.append(predicted)
    return ReferencePredictions(labels, confusion.compute(), name)


def compare_to_reference(
    model: Segmenter, reference: ReferencePredictions, data: SegmentationData, name: str, worst_k: int = 4
) -> FidelityResult:
    check_compatible(model, data)
    spec = data.spec
    against_gt = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    against_ref = ConfusionMatrix(spec.num_classes, None)
    worst: list[tuple[float, int]] = []
    agree = total = 0
    for index, predicted, target in predictions(model, data, len(reference.labels)):
        ref_labels = reference.labels[index]
        against_gt.update(predicted, target)
        against_ref.update(predicted, ref_labels)
        same = int(np.count_nonzero(predicted == ref_labels))
        agree, total = agree + same, total + predicted.size
        _keep_worst(worst, (1.0 - same / predicted.size, index), worst_k)
    return FidelityResult(
        model=name, reference=reference.name, model_metrics=against_gt.compute(), reference_metrics=reference.metrics,
        agreement_metrics=against_ref.compute(), pixel_agreement=agree / max(total, 1), num_images=len(reference.labels),
        worst=sorted(worst, reverse=True), confusion=against_gt.matrix.copy(),
    )  # fmt: skip


def _keep_worst(heap: list[tuple[float, int]], item: tuple[float, int], k: int) -> None:
    if k <= 0:
        return
    if len(heap) < k:
        heapq.heappush(heap, item)
    else:
        heapq.heappushpop(heap, item)


def save_worst_images(
    result: FidelityResult, model: Segmenter, reference: ReferencePredictions, data: SegmentationData, folder: Path
) -> list[Path]:
    """image | reference | model | difference (white where they disagree), one JPEG per worst image."""
    from edgeseg.core.images import write_image

    written = []
    for rank, (index, image, ref_labels, model_labels) in enumerate(_worst_labels(result, model, reference, data)):
        diff = np.where(ref_labels != model_labels, 255, 0).astype(np.uint8)
        panel = visualize.side_by_side(
            image, model.colorize(ref_labels), model.colorize(model_labels), cv2.cvtColor(diff, cv2.COLOR_GRAY2BGR)
        )
        written.append(write_image(folder / f"worst_{rank + 1}_{data.pairs[index][0].stem}.jpg", panel))
    return written


def worst_pictures(result: FidelityResult, model: Segmenter, reference: ReferencePredictions, data: SegmentationData,
                   count: int | None = None) -> list:  # fmt: skip
    """The most different images for a report (edgeseg.report.WorstImage), worst first."""
    from edgeseg.report import worst_image

    pictures = []
    for index, image, ref_labels, model_labels in _worst_labels(result, model, reference, data, count):
        title = f"{Path(result.model).name}: {data.pairs[index][0].stem}"
        pictures.append(worst_image(title, image, ref_labels, model_labels, model.lut_bgr))
    return pictures


def _worst_labels(result: FidelityResult, model: Segmenter, reference: ReferencePredictions, data: SegmentationData,
                  count: int | None = None):  # fmt: skip
    """(index, BGR image, reference labels, model labels) of the worst images, worst first."""
    for _, index in result.worst[:count]:
        image = cv2.cvtColor(data.read_image(index), cv2.COLOR_RGB2BGR)
        ref_labels = reference.labels[index]
        model_labels = cv2.resize(model.segment(image), ref_labels.shape[::-1], interpolation=cv2.INTER_NEAREST)
        yield index, image, ref_labels, model_labels


def format_fidelity(results: list[FidelityResult], class_names: tuple[str, ...]) -> str:
    """One table: per-class IoU delta for each model, then mIoU, delta, agreement and mIoU vs reference."""
    names = [Path(r.model).name for r in results]
    width = max(len("mIoU vs reference"), *(len(c) for c in class_names))
    col = max(10, *(len(n) for n in names))
    header = f"{'':<{width}}  " + "  ".join(f"{n:>{col}}" for n in names)
    lines = [f"fidelity against {results[0].reference} (IoU change per class, points)", header, "-" * len(header)]
    for i, cls in enumerate(class_names):
        lines.append(f"{cls:<{width}}  " + "  ".join(f"{_points(r.class_deltas()[i]):>{col}}" for r in results))
    lines.append("-" * len(header))
    rows = (
        ("mIoU %", lambda r: f"{100 * r.model_metrics.miou:.2f}"),
        ("reference mIoU %", lambda r: f"{100 * r.reference_metrics.miou:.2f}"),
        ("mIoU change", lambda r: _points(r.miou_delta())),
        ("pixel agreement %", lambda r: f"{100 * r.pixel_agreement:.3f}"),
        ("mIoU vs reference %", lambda r: f"{100 * r.agreement_metrics.miou:.2f}"),
    )
    for label, cell in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{cell(r):>{col}}" for r in results))
    return "\n".join(lines)


def _points(delta: float) -> str:
    return "-" if np.isnan(delta) else f"{100 * delta:+.2f}"


def _none_if_nan(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
