"""Where a split's (image, label) files are, for each supported folder layout."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgeseg.errors import EdgesegError
from edgeseg.images import IMAGE_SUFFIXES, is_image

if TYPE_CHECKING:
    from edgeseg.data.spec import DatasetSpec

CITYSCAPES_IMAGE = "_leftImg8bit.png"
CITYSCAPES_LABEL = "_gtFine_labelIds.png"
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


def list_pairs(spec: DatasetSpec, split: str) -> list[tuple[Path, Path]]:
    """The split's (image, label) paths, sorted; files without a partner are left out."""
    return scan_split(spec, split).pairs


def scan_split(spec: DatasetSpec, split: str) -> SplitListing:
    scanners = {"folder": _scan_folder, "voc": _scan_voc, "cityscapes": _scan_cityscapes}
    return scanners[spec.layout](spec, split)


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
        known = ", ".join(sorted(p.stem for p in sets.glob("*.txt"))) or "none"
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
    known = ", ".join(sorted(p.name for p in parent.iterdir() if p.is_dir())) or "none"
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
