"""Scoring a model on a labelled split: streaming confusion matrix at each label's own resolution.

Each image goes through the model's own pre-processing (letterbox or resize to the
network's input size); the predicted labels are cropped out of the padding and resized
with nearest-neighbour to the label map's size, and scored there. Torch-free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from edgeseg.data import SegmentationData
from edgeseg.core.errors import EdgesegError
from edgeseg.core.metrics import ConfusionMatrix, SegMetrics
from edgeseg.runtime import Segmenter


@dataclass
class EvalResult:
    metrics: SegMetrics
    confusion: ConfusionMatrix
    class_names: tuple[str, ...]
    num_images: int

    def to_dict(self) -> dict:
        return {**self.metrics.to_dict(self.class_names), "num_images": self.num_images}


def predictions(segmenter: Segmenter, data: SegmentationData, limit: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(index, predicted labels at the label's size, ground truth) for each image of the split."""
    count = len(data) if limit is None else min(limit, len(data))
    for index in range(count):
        image_rgb, target = data.read(index)
        labels = segmenter.segment(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
        if labels.shape != target.shape:
            labels = cv2.resize(labels, target.shape[::-1], interpolation=cv2.INTER_NEAREST)
        yield index, labels, target


def evaluate(
    segmenter: Segmenter,
    data: SegmentationData,
    limit: int | None = None,
    on_image: Callable[[int], None] | None = None,
) -> EvalResult:
    check_compatible(segmenter, data)
    spec = data.spec
    confusion = ConfusionMatrix(spec.num_classes, spec.ignore_index)
    count = 0
    for index, labels, target in predictions(segmenter, data, limit):
        confusion.update(labels, target)
        count += 1
        if on_image is not None:
            on_image(index)
    return EvalResult(confusion.compute(), confusion, tuple(spec.classes), count)


def check_compatible(segmenter: Segmenter, data: SegmentationData) -> None:
    model_classes = segmenter.meta.num_classes
    if model_classes != data.spec.num_classes:
        raise EdgesegError(
            f"--data {data.spec.name}: has {data.spec.num_classes} classes but the model predicts {model_classes}; "
            "evaluate on the dataset the model was trained for"
        )
