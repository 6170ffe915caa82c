"""``Segmenter``: a model of any kind, with its own pre- and post-processing, on BGR images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeseg.meta import ModelMeta
from edgeseg.runtime.backends import Backend, open_backend
from edgeseg.runtime.preprocess import Placement, Preprocessor, labels_to_source, to_bgr8
from edgeseg.runtime import visualize


class Segmenter:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.meta: ModelMeta = backend.meta
        self.preprocessor = Preprocessor(self.meta.preprocess, self.meta.input_size, max_batch=1)
        self.lut_bgr = visualize.palette_lut_bgr(self.meta.palette)

    @classmethod
    def load(cls, path: str | Path, backend: str = "auto", device: str = "cpu", **options: object) -> "Segmenter":
        return cls(open_backend(path, backend=backend, device=device, **options))

    def segment(self, image: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Class ids (uint8) at each input image's own size, for one BGR image or a list of them."""
        if isinstance(image, np.ndarray):
            return self._segment_one(image)
        return [self._segment_one(item) for item in image]

    def logits(self, image: np.ndarray) -> tuple[np.ndarray, Placement]:
        """Raw network output (C,H,W) at the network's input size, and where the image sits in it."""
        place = self.preprocessor(to_bgr8(image), 0)
        return self.backend.infer(self.preprocessor.buffer[:1])[0], place

    def _segment_one(self, image: np.ndarray) -> np.ndarray:
        output, place = self.logits(image)
        labels = output if self.backend.output_kind == "labels" else _argmax(output)
        return labels_to_source(labels, place)

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        return visualize.colorize(labels, self.lut_bgr)

    def overlay(self, image_bgr: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        return visualize.overlay(to_bgr8(image_bgr), labels, self.lut_bgr, alpha)

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _argmax(logits: np.ndarray) -> np.ndarray:
    return logits.argmax(axis=0).astype(np.uint8)
