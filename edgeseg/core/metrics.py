"""Segmentation metrics from a streaming confusion matrix (numpy only).

Rows are ground truth, columns are predictions. Predictions outside ``[0, num_classes)``
land in a hidden extra column: they count as errors against their ground-truth class
but never show up as a class of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class SegMetrics:
    iou: np.ndarray  # per class; NaN where the class is absent from both gt and prediction
    accuracy: np.ndarray  # per-class recall; NaN where the class is absent from gt
    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    num_pixels: int
    gt_pixels: np.ndarray  # int64 per class: scored ground-truth pixels

    def to_dict(self, class_names: Sequence[str]) -> dict:
        """JSON-ready summary; fractions in [0, 1], NaN written as None."""
        _check_names(class_names, len(self.iou))
        per_class = {
            str(name): {
                "iou": _finite_or_none(self.iou[i]),
                "accuracy": _finite_or_none(self.accuracy[i]),
                "gt_pixels": int(self.gt_pixels[i]),
            }
            for i, name in enumerate(class_names)
        }
        return {
            "miou": _finite_or_none(self.miou),
            "pixel_accuracy": _finite_or_none(self.pixel_accuracy),
            "mean_accuracy": _finite_or_none(self.mean_accuracy),
            "num_pixels": int(self.num_pixels),
            "per_class": per_class,
        }


class ConfusionMatrix:
    def __init__(self, num_classes: int, ignore_index: int | None) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        # Extra last column: predictions outside [0, num_classes).
        self._counts = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)
        # Reused index buffer: on big images, page-faulting a fresh array each call
        # costs more than the arithmetic itself.
        self._scratch = np.empty(0, dtype=np.intp)

    @property
    def matrix(self) -> np.ndarray:
        """(num_classes, num_classes) int64 counts, rows = ground truth, cols = prediction."""
        return self._counts[:, : self.num_classes]

    @property
    def invalid_predictions(self) -> np.ndarray:
        """Per ground-truth class: pixels predicted with a label outside [0, num_classes)."""
        return self._counts[:, self.num_classes]

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        pred, target = np.asarray(pred), np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
        _check_integer("prediction", pred)
        _check_integer("target", target)
        n = self.num_classes
        pred, target = pred.reshape(-1), target.reshape(-1)
        ignored = None if self.ignore_index is None else target == self.ignore_index
        self._check_target_range(target, ignored)
        # Flat index row * (n + 1) + col over an (n + 1) x (n + 1) grid; row n holds
        # ignored pixels and is dropped, column n holds out-of-range predictions.
        index = self._index_buffer(target.size)
        np.multiply(target, n + 1, out=index, dtype=np.intp, casting="unsafe")
        if ignored is not None:
            np.copyto(index, n * (n + 1), where=ignored)
        np.add(index, self._valid_columns(pred), out=index, dtype=np.intp, casting="unsafe")
        counts = np.bincount(index, minlength=(n + 1) * (n + 1))
        self._counts += counts.reshape(n + 1, n + 1)[:n]

    def _index_buffer(self, size: int) -> np.ndarray:
        if self._scratch.size < size:
            self._scratch = np.empty(size, dtype=np.intp)
        return self._scratch[:size]

    def _valid_columns(self, pred: np.ndarray) -> np.ndarray:
        """Predictions with every label outside [0, num_classes) replaced by num_classes."""
        n = self.num_classes
        if pred.size == 0 or (pred.min() >= 0 and pred.max() < n):
            return pred
        # Unsigned view makes negatives huge, so one minimum() catches both ends.
        columns = pred.astype(np.int64).view(np.uint64)
        np.minimum(columns, np.uint64(n), out=columns)
        return columns.view(np.int64)

    def _check_target_range(self, target: np.ndarray, ignored: np.ndarray | None) -> None:
        n = self.num_classes
        if target.size == 0 or (target.min() >= 0 and target.max() < n):
            return
        bad = (target < 0) | (target >= n)
        if ignored is not None:
            bad &= ~ignored
        if bad.any():
            values = np.unique(target[bad])[:5].tolist()
            raise ValueError(
                f"target labels {values} are outside [0, {n}) and are not ignore_index={self.ignore_index}"
            )

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_scratch": np.empty(0, dtype=np.intp)}

    def merge(self, other: ConfusionMatrix) -> None:
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes}-class matrix into {self.num_classes}-class matrix")
        self._counts += other._counts

    def reset(self) -> None:
        self._counts[:] = 0

    def compute(self) -> SegMetrics:
        n = self.num_classes
        tp = np.diag(self._counts[:, :n]).astype(np.float64)
        gt = self._counts.sum(axis=1)  # includes invalid predictions
        predicted = self._counts[:, :n].sum(axis=0)
        union = gt + predicted - tp
        iou = _safe_divide(tp, union)
        accuracy = _safe_divide(tp, gt)
        total = int(gt.sum())
        return SegMetrics(
            iou=iou,
            accuracy=accuracy,
            miou=_nanmean(iou),
            pixel_accuracy=float(tp.sum() / total) if total else math.nan,
            mean_accuracy=_nanmean(accuracy),
            num_pixels=total,
            gt_pixels=gt.astype(np.int64),
        )


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels where two label maps agree."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("label maps are empty")
    return float(np.count_nonzero(a == b) / a.size)


def format_table(metrics: SegMetrics, class_names: Sequence[str]) -> str:
    """Fixed-width plain-text table: per-class IoU and accuracy, then the summary lines."""
    _check_names(class_names, len(metrics.iou))
    width = max([len("class"), len("pixel acc"), *(len(str(name)) for name in class_names)])
    lines = [f"{'class':<{width}}  {'IoU %':>7}  {'acc %':>7}", "-" * (width + 18)]
    for name, iou, acc in zip(class_names, metrics.iou, metrics.accuracy):
        lines.append(f"{str(name):<{width}}  {_percent(iou):>7}  {_percent(acc):>7}")
    lines.append("-" * (width + 18))
    for label, value in (
        ("mIoU", metrics.miou),
        ("pixel acc", metrics.pixel_accuracy),
        ("mean acc", metrics.mean_accuracy),
    ):
        lines.append(f"{label:<{width}}  {_percent(value):>7}")
    return "\n".join(lines)


def _check_integer(what: str, array: np.ndarray) -> None:
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(f"{what} labels must be an integer array, got dtype {array.dtype}")


def _check_names(class_names: Sequence[str], num_classes: int) -> None:
    if len(class_names) != num_classes:
        raise ValueError(f"got {len(class_names)} class names for {num_classes} classes")


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    # np.nanmean warns on all-NaN input; an empty matrix just has no score.
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"
