"""The interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.meta import ModelMeta


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]  # str for a dynamic dimension
    dtype: str


class Backend(ABC):
    """Runs a preprocessed NCHW float32 batch; returns logits (N,C,H,W) or labels (N,H,W uint8)."""

    name: str = "backend"
    variant: str = ""  # how it runs this model when that differs from its plain way (onnxruntime "amx", openvino "bf16")
    meta: ModelMeta
    output_kind: str = "logits"  # or "labels" when argmax is inside the model
    device: str = "cpu"  # where it runs: cpu, cuda:N
    max_batch: int = 1

    @classmethod
    @abstractmethod
    def load(cls, path: Path, device: str | None = None) -> "Backend":
        """Open ``path``. Each backend names its own options as keyword parameters (no catch-all
        ``**``), and declares the same names in the registry (``edgeseg.runtime.backends``)."""

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def infer_for_labels(self, batch: np.ndarray) -> np.ndarray:
        """What ``edgeseg.runtime.labels.to_labels`` turns into labels: ``infer``'s output, or, from a
        backend that can stop before the model's last upsample, the logits before it (N,C,h,w)."""
        return self.infer(batch)

    def close(self) -> None:
        """Release the model; the default has nothing to release."""

    @property
    def inputs(self) -> list[TensorInfo]:
        return [TensorInfo("images", ("N", 3, *self.meta.input_size), "float32")]

    @property
    def outputs(self) -> list[TensorInfo]:
        if self.output_kind == "labels":
            return [TensorInfo("labels", ("N", *self.meta.input_size), "uint8")]
        return [TensorInfo("logits", ("N", self.meta.num_classes, *self.meta.input_size), "float32")]

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fit_fixed_batch(batch: np.ndarray, fixed_batch: int | None) -> np.ndarray:
    """``batch`` padded with zeros to a fixed-batch model's size (it still serves fewer images); larger is an error."""
    count = batch.shape[0]
    if fixed_batch is None or count == fixed_batch:
        return batch
    if count > fixed_batch:
        raise EdgesegError(
            f"batch of {count}: this model was exported for batch {fixed_batch}; "
            "re-export with --dynamic-batch or --batch to match"
        )
    padding = np.zeros((fixed_batch - count, *batch.shape[1:]), dtype=batch.dtype)
    return np.concatenate([batch, padding])
