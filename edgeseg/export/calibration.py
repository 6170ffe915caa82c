"""Calibration images: chosen once from the training split, recorded in a manifest, read back by export.

``edgeseg calib-data`` picks images greedily by class pixel coverage, so rare classes (poles, signs,
cyclists) are in the set that decides the INT8 ranges, and writes ``manifest.json``: the image
paths, each with its sha256, relative to the data set root. The images stay where they are.

``--calib`` in export takes such a manifest (its folder or the file itself), or a plain folder or
glob of images. Torch-free.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from edgeseg import __version__
from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import file_sha256, write_json
from edgeseg.core.meta import json_type_name, short_json

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "edgeseg-calibration/1"
MIN_IMAGES = 32
EVALUATION_SPLITS = ("val", "test")
# where each data set layout keeps a split's images, relative to the root (voc: one folder, split by id lists)
LAYOUT_IMAGE_DIRS = {"folder": "images/{split}", "cityscapes": "leftImg8bit/{split}", "voc": "JPEGImages"}
SHA256_PATTERN = re.compile("[0-9a-fA-F]{64}")
SPLIT_PATTERN = re.compile("[A-Za-z0-9][A-Za-z0-9_.-]*")
REMAKE = "remake the manifest with `edgeseg calib-data`"


@dataclass(frozen=True)
class CalibrationSet:
    """Images to calibrate on, and where they came from."""

    images: tuple[Path, ...]
    source: str  # what the user passed, for messages
    manifest_sha256: str | None  # None for a plain folder or glob

    def __len__(self) -> int:
        return len(self.images)

    def read(self, limit: int | None = None) -> Iterator[np.ndarray]:
        """BGR uint8 images, in manifest order."""
        for path in self.images[:limit]:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise EdgesegError(f"--calib {self.source}: cannot read {path}; replace or remove it")
            yield image


# --- choosing -----------------------------------------------------------------------
def select_by_coverage(class_counts: np.ndarray, count: int) -> list[int]:
    """Greedy picks that maximise sum_c log(1 + covered_c / expected_c); returns image indices in pick order.

    expected_c is what a random sample of ``count`` images would hold of class c, so a class
    that a random sample would nearly miss gains the most from each image that shows it.
    The objective is submodular, so greedy picks are within (1 - 1/e) of the best set.
    """
    counts = class_counts.astype(np.float64)
    count = min(count, len(counts))
    expected = np.maximum(counts.sum(axis=0) * count / max(len(counts), 1), 1.0)
    covered = np.zeros(counts.shape[1])
    remaining = np.ones(len(counts), dtype=bool)
    picks: list[int] = []
    for _ in range(count):
        gains = np.log1p((covered + counts) / expected).sum(axis=1) - np.log1p(covered / expected).sum()
        gains[~remaining] = -np.inf
        best = int(np.argmax(gains))  # ties go to the lowest index: deterministic
        picks.append(best)
        remaining[best] = False
        covered += counts[best]
    return picks


def make_calibration_manifest(data: str, split: str, count: int, out: Path) -> Path:
    """``edgeseg calib-data``: choose ``count`` images of DATA's ``split`` and write OUT/manifest.json."""
    from edgeseg.data import SegmentationData, resolve_dataset

    if is_evaluation_split(split):
        raise EdgesegError(
            f"--split {split}: calibration images must not come from a split used to evaluate; use --split train"
        )
    if count < MIN_IMAGES:
        raise EdgesegError(f"--n {count}: calibrate on at least {MIN_IMAGES} images (256 is a good default)")
    dataset = SegmentationData(resolve_dataset(data), split)
    class_counts = dataset.image_class_counts()
    picks = select_by_coverage(class_counts, count)
    manifest_path = manifest_file(out)
    manifest = _manifest(data, dataset, picks, class_counts, manifest_path.parent)
    write_json(manifest_path, manifest)
    return manifest_path


def _manifest(data: str, dataset, picks: list[int], class_counts: np.ndarray, folder: Path) -> dict:
    root = dataset.spec.root.resolve()
    chosen = class_counts[picks].sum(axis=0)
    share = chosen / np.maximum(class_counts.sum(axis=0), 1)
    return {
        "format": MANIFEST_FORMAT,
        "edgeseg_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": data,
        "dataset": dataset.spec.name,
        "split": dataset.split,
        "image_split": _image_split(dataset.spec, dataset.split),
        "layout": dataset.spec.layout,
        "selection": "greedy by class pixel coverage (sum of log(1 + covered / expected))",
        "root": os.path.relpath(root, folder.resolve()),
        "root_absolute": str(root),
        "num_images": len(picks),
        "class_pixels": {name: int(n) for name, n in zip(dataset.spec.classes, chosen)},
        "class_share_of_split": {name: round(float(s), 4) for name, s in zip(dataset.spec.classes, share)},
        "images": [_entry(dataset.pairs[i][0], root) for i in picks],
    }


def _entry(path: Path, root: Path) -> dict:
    return {"path": path.resolve().relative_to(root).as_posix(), "sha256": file_sha256(path)}


def manifest_file(out: Path) -> Path:
    """The manifest ``calib-data --out OUT`` writes: OUT itself when it ends in .json, else OUT/manifest.json."""
    return out if out.suffix == ".json" else out / MANIFEST_NAME


# --- reading ------------------------------------------------------------------------
def load_calibration_set(calib: str | Path) -> CalibrationSet:
    """A manifest (its folder or file), or a folder or glob of images; at least MIN_IMAGES readable ones."""
    source = str(calib)
    path = Path(calib)
    manifest = path if path.suffix == ".json" else path / MANIFEST_NAME
    if manifest.is_file():
        return _from_manifest(manifest, source)
    if path.suffix == ".json":
        raise EdgesegError(f"--calib {source}: no such manifest; make one with `edgeseg calib-data`")
    from edgeseg.core.images import images_in, list_images

    if path.is_dir():
        images = images_in(path)
    else:
        try:
            images = list_images(source)
        except EdgesegError:
            raise EdgesegError(
                f"--calib {source}: no such manifest, image folder or glob; make a set with `edgeseg calib-data`"
            ) from None
    readable = [p for p in images if _readable(p)]
    _check_count(readable, source)
    return CalibrationSet(tuple(readable), source, None)


def _image_split(spec, split: str) -> str:
    """The physical split whose folder holds ``split``'s images: itself, or a derived split's ``from``."""
    derived = {d.name: d.source for d in spec.splits}
    return derived.get(split, split)


def _from_manifest(manifest: Path, source: str) -> CalibrationSet:
    """The manifest's images, after its schema and every path are checked, before any image is opened.

    A path must stay inside the data set root and inside the image folder of the split the manifest
    records, which must not be one used to evaluate: so a manifest cannot calibrate on val or test
    images, nor open (or tell apart missing and present) files elsewhere.
    """
    where = f"--calib {source}: {manifest}"
    content = _read_manifest(manifest, where)
    root = _data_root(manifest, content, where)
    layout = content.get("layout") or _guess_layout(root, where)
    image_split = content.get("image_split", content["split"])  # a derived split's images live in its source's folder
    folder = (root / LAYOUT_IMAGE_DIRS[layout].format(split=image_split)).resolve()
    images = [_contained(root, folder, entry["path"], index, image_split, where)
              for index, entry in enumerate(content["images"])]  # fmt: skip
    allowed = _split_members(root, layout, image_split, where)
    for index, image in enumerate(images):
        if allowed is not None and image.stem not in allowed:
            shown = short_json(content["images"][index]["path"])
            raise _refused(where, f"images[{index}] {shown} is not in split '{image_split}'")
    for index, (image, entry) in enumerate(zip(images, content["images"])):
        if not image.is_file() or file_sha256(image) != entry["sha256"].lower():
            state = "is missing" if not image.is_file() else "has changed (sha256 differs)"
            raise _refused(where, f"images[{index}] {image} {state}")
    _check_count(images, source)
    return CalibrationSet(tuple(images), source, file_sha256(manifest))


def _read_manifest(manifest: Path, where: str) -> dict[str, Any]:
    """The manifest's JSON, checked against the schema; reads no other file."""
    try:
        content = json.loads(manifest.read_text())
    except (OSError, ValueError, RecursionError) as err:
        reason = str(err).splitlines()[0][:100] if str(err) else type(err).__name__
        raise _refused(where, f"not an edgeseg calibration manifest ({reason})") from None
    if not isinstance(content, dict):
        raise _refused(where, f"holds a JSON {json_type_name(content)}, not a calibration manifest object")
    _check_fields(content, where)
    _check_entries(content["images"], where)
    return content


def _check_fields(content: dict[str, Any], where: str) -> None:
    if content.get("format") != MANIFEST_FORMAT:
        raise _refused(where, f"format {short_json(content.get('format'))} is not {MANIFEST_FORMAT}")
    for key in ("root", "split"):
        if not isinstance(content.get(key), str) or not content[key] or "\0" in content[key]:
            raise _refused(where, f"'{key}' {short_json(content.get(key))} must be a non-empty string")
    absolute = content.get("root_absolute", "")
    if not isinstance(absolute, str) or "\0" in absolute:
        raise _refused(where, f"'root_absolute' {short_json(absolute)} must be a string")
    _check_split_name(content["split"], where)
    if "image_split" in content:
        if not isinstance(content["image_split"], str):
            raise _refused(where, f"'image_split' {short_json(content['image_split'])} must be a split name such as train")
        _check_split_name(content["image_split"], where)
    if "layout" in content and content["layout"] not in LAYOUT_IMAGE_DIRS:
        raise _refused(where, f"layout {short_json(content['layout'])} must be one of {', '.join(LAYOUT_IMAGE_DIRS)}")
    entries = content.get("images")
    if not isinstance(entries, list) or not entries:
        raise _refused(where, f"'images' {short_json(entries)} must be a non-empty list of {{path, sha256}}")
    if "num_images" in content and content["num_images"] != len(entries):
        raise _refused(where, f"num_images {short_json(content['num_images'])} but {len(entries)} entries")


def _check_entries(entries: list[Any], where: str) -> None:
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        path = _check_entry(entry, index, where)
        if path in seen:
            raise _refused(where, f"images[{index}] repeats {short_json(path)}; each image once")
        seen.add(path)


def _check_entry(entry: Any, index: int, where: str) -> str:
    """One images[] entry: an object with a relative POSIX path that stays down, and a sha256; its normal form."""
    if not isinstance(entry, dict):
        raise _refused(where, f"images[{index}] is a {json_type_name(entry)}, not an object with path and sha256")
    path, digest = entry.get("path"), entry.get("sha256")
    if not isinstance(path, str) or not path.strip():
        raise _refused(where, f"images[{index}] has no path (a string relative to the data set root)")
    if not isinstance(digest, str) or not SHA256_PATTERN.fullmatch(digest):
        raise _refused(where, f"images[{index}] sha256 {short_json(digest)} is not 64 hex digits")
    pure = PurePosixPath(path)
    if "\0" in path or "\\" in path or pure.is_absolute() or ".." in pure.parts or path.startswith("~"):
        raise _refused(where, f"images[{index}] path {short_json(path)} must be relative to the data set root, "
                              "with / separators and no '..'")  # fmt: skip
    return pure.as_posix()


def _refused(where: str, what: str) -> EdgesegError:
    return EdgesegError(f"{where}: {what}; {REMAKE}")


def _check_split_name(split: str, where: str) -> None:
    if not SPLIT_PATTERN.fullmatch(split):
        raise _refused(where, f"split {short_json(split)} must be a plain split name such as train")
    if is_evaluation_split(split):
        raise EdgesegError(f"{where}: split {short_json(split)} is used to evaluate; calibrate on the train split "
                           "(`edgeseg calib-data --split train`)")  # fmt: skip


def _data_root(manifest: Path, content: dict[str, Any], where: str) -> Path:
    roots = [manifest.parent / content["root"]]
    if isinstance(content.get("root_absolute"), str):
        roots.append(Path(content["root_absolute"]))
    root = next((r for r in roots if r.is_dir()), None)
    if root is None:
        raise EdgesegError(f"{where}: the data set root {roots[0]} is missing; put the data set back or {REMAKE}")
    return root.resolve()


def _contained(root: Path, folder: Path, path: str, index: int, split: str, where: str) -> Path:
    """root/path resolved (symlinks followed, nothing opened), refused unless inside the split's image folder."""
    try:
        image = (root / path).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        image = root  # refused below, the same way as any other path that leaves the folder
    if not (_inside(image, root) and _inside(image, folder)):
        shown = folder.relative_to(root).as_posix() if _inside(folder, root) else str(folder)
        raise _refused(where, f"images[{index}] {short_json(path)} leads outside {shown}/ of the data set root "
                              f"(split '{split}')")  # fmt: skip
    return image


def _guess_layout(root: Path, where: str) -> str:
    """For manifests written before the layout was recorded: the layout whose image folder the root has."""
    for name, pattern in LAYOUT_IMAGE_DIRS.items():
        if (root / pattern.split("/")[0]).is_dir():
            return name
    folders = ", ".join(d.split("/")[0] + "/" for d in LAYOUT_IMAGE_DIRS.values())
    raise _refused(where, f"the data set root {root} has none of {folders}")


def _split_members(root: Path, layout: str, split: str, where: str) -> set[str] | None:
    """Image stems of the split where one folder holds every split (voc); None where the folder is the split."""
    if layout != "voc":
        return None
    listing = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    try:
        return {line.split()[0] for line in listing.read_text().splitlines() if line.strip()}
    except (OSError, UnicodeDecodeError):
        raise _refused(where, f"no readable split file {listing} for split '{split}'") from None


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return path != folder


def is_evaluation_split(split: str) -> bool:
    """val, test and any split that holds them (trainval, val2017, test_a, ...)."""
    return any(name in split.lower() for name in EVALUATION_SPLITS)


def _check_count(images: list[Path], source: str) -> None:
    if len(images) < MIN_IMAGES:
        raise EdgesegError(
            f"--calib {source}: {len(images)} readable images; calibration needs at least {MIN_IMAGES} "
            "(make a set with `edgeseg calib-data --data DATA --n 256`)"
        )


def _readable(path: Path) -> bool:
    return cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None
