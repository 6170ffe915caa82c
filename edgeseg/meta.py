"""What a model needs to be used correctly, carried inside every checkpoint and exported model.

Torch-free: the runtime reads it on devices that have no PyTorch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgeseg.errors import EdgesegError

RESIZE_MODES = ("letterbox", "resize")


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network input: ``((pixel * scale) - mean) / std`` per channel."""

    channel_order: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: str = "letterbox"
    pad_value: int = 128

    def __post_init__(self) -> None:
        if self.channel_order not in ("RGB", "BGR"):
            raise EdgesegError(f"preprocess channel_order must be RGB or BGR, got {self.channel_order!r}")
        if self.resize not in RESIZE_MODES:
            raise EdgesegError(f"preprocess resize must be one of {RESIZE_MODES}, got {self.resize!r}")


# The seed repository's convention: RGB, x/255 without mean/std, letterbox with grey padding.
SEED_PREPROCESS = Preprocess()


@dataclass(frozen=True)
class ModelMeta:
    num_classes: int
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int
    input_size: tuple[int, int]  # (height, width) the network runs at
    backbone: str = "mobilenetv2"
    output_stride: int = 16
    preprocess: Preprocess = field(default_factory=Preprocess)
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.classes) != self.num_classes or len(self.palette) != self.num_classes:
            raise EdgesegError(
                f"model metadata names {len(self.classes)} classes and {len(self.palette)} colours "
                f"for num_classes={self.num_classes}; they must agree"
            )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["palette"] = [list(c) for c in self.palette]
        data["input_size"] = list(self.input_size)
        data["preprocess"]["mean"] = list(self.preprocess.mean)
        data["preprocess"]["std"] = list(self.preprocess.std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelMeta":
        pre = dict(data.get("preprocess") or {})
        for key in ("mean", "std"):
            if key in pre:
                pre[key] = tuple(float(v) for v in pre[key])
        return cls(
            num_classes=int(data["num_classes"]),
            classes=tuple(data["classes"]),
            palette=tuple(tuple(int(v) for v in c) for c in data["palette"]),
            ignore_index=int(data["ignore_index"]),
            input_size=(int(data["input_size"][0]), int(data["input_size"][1])),
            backbone=data.get("backbone", "mobilenetv2"),
            output_stride=int(data.get("output_stride", 16)),
            preprocess=Preprocess(**pre),
            provenance=dict(data.get("provenance") or {}),
        )


def default_class_names(num_classes: int) -> tuple[str, ...]:
    return tuple(f"class{i}" for i in range(num_classes))


def default_palette(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """The PASCAL VOC colour map, which extends to any number of classes."""
    colours = []
    for index in range(num_classes):
        r = g = b = 0
        value = index
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colours.append((r, g, b))
    return tuple(colours)
