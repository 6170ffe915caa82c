"""Where a split's (image, label) files are, for each supported folder layout, and derived splits.

A derived split (``[splits.NAME]`` in the dataset TOML) takes a subset of one physical split's frames, chosen by
sequence or by frame name. A frame's name is its image file's stem (Cityscapes: without ``_leftImg8bit``); its
sequence is the name up to the first ``_`` (CamVid ``0016E5_07959`` -> ``0016E5``; Cityscapes: the city).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeseg.core.errors import EdgesegError
from edgeseg.core.images import IMAGE_SUFFIXES, is_image
from edgeseg.data.splits import CITYSCAPES_IMAGE, CITYSCAPES_LABEL, SHOW, SplitDef, frame_name, sequence_of, shown

if TYPE_CHECKING:
    from edgeseg.data.spec import DatasetSpec

LAYOUT_NEEDS = {
    "folder": "images/<split>/ and labels/<split>/",
    "voc": "JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/<split>.txt",
    "cityscapes": "leftImg8bit/<split>/<city>/ and gtFine/<split>/<city>/",
}


@dataclass(frozen=True)
class SplitListing:
    """A split's matched pairs, plus the files that have no partner (with where the partner was expected)."""

    pairs: list[tuple[Path, Path]]
    images_without_label: list[Path]
    labels_without_image: list[Path]
    image_dir: Path
    label_dir: Path
    label_hint: str  # how an image's label is found, for error messages
    image_hint: str
    ids_without_files: tuple[str, ...] = ()  # voc: ids in the split file with neither image nor label


def fingerprint(spec: DatasetSpec, split: str) -> str:
    """sha256 over the split's sorted relative paths and file sizes; stats files, reads none."""
    digest = hashlib.sha256()
    for image, label in list_pairs(spec, split):
        for path in (image, label):
            rel = path.relative_to(spec.root).as_posix()
            digest.update(f"{rel}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def list_pairs(spec: DatasetSpec, split: str) -> list[tuple[Path, Path]]:
    """The split's (image, label) paths, sorted; files without a partner are left out."""
    return scan_split(spec, split).pairs


def scan_split(spec: DatasetSpec, split: str) -> SplitListing:
    derived = derived_split(spec, split)
    if derived is None:
        return _scan_physical(spec, split)
    return _select(spec, derived, _scan_physical(spec, _check_source(spec, derived)))


def _scan_physical(spec: DatasetSpec, split: str) -> SplitListing:
    scanners = {"folder": _scan_folder, "voc": _scan_voc, "cityscapes": _scan_cityscapes}
    return scanners[spec.layout](spec, split)


def _scan_folder(spec: DatasetSpec, split: str) -> SplitListing:
    image_dir = _split_dir(spec, spec.root / "images", split)
    label_dir = _split_dir(spec, spec.root / "labels", split)
    images = _by_stem(spec, (p for p in image_dir.iterdir() if is_image(p)))
    labels = _by_stem(spec, (p for p in label_dir.iterdir() if p.suffix.lower() == ".png"))
    return _match(
        images, labels, image_dir, label_dir,
        label_hint="each image needs a label PNG with the same stem",
        image_hint=f"each label needs an image ({'/'.join(IMAGE_SUFFIXES)}) with the same stem in {image_dir}",
    )


def _scan_voc(spec: DatasetSpec, split: str) -> SplitListing:
    image_dir, label_dir = spec.root / "JPEGImages", spec.root / "SegmentationClass"
    for folder in (image_dir, label_dir):
        if not folder.is_dir():
            raise EdgesegError(f"--data {spec.name}: no folder {folder}; the voc layout needs {LAYOUT_NEEDS['voc']}")
    ids = _voc_ids(spec, split)
    images = {i: image_dir / f"{i}.jpg" for i in ids if (image_dir / f"{i}.jpg").is_file()}
    labels = {i: label_dir / f"{i}.png" for i in ids if (label_dir / f"{i}.png").is_file()}
    listing = _match(
        images, labels, image_dir, label_dir,
        label_hint=f"each id in ImageSets/Segmentation/{split}.txt needs SegmentationClass/<id>.png",
        image_hint=f"each id in ImageSets/Segmentation/{split}.txt needs JPEGImages/<id>.jpg",
    )
    absent = tuple(i for i in ids if i not in images and i not in labels)
    return replace(listing, ids_without_files=absent)


def _voc_ids(spec: DatasetSpec, split: str) -> list[str]:
    sets = spec.root / "ImageSets" / "Segmentation"
    path = sets / f"{split}.txt"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in sets.glob("*.txt")) + _derived_names(spec)) or "none"
        raise EdgesegError(f"--data {spec.name}: no split file {path} (splits here: {known}); pick one of those splits")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    return sorted(set(ids))


def _scan_cityscapes(spec: DatasetSpec, split: str) -> SplitListing:
    image_dir = _split_dir(spec, spec.root / "leftImg8bit", split)
    label_dir = _split_dir(spec, spec.root / "gtFine", split)
    images = {_city_key(p, image_dir, CITYSCAPES_IMAGE): p for p in image_dir.glob(f"*/*{CITYSCAPES_IMAGE}")}
    labels = {_city_key(p, label_dir, CITYSCAPES_LABEL): p for p in label_dir.glob(f"*/*{CITYSCAPES_LABEL}")}
    return _match(
        images, labels, image_dir, label_dir,
        label_hint=f"each <city>/<x>{CITYSCAPES_IMAGE} needs <city>/<x>{CITYSCAPES_LABEL}",
        image_hint=f"each <city>/<x>{CITYSCAPES_LABEL} needs <city>/<x>{CITYSCAPES_IMAGE} in {image_dir}",
    )


def _city_key(path: Path, folder: Path, suffix: str) -> str:
    return path.relative_to(folder).as_posix()[: -len(suffix)]


def _split_dir(spec: DatasetSpec, parent: Path, split: str) -> Path:
    folder = parent / split
    if folder.is_dir():
        return folder
    if not parent.is_dir():
        raise EdgesegError(
            f"--data {spec.name}: no folder {parent}; the {spec.layout} layout needs {LAYOUT_NEEDS[spec.layout]} "
            f"under {spec.root}"
        )
    known = ", ".join(sorted(p.name for p in parent.iterdir() if p.is_dir()) + _derived_names(spec)) or "none"
    raise EdgesegError(f"--data {spec.name}: no folder {folder} (splits here: {known}); pick one of those splits")


def _by_stem(spec: DatasetSpec, paths: Iterable[Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(paths):
        if path.name.startswith("."):
            continue
        if path.stem in found:
            raise EdgesegError(
                f"--data {spec.name}: {found[path.stem].name} and {path.name} in {path.parent} share a stem; "
                "keep one file per stem"
            )
        found[path.stem] = path
    return found


def _match(
    images: dict[str, Path], labels: dict[str, Path], image_dir: Path, label_dir: Path, label_hint: str, image_hint: str
) -> SplitListing:
    pairs = sorted((images[key], labels[key]) for key in images.keys() & labels.keys())
    lonely_images = sorted(images[key] for key in images.keys() - labels.keys())
    lonely_labels = sorted(labels[key] for key in labels.keys() - images.keys())
    return SplitListing(pairs, lonely_images, lonely_labels, image_dir, label_dir, label_hint, image_hint)


# --- derived splits -------------------------------------------------------------------
SHOW_SEQUENCES = 12


def derived_split(spec: DatasetSpec, split: str) -> SplitDef | None:
    return next((d for d in spec.splits if d.name == split), None)


def physical_splits(spec: DatasetSpec) -> list[str]:
    """The splits that exist as folders (folder, cityscapes) or split files (voc)."""
    if spec.layout == "voc":
        return sorted(p.stem for p in (spec.root / "ImageSets" / "Segmentation").glob("*.txt"))
    parent = spec.root / ("images" if spec.layout == "folder" else "leftImg8bit")
    return sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []


def _check_source(spec: DatasetSpec, derived: SplitDef) -> str:
    physical = physical_splits(spec)
    if physical and derived.source not in physical:
        raise EdgesegError(
            f"--data {spec.name}: split '{derived.name}' takes its frames from '{derived.source}', which is not a "
            f"split here (splits: {', '.join(physical)}); fix its 'from'"
        )
    return derived.source  # no split at all: the layout's own scan says which folder is missing


def _select(spec: DatasetSpec, derived: SplitDef, listing: SplitListing) -> SplitListing:
    lonely = [*listing.images_without_label, *listing.labels_without_image]
    frames = [frame_name(image) for image, _ in listing.pairs] + [frame_name(path) for path in lonely]
    sequences = sorted({sequence_of(frame) for frame in frames})
    known = set(sequences if derived.by_sequence else frames)
    unknown = [name for name in derived.names if name not in known]
    prefix = f"--data {spec.name}: split '{derived.name}'"
    if unknown and derived.by_sequence:
        raise EdgesegError(
            f"{prefix} names sequence(s) {shown(unknown, SHOW)} that '{derived.source}' does not have "
            f"(its sequences: {shown(sequences, SHOW_SEQUENCES)}); fix {derived.selector}"
        )
    if unknown:
        raise EdgesegError(
            f"{prefix} names {len(unknown)} frame(s) that '{derived.source}' does not have "
            f"(first: {shown(unknown, SHOW)}); list image file stems of that split in {derived.selector}"
        )

    def keep(path: Path) -> bool:
        return derived.keeps(frame_name(path))

    pairs = [pair for pair in listing.pairs if keep(pair[0])]
    if not pairs:
        raise EdgesegError(
            f"{prefix} ({derived.describe()}) names no frame; '{derived.source}' has sequences "
            f"{shown(sequences, SHOW_SEQUENCES) or 'none'}; keep at least one"
        )
    return replace(
        listing,
        pairs=pairs,
        images_without_label=[p for p in listing.images_without_label if keep(p)],
        labels_without_image=[p for p in listing.labels_without_image if keep(p)],
        ids_without_files=tuple(i for i in listing.ids_without_files if derived.keeps(i)),
    )


def check_train_val_splits(spec: DatasetSpec, train: str, val: str) -> str | None:
    """The rule for ``edgeseg train``: the training and validation splits share no frame, and no sequence when
    either is chosen by sequence. Two other splits that share a sequence are allowed (CamVid's own train and val);
    then, if the data set defines sequence splits (so its sequences mean something), a note says so."""
    if train == val:
        raise EdgesegError(f"--val-split {val}: is also --train-split; validate on a split the model does not train on")
    train_frames = {frame_name(image) for image, _ in list_pairs(spec, train)}
    val_frames = {frame_name(image) for image, _ in list_pairs(spec, val)}
    shared = sorted(train_frames & val_frames)
    if shared:
        raise EdgesegError(
            f"--val-split {val}: {len(shared)} of its frames are also in --train-split {train} "
            f"(first: {', '.join(shared[:SHOW])}); pick splits that share no frame (see [splits] in the dataset TOML)"
        )
    common = sorted({sequence_of(f) for f in train_frames} & {sequence_of(f) for f in val_frames})
    if not common:
        return None
    chosen = [d for d in (derived_split(spec, train), derived_split(spec, val)) if d is not None and d.by_sequence]
    if chosen:
        raise EdgesegError(
            f"--val-split {val}: shares sequence(s) {shown(common, SHOW)} with --train-split {train}, and "
            f"split '{chosen[0].name}' is chosen by sequence; exclude them from the training split"
        )
    by_sequence = [d.name for d in spec.splits if d.by_sequence]
    if by_sequence:
        return (
            f"note: --val-split {val} shares sequence(s) {shown(common, SHOW)} with --train-split {train}: "
            "neighbouring frames of one recording are near-duplicates, so validation flatters the model; "
            f"the dataset's sequence splits ({', '.join(by_sequence)}) hold recordings out"
        )
    return None


def _derived_names(spec: DatasetSpec) -> list[str]:
    return [f"{d.name} (derived)" for d in spec.splits]


