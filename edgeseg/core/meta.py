"""What a model needs to be used correctly, carried inside every checkpoint and exported model.

The one schema of that metadata lives here: ``Preprocess`` and ``ModelMeta`` check every field
when they are made, whether by training, by ``from_dict`` on a checkpoint's or an ONNX model's
JSON, or by ``dataclasses.replace``. A bad field raises ``MetaError`` (an ``EdgesegError``) that
names the field and the rule; ``meta_from_dict`` adds the file and the fix. The checks are plain
Python rather than a validation library: the runtime installs on a Jetson with Python 3.8 and
nothing more than numpy, OpenCV, Pillow, typer and rich.

Torch-free: the runtime reads it on devices that have no PyTorch.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

from edgeseg.core.errors import EdgesegError

RESIZE_MODES = ("letterbox", "resize")
CHANNEL_ORDERS = ("RGB", "BGR")
BACKBONES = ("mobilenetv2",)  # here, not in edgeseg.model.network, which needs torch
OUTPUT_STRIDES = (8, 16)
HEADS = ("seed", "separable")  # ASPP + decoder: the seed's dense 3x3 convs, or depthwise separable ones
MAX_MACS = 10**15  # bounds macs and params so a damaged value stays a small number
MAX_CLASSES = 256  # label maps are uint8
INPUT_SIDE_RANGE = (32, 4096)  # bounded, so a damaged size cannot ask for gigabytes
REQUIRED_KEYS = ("num_classes", "classes", "palette", "ignore_index", "input_size")


class MetaError(EdgesegError):
    """A metadata field that breaks the schema; the message names the field, not the file."""


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
        _choice("preprocess.channel_order", self.channel_order, CHANNEL_ORDERS)
        _choice("preprocess.resize", self.resize, RESIZE_MODES)
        scale = _number("preprocess.scale", self.scale)
        if scale <= 0:
            raise MetaError(f"preprocess.scale {short_json(self.scale)} must be greater than 0 (1/255 for 0..1 input)")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "mean", _triple("preprocess.mean", self.mean, positive=False))
        object.__setattr__(self, "std", _triple("preprocess.std", self.std, positive=True))
        object.__setattr__(self, "pad_value", _integer("preprocess.pad_value", self.pad_value, 0, 255))


@dataclass(frozen=True)
class ModelMeta:
    num_classes: int
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int
    input_size: tuple[int, int]  # (height, width) the network runs at
    backbone: str = "mobilenetv2"
    output_stride: int = 16
    head: str = "seed"  # absent in files written before the separable head: they are all seed-exact
    preprocess: Preprocess = field(default_factory=Preprocess)
    provenance: dict[str, Any] = field(default_factory=dict)
    # Counted facts, not settings (export counts them; None: not counted): left out of ==, so an exported
    # model's metadata still equals its checkpoint's.
    macs: int | None = field(default=None, compare=False)  # multiply-accumulates of one image at input_size
    params: int | None = field(default=None, compare=False)  # parameters of the network

    def __post_init__(self) -> None:
        count = _integer("num_classes", self.num_classes, 1, MAX_CLASSES)
        canonical = {
            "num_classes": count,
            "classes": _class_names(self.classes, count),
            "palette": _palette(self.palette, count),
            "ignore_index": _ignore_index(self.ignore_index, count),
            "input_size": _input_size(self.input_size),
            "backbone": _choice("backbone", self.backbone, BACKBONES),
            "output_stride": _choice("output_stride", self.output_stride, OUTPUT_STRIDES),
            "head": _choice("head", self.head, HEADS),
            "macs": _optional_count("macs", self.macs),
            "params": _optional_count("params", self.params),
        }
        if not isinstance(self.preprocess, Preprocess):
            raise MetaError(f"preprocess {short_json(self.preprocess)} must be an object of preprocessing settings")
        if not isinstance(self.provenance, dict):
            raise MetaError(f"provenance {short_json(self.provenance)} must be an object")
        for name, value in canonical.items():
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["classes"] = list(self.classes)
        data["palette"] = [list(c) for c in self.palette]
        data["input_size"] = list(self.input_size)
        data["preprocess"]["mean"] = list(self.preprocess.mean)
        data["preprocess"]["std"] = list(self.preprocess.std)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> "ModelMeta":
        """The metadata of a JSON object; MetaError (one line, naming the field) for anything off-schema.

        Keys this version does not know are left out at the top level (facts a later version may
        add), but not inside ``preprocess``, where an unknown setting would change the input."""
        if not isinstance(data, dict):
            raise MetaError(f"is a {json_type_name(data)}, not a JSON object")
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise MetaError(f"has no {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values["preprocess"] = _preprocess(data.get("preprocess"))
        values["provenance"] = {} if data.get("provenance") is None else data["provenance"]
        return cls(**values)


def meta_from_dict(data: Any, source: object, fix: str) -> ModelMeta:
    """``ModelMeta.from_dict`` with the file and the fix in the one-line error."""
    try:
        return ModelMeta.from_dict(data)
    except MetaError as err:
        raise EdgesegError(f"{source}: model metadata {err}; {fix}") from None


# --- the field rules --------------------------------------------------------------------------
def _preprocess(value: Any) -> Preprocess:
    if value is None:
        return Preprocess()
    if not isinstance(value, dict):
        raise MetaError(f"preprocess {short_json(value)} must be a JSON object")
    known = {f.name for f in fields(Preprocess)}
    unknown = sorted(str(key) for key in value if key not in known)
    if unknown:
        raise MetaError(f"preprocess has unknown settings {short_json(unknown)}; known: {', '.join(sorted(known))}")
    return Preprocess(**value)


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise MetaError(f"{name} {short_json(value)} must be an integer from {low} to {high}")
    return int(value)


def _optional_count(name: str, value: Any) -> int | None:
    return None if value is None else _integer(name, value, 0, MAX_MACS)


def _number(name: str, value: Any) -> float:
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int beyond float range
        number = math.nan
    if not math.isfinite(number):
        raise MetaError(f"{name} {short_json(value)} must be a finite number")
    return number


def _choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if isinstance(value, bool) or type(value) not in (str, int) or value not in choices:
        raise MetaError(f"{name} {short_json(value)} must be one of {', '.join(map(str, choices))}")
    return value


def _sequence(name: str, value: Any, length: int, what: str) -> Sequence[Any]:
    if not isinstance(value, (list, tuple)):
        raise MetaError(f"{name} {short_json(value)} must be a list of {what}")
    if len(value) != length:
        raise MetaError(f"{name} has {len(value)} entries; it needs {length} ({what})")
    return value


def _triple(name: str, value: Any, positive: bool) -> tuple[float, float, float]:
    items = _sequence(name, value, 3, "one number per channel")
    numbers = tuple(_number(f"{name}[{i}]", v) for i, v in enumerate(items))
    if positive and min(numbers) <= 0:
        raise MetaError(f"{name} {short_json(value)} must be greater than 0 in every channel (it divides the input)")
    return numbers  # type: ignore[return-value]


def _class_names(value: Any, count: int) -> tuple[str, ...]:
    names = _sequence("classes", value, count, "one name per class, as num_classes says")
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip() or not name.isprintable():
            raise MetaError(f"classes[{index}] {short_json(name)} must be a non-empty name of printable characters")
    if len(set(names)) != len(names):
        raise MetaError(f"classes {short_json(names)} repeat a name; each class needs its own")
    return tuple(names)


def _palette(value: Any, count: int) -> tuple[tuple[int, int, int], ...]:
    colours = _sequence("palette", value, count, "one [R, G, B] per class, as num_classes says")
    checked = []
    for index, colour in enumerate(colours):
        rgb = _sequence(f"palette[{index}]", colour, 3, "R, G, B")
        r, g, b = (_integer(f"palette[{index}]", v, 0, 255) for v in rgb)
        checked.append((r, g, b))
    return tuple(checked)


def _ignore_index(value: Any, count: int) -> int:
    if not _is_int(value) or not (value == 255 or count <= value <= 255):
        raise MetaError(f"ignore_index {short_json(value)} must be 255 or an integer from {count} (num_classes) to 255")
    return int(value)


def _input_size(value: Any) -> tuple[int, int]:
    low, high = INPUT_SIDE_RANGE
    sides = _sequence("input_size", value, 2, "height, width")
    if not all(_is_int(v) and low <= v <= high and v % 8 == 0 for v in sides):
        raise MetaError(f"input_size {short_json(value)} must be [height, width], multiples of 8 from {low} to {high}")
    return int(sides[0]), int(sides[1])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def json_type_name(value: Any) -> str:
    names = {str: "string", list: "list", tuple: "list", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def short_json(value: Any, limit: int = 60) -> str:
    """A value for a one-line message: JSON where it can be, cut short."""
    try:
        text = json.dumps(value, allow_nan=True)
    except (TypeError, ValueError, RecursionError):  # not JSON, too deep, or an int of thousands of digits
        text = f"<{json_type_name(value)}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# The seed repository's convention: RGB, x/255 without mean/std, letterbox with grey padding.
SEED_PREPROCESS = Preprocess()


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
