"""A dataset's derived splits (``[splits.NAME]`` in its TOML) and the names they select by, checked without the disk.

A derived split takes a subset of one physical split's frames, chosen by sequence or by frame name. A
frame's name is its image file's stem (Cityscapes: without ``_leftImg8bit``); its sequence is the name
up to the first ``_`` (CamVid ``0016E5_07959`` -> ``0016E5``; Cityscapes: the city). Also where a
layout's root is. ``layouts.py`` finds the files; this module needs no dataset spec.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.core.errors import EdgesegError

CITYSCAPES_IMAGE = "_leftImg8bit.png"
CITYSCAPES_LABEL = "_gtFine_labelIds.png"
SPLIT_KEYS = ("from", "sequences", "exclude_sequences", "frames", "exclude_frames")
SELECTORS = SPLIT_KEYS[1:]
SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SHOW = 3  # names shown in one error message


@dataclass(frozen=True)
class SplitDef:
    """``[splits.NAME]``: the frames of physical split ``source`` whose sequence (or name) is, or is not, listed."""

    name: str
    source: str
    selector: str  # one of SELECTORS
    names: tuple[str, ...]

    @property
    def by_sequence(self) -> bool:
        return self.selector.endswith("sequences")

    @property
    def excludes(self) -> bool:
        return self.selector.startswith("exclude_")

    def keeps(self, frame: str) -> bool:
        key = sequence_of(frame) if self.by_sequence else frame
        return (key in self.names) != self.excludes

    def describe(self) -> str:
        return f"from {self.source}, {self.selector} {shown(self.names, SHOW)}"


def frame_name(path: Path) -> str:
    """The frame an image or label file shows: its stem, without Cityscapes' ``_leftImg8bit``/``_gtFine_labelIds``."""
    for suffix in (CITYSCAPES_IMAGE, CITYSCAPES_LABEL):
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def sequence_of(frame: str) -> str:
    """The recording a frame belongs to: its name up to the first ``_`` (CamVid ``0006R0_f02400`` -> ``0006R0``)."""
    return frame.split("_", 1)[0]


def parse_splits(value: Any, source: str) -> tuple[SplitDef, ...]:
    """The dataset TOML's ``[splits.NAME]`` tables, checked without touching the disk."""
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(isinstance(table, dict) for table in value.values()):
        raise EdgesegError(
            f"{source}: 'splits' must hold tables, e.g. [splits.heldout] with from = \"train\", sequences = [\"0006R0\"]"
        )
    splits = tuple(_parse_split(name, table, source) for name, table in value.items())
    for split in splits:
        if split.source in value:
            raise EdgesegError(
                f"{source}: [splits.{split.name}] takes its frames from '{split.source}', another derived split; "
                "name a physical split (a folder or split file) in 'from'"
            )
    _check_held_out_pairs(splits, source)
    return splits


def _parse_split(name: str, table: dict[str, Any], source: str) -> SplitDef:
    where = f"{source}: [splits.{name}]"
    if not SPLIT_NAME.fullmatch(name):
        raise EdgesegError(f"{where}: a split name takes letters, digits, '.', '_' and '-' only; rename it")
    unknown = sorted(set(table) - set(SPLIT_KEYS))
    if unknown:
        raise EdgesegError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(SPLIT_KEYS)}")
    origin = table.get("from")
    if not isinstance(origin, str) or not origin or origin == name:
        raise EdgesegError(f"{where}: needs from = \"SPLIT\", the physical split its frames come from (e.g. \"train\")")
    chosen = [key for key in SELECTORS if key in table]
    if len(chosen) != 1:
        raise EdgesegError(f"{where}: give exactly one of {', '.join(SELECTORS)}")
    selector = chosen[0]
    names = table[selector]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise EdgesegError(f"{where}: {selector} must be a list of names (strings)")
    if not names:
        raise EdgesegError(f"{where}: {selector} is empty, so the split names no frame; list at least one name")
    return SplitDef(name, origin, selector, tuple(dict.fromkeys(names)))


def _check_held_out_pairs(splits: Sequence[SplitDef], source: str) -> None:
    """A ``sequences`` split and an ``exclude_sequences`` split of one source that name a common sequence are a
    training/held-out pair: the second must exclude everything the first takes. Same for frames/exclude_frames."""
    for taken in (s for s in splits if not s.excludes):
        for rest in splits:
            if not rest.excludes or (rest.source, rest.by_sequence) != (taken.source, taken.by_sequence):
                continue
            leaked = [n for n in taken.names if n not in rest.names]
            if leaked and len(leaked) < len(taken.names):
                kind = "sequence" if taken.by_sequence else "frame"
                raise EdgesegError(
                    f"{source}: [splits.{taken.name}] and [splits.{rest.name}] overlap: {kind}(s) {shown(leaked, SHOW)} "
                    f"are in both; add them to {rest.name}'s {rest.selector} or drop them from {taken.name}'s "
                    f"{taken.selector}"
                )


def shown(names: Sequence[str], limit: int) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def layout_root(layout: str, root: Path, source: str) -> Path:
    """The folder the layout's paths are relative to; a VOCdevkit with one VOC20xx inside means that VOC20xx."""
    if layout != "voc" or (root / "JPEGImages").is_dir():
        return root
    years = sorted(p for p in root.glob("VOC20*") if (p / "JPEGImages").is_dir())
    if len(years) == 1:
        return years[0]
    if years:
        names = ", ".join(p.name for p in years)
        raise EdgesegError(f"{source}: {root} holds {names}; point the root at one of them")
    raise EdgesegError(f"{source}: {root} has no JPEGImages/; point the root at VOCdevkit/VOC2012 (or VOCdevkit)")
