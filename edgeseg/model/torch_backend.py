"""PyTorch eager backend: the reference every deployed model is compared with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeseg.model.checkpoint import load_model
from edgeseg.core.errors import EdgesegError
from edgeseg.runtime.backends.base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: torch.nn.Module, meta, device: str, threads: int | None = None) -> None:
        self.model = model
        self.meta = meta
        self.device = torch.device(device)
        self.max_batch = 1 << 16
        if threads:
            torch.set_num_threads(threads)

    @classmethod
    def load(cls, path: Path, device: str | None = None, threads: int | None = None) -> "TorchBackend":
        device = device or "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise EdgesegError(f"--device {device}: PyTorch sees no CUDA GPU here; use --device cpu")
        model, meta = load_model(path, device=device)
        return cls(model, meta, device, threads)

    @torch.inference_mode()
    def infer(self, batch: np.ndarray) -> np.ndarray:
        logits = self.model(torch.from_numpy(batch).to(self.device))
        return logits.float().cpu().numpy()

    def close(self) -> None:
        self.model = None
