"""Calibration images: chosen once from the training split, recorded in a manifest, read back by export.

``edgeseg calib-data`` picks images greedily by class pixel coverage, so rare classes (poles, signs,
cyclists) are in the set that decides the INT8 ranges, and writes ``manifest.json``: the image
paths, each with its sha256, relative to the data set root. The images stay where they are.

``--calib`` in export takes such a manifest (its folder or the file itself), or a plain folder or
glob of images. Torch-free.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgeseg import __version__
from edgeseg.errors import EdgesegError
from edgeseg.fileio import file_sha256, write_json

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "edgeseg-calibration/1"
MIN_IMAGES = 32
EVALUATION_SPLITS = ("val", "test")


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

    if split in EVALUATION_SPLITS:
        raise EdgesegError(
            f"--split {split}: calibration images must not come from a split used to evaluate; use --split train"
        )
    if count < MIN_IMAGES:
        raise EdgesegError(f"--n {count}: calibrate on at least {MIN_IMAGES} images (256 is a good default)")
    dataset = SegmentationData(resolve_dataset(data), split)
    class_counts = dataset.image_class_counts()
    picks = select_by_coverage(class_counts, count)
    manifest_path = _manifest_path(out)
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


def _manifest_path(out: Path) -> Path:
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
    from edgeseg.images import images_in, list_images

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


def _from_manifest(manifest: Path, source: str) -> CalibrationSet:
    import json

    try:
        content = json.loads(manifest.read_text())
        entries = content["images"]
        roots = [manifest.parent / content["root"], Path(content["root_absolute"])]
    except (ValueError, KeyError, TypeError):
        raise EdgesegError(f"--calib {source}: {manifest} is not an edgeseg calibration manifest; remake it") from None
    root = next((r for r in roots if r.is_dir()), None)
    if root is None:
        raise EdgesegError(f"--calib {source}: the data set root {roots[0]} is missing; put the data set back or remake the manifest")
    images = []
    for entry in entries:
        image = root / entry["path"]
        if not image.is_file() or file_sha256(image) != entry["sha256"]:
            state = "is missing" if not image.is_file() else "has changed (sha256 differs)"
            raise EdgesegError(f"--calib {source}: {image} {state}; remake the manifest with `edgeseg calib-data`")
        images.append(image)
    _check_count(images, source)
    return CalibrationSet(tuple(images), source, file_sha256(manifest))


def _check_count(images: list[Path], source: str) -> None:
    if len(images) < MIN_IMAGES:
        raise EdgesegError(
            f"--calib {source}: {len(images)} readable images; calibration needs at least {MIN_IMAGES} "
            "(make a set with `edgeseg calib-data --data DATA --n 256`)"
        )


def _readable(path: Path) -> bool:
    return cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_8) is not None
