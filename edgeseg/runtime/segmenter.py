"""``Segmenter``: a model of any kind, with its own pre- and post-processing, on BGR images.

The three stages are public (``prepare``, ``run``, ``finish``) so that ``edgeseg bench`` times
exactly the code every other command runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.meta import ModelMeta
from edgeseg.runtime.backends import Backend, open_backend
from edgeseg.runtime.preprocess import Placement, Preprocessor, labels_to_source, to_bgr8
from edgeseg.runtime import visualize


class Segmenter:
    def __init__(self, backend: Backend, batch_size: int = 1) -> None:
        if batch_size < 1 or batch_size > backend.max_batch:
            raise EdgesegError(
                f"--batch-size {batch_size}: this model takes batches of 1 to {backend.max_batch}; "
                "re-export it with --dynamic-batch or a larger --batch"
            )
        self.backend = backend
        self.meta: ModelMeta = backend.meta
        self.batch_size = batch_size
        self.preprocessor = Preprocessor(self.meta.preprocess, self.meta.input_size, max_batch=batch_size)
        self.lut_bgr = visualize.palette_lut_bgr(self.meta.palette)

    @classmethod
    def load(
        cls, path: str | Path, backend: str = "auto", device: str | None = None, batch_size: int = 1, **options: object
    ) -> "Segmenter":
        return cls(open_backend(path, backend=backend, device=device, **options), batch_size)

    def segment(self, image: np.ndarray | Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """Class ids (uint8) at each input image's own size, for one BGR image or a list of them."""
        if isinstance(image, np.ndarray):
            return self._segment_batch([image])[0]
        labels: list[np.ndarray] = []
        for start in range(0, len(image), self.batch_size):
            labels.extend(self._segment_batch(image[start : start + self.batch_size]))
        return labels

    def _segment_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        places = self.prepare(images)
        return self.finish(self.run(len(places)), places)

    # --- the stages ------------------------------------------------------------------
    def prepare(self, images: Sequence[np.ndarray]) -> list[Placement]:
        """Pre-process up to batch_size images into the input buffer."""
        return [self.preprocessor(to_bgr8(image), slot) for slot, image in enumerate(images)]

    def run(self, count: int) -> np.ndarray:
        """The model on the first ``count`` prepared inputs: logits (N,C,H,W) or labels (N,H,W)."""
        return self.backend.infer(self.preprocessor.buffer[:count])

    def finish(self, outputs: np.ndarray, places: Sequence[Placement]) -> list[np.ndarray]:
        """Network outputs to labels at each source image's size."""
        labels_kind = self.backend.output_kind == "labels"
        return [labels_to_source(out if labels_kind else argmax(out), place) for out, place in zip(outputs, places)]

    def logits(self, image: np.ndarray) -> tuple[np.ndarray, Placement]:
        """Raw network output (C,H,W) at the network's input size, and where the image sits in it."""
        place = self.prepare([image])[0]
        return self.run(1)[0], place

    # --- pictures --------------------------------------------------------------------
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


def argmax(logits: np.ndarray) -> np.ndarray:
    """Class ids (uint8) of one (C,H,W) logits array, the first class on ties as numpy's argmax.

    numpy's argmax over the strided class axis takes 7.8 ms at 11x360x480; one max and a
    compare per class take 5 ms (2 cores), which matters next to a 40 ms INT8 model.
    """
    best = logits.max(axis=0)
    labels = np.zeros(best.shape, dtype=np.uint8)
    is_best = np.empty(best.shape, dtype=bool)
    for index in range(logits.shape[0] - 1, -1, -1):
        np.equal(logits[index], best, out=is_best)
        np.copyto(labels, index, where=is_best)
    return labels
