"""Multiply-accumulates and parameters of a PyTorch model, counted on one forward pass.

MACs are those of every ``Conv2d`` and ``Linear`` for one image at the given input size (the
bilinear resizes, BatchNorm, activations and the pooling mean are not counted; export folds
BatchNorm into the convolutions anyway); parameters are every parameter's elements. "Head" is everything outside ``backbone``:
the ASPP, the shortcut, the decoder and the classifier. Export records these numbers in the
model's metadata, so the torch-free device side can show them without counting anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

HEAD_EXCLUDES = "backbone"  # the top-level module that is not the head


@dataclass(frozen=True)
class Complexity:
    input_size: tuple[int, int]  # (height, width) of the image the MACs are for
    macs: int
    params: int
    head_macs: int
    head_params: int

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_size"] = list(self.input_size)
        return data


def layer_macs(model: nn.Module, input_size: tuple[int, int]) -> dict[str, int]:
    """MACs of each Conv2d and Linear (by module name) for one image of ``input_size`` (height, width)."""
    counts: dict[str, int] = {}

    def hook(name: str):
        def count(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            per_output = 0  # MACs per output element
            if isinstance(module, nn.Conv2d):
                per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            elif isinstance(module, nn.Linear):
                per_output = module.in_features
            counts[name] = counts.get(name, 0) + output.numel() // output.shape[0] * per_output

        return count

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules()
               if isinstance(module, (nn.Conv2d, nn.Linear))]  # fmt: skip
    was_training = model.training
    try:
        model.eval()  # no BatchNorm statistics change
        with torch.no_grad():
            model(torch.zeros(1, 3, *input_size, device=_device(model)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return counts


def measure(model: nn.Module, input_size: tuple[int, int]) -> Complexity:
    """Whole-network and head-only MACs and parameters of ``model`` at ``input_size`` (height, width)."""
    macs = layer_macs(model, input_size)
    params = {name: p.numel() for name, p in model.named_parameters()}
    return Complexity(
        input_size=(int(input_size[0]), int(input_size[1])),
        macs=sum(macs.values()),
        params=sum(params.values()),
        head_macs=sum(v for k, v in macs.items() if _in_head(k)),
        head_params=sum(v for k, v in params.items() if _in_head(k)),
    )


def _in_head(name: str) -> bool:
    return name.split(".", 1)[0] != HEAD_EXCLUDES


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
