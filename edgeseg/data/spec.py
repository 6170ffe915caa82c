"""What a data set is (classes, palette, layout, root) and how ``--data`` picks one.

``--data`` accepts three forms:

1. ``NAME:ROOT`` -- a shipped preset plus the data set's root folder, e.g.
   ``camvid:../shared/datasets/camvid``, ``voc:/data/VOCdevkit/VOC2012``, ``cityscapes:/data/cityscapes``.
2. a path to a ``.toml`` file describing the data set.
3. a folder that contains ``dataset.toml``.

The TOML description (the shipped presets in ``edgeseg/data/presets/`` are examples)::

    name = "camvid"          # optional; default: the toml's stem ("dataset" -> its folder's name)
    layout = "folder"        # folder | voc | cityscapes
    ignore_index = 11        # label value ignored by loss and metrics; 0..255 and >= len(classes)
    classes = ["Sky", "Building", ...]
    palette = [[128,128,128], [128,0,0], ...]   # RGB per class, same length as classes
    # root = "."             # optional, relative to this file; default: this file's folder
    # [label_map]            # optional: raw label value -> class id (or ignore_index);
    # 7 = 0                  # unlisted raw values become ignore_index
    # [splits.heldout]       # optional: a split derived from a physical one (see splits.py), chosen by
    # from = "train"         # sequence (sequences / exclude_sequences) or by frame stem (frames / exclude_frames)
    # sequences = ["0006R0"]

Layouts (see ``layouts.py``):

- ``folder``: ``images/<split>/*.jpg|jpeg|png`` and ``labels/<split>/*.png``, matched by file stem.
- ``voc``: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png``, ids in ``ImageSets/Segmentation/<split>.txt``.
- ``cityscapes``: ``leftImg8bit/<split>/<city>/<x>_leftImg8bit.png`` with
  ``gtFine/<split>/<city>/<x>_gtFine_labelIds.png``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.core.toml_compat import tomllib
from edgeseg.data.splits import SplitDef, layout_root, parse_splits
from edgeseg.core.errors import EdgesegError

LAYOUTS = ("folder", "voc", "cityscapes")
TOML_KEYS = ("name", "layout", "ignore_index", "classes", "palette", "root", "label_map", "splits")
DATASET_TOML = "dataset.toml"
PRESETS = Path(__file__).resolve().parent / "presets"  # package data; a plain folder on Python 3.8 too


@dataclass(frozen=True)
class DatasetSpec:
    """A data set's description with its root folder resolved."""

    name: str
    layout: str
    root: Path
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int
    label_map: tuple[int, ...] | None = None
    splits: tuple[SplitDef, ...] = ()  # derived splits ([splits.NAME] tables)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def preset_names() -> tuple[str, ...]:
    return tuple(sorted(p.name[: -len(".toml")] for p in PRESETS.iterdir() if p.name.endswith(".toml")))


def resolve_dataset(data: str) -> DatasetSpec:
    """Turn a ``--data`` value (``NAME:ROOT``, a ``.toml`` file, or a folder with ``dataset.toml``) into a spec."""
    path = Path(data).expanduser()
    if path.suffix == ".toml":
        if not path.is_file():
            raise EdgesegError(f"--data {data}: no such file; check the path to the dataset TOML")
        return load_toml(path)
    if path.is_dir():
        if not (path / DATASET_TOML).is_file():
            raise EdgesegError(
                f"--data {data}: folder has no {DATASET_TOML}; add one, or pass NAME:ROOT with a preset "
                f"({', '.join(preset_names())})"
            )
        return load_toml(path / DATASET_TOML)
    name, sep, root = data.partition(":")
    if sep and name and root and "/" not in name and "\\" not in name:
        return _from_preset(data, name, root)
    raise EdgesegError(
        f"--data {data}: not a dataset; pass NAME:ROOT with a preset ({', '.join(preset_names())}), "
        f"a .toml file, or a folder containing {DATASET_TOML}"
    )


def load_toml(path: Path, root: Path | None = None) -> DatasetSpec:
    """Read a dataset TOML; ``root`` overrides the file's own ``root`` key."""
    path = Path(path).resolve()
    table = _read_toml(path)
    if root is None:
        root = path.parent / str(table.get("root", "."))
    default_name = path.parent.name if path.name == DATASET_TOML else path.stem
    return _spec_from_table(table, str(path), root.resolve(), default_name)


def _from_preset(data: str, name: str, root: str) -> DatasetSpec:
    if name not in preset_names():
        raise EdgesegError(
            f"--data {data}: unknown preset '{name}'; choose one of {', '.join(preset_names())}, "
            f"or pass a .toml file or a folder containing {DATASET_TOML}"
        )
    table = tomllib.loads((PRESETS / f"{name}.toml").read_text())
    table.pop("root", None)
    return _spec_from_table(table, f"--data {data}", Path(root).expanduser().resolve(), name)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as err:
        raise EdgesegError(f"--data {path}: cannot read ({err.strerror}); check the path and its permissions") from err
    except tomllib.TOMLDecodeError as err:
        raise EdgesegError(f"--data {path}: malformed TOML ({err}); fix the file's syntax") from err


def _spec_from_table(table: dict[str, Any], source: str, root: Path, default_name: str) -> DatasetSpec:
    """Validate a parsed TOML table. ``source`` names the file or flag in error messages."""
    unknown = sorted(set(table) - set(TOML_KEYS))
    if unknown:
        raise EdgesegError(f"{source}: unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(TOML_KEYS)}")
    for key in ("layout", "ignore_index", "classes", "palette"):
        if key not in table:
            raise EdgesegError(f"{source}: missing key '{key}'; add it (see edgeseg/data/presets/*.toml for examples)")
    name = table.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise EdgesegError(f"{source}: 'name' must be a non-empty string")
    layout = table["layout"]
    if layout not in LAYOUTS:
        raise EdgesegError(f"{source}: layout '{layout}' is not known; choose one of {', '.join(LAYOUTS)}")
    classes = _classes(table["classes"], source)
    palette = _palette(table["palette"], len(classes), source)
    ignore_index = _ignore_index(table["ignore_index"], len(classes), source)
    label_map = _label_map(table.get("label_map"), len(classes), ignore_index, source)
    root = _existing_root(root, layout, source)
    splits = parse_splits(table.get("splits"), source)
    return DatasetSpec(name, layout, root, classes, palette, ignore_index, label_map, splits)


def _classes(value: Any, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
        raise EdgesegError(f"{source}: 'classes' must be a non-empty list of class names (strings)")
    if len(value) > 255:
        raise EdgesegError(f"{source}: {len(value)} classes; at most 255 fit in 8-bit label maps")
    return tuple(value)


def _palette(value: Any, num_classes: int, source: str) -> tuple[tuple[int, int, int], ...]:
    def is_rgb(entry: Any) -> bool:
        return (
            isinstance(entry, list)
            and len(entry) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in entry)
        )

    if not isinstance(value, list) or not all(is_rgb(entry) for entry in value):
        raise EdgesegError(f"{source}: 'palette' must be a list of [R, G, B] triples of integers 0..255")
    if len(value) != num_classes:
        raise EdgesegError(
            f"{source}: palette has {len(value)} entries for {num_classes} classes; give one [R, G, B] per class"
        )
    return tuple((r, g, b) for r, g, b in value)


def _ignore_index(value: Any, num_classes: int, source: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not num_classes <= value <= 255:
        raise EdgesegError(
            f"{source}: ignore_index {value!r} must be an integer from {num_classes} (the class count) to 255"
        )
    return value


def _label_map(value: Any, num_classes: int, ignore_index: int, source: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EdgesegError(f"{source}: 'label_map' must be a table of raw value = class id, e.g. [label_map] 7 = 0")
    lut = [ignore_index] * 256
    for key, target in value.items():
        if not key.isdigit() or int(key) > 255:
            raise EdgesegError(f"{source}: label_map key '{key}' must be a raw label value 0..255")
        valid = isinstance(target, int) and (0 <= target < num_classes or target == ignore_index)
        if isinstance(target, bool) or not valid:
            raise EdgesegError(
                f"{source}: label_map {key} = {target!r}; map to a class id 0..{num_classes - 1} or {ignore_index}"
            )
        lut[int(key)] = target
    return tuple(lut)


def _existing_root(root: Path, layout: str, source: str) -> Path:
    if not root.is_dir():
        raise EdgesegError(f"{source}: root folder {root} does not exist; point it at the dataset's folder")
    return layout_root(layout, root, source)
