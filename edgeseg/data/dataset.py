"""One split of a data set: its (image, label) pairs, checked once when opened, read as numpy arrays."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image

from edgeseg.data.layouts import SplitListing, scan_split
from edgeseg.data.spec import DatasetSpec
from edgeseg.core.errors import EdgesegError

SHOW = 3  # offending files named in one error message
CLASS_WEIGHTINGS = ("none", "median-freq", "sqrt-median-freq", "log")
T = TypeVar("T")
R = TypeVar("R")


class _ReadError(Exception):
    """A file that cannot be used, with the reason; turned into one EdgesegError for the whole split."""


@dataclass(frozen=True)
class _Inspection:
    image: Path
    label: Path
    image_wh: tuple[int, int] | None
    label_wh: tuple[int, int] | None
    raw_counts: np.ndarray | None  # bincount of raw label values, 256 entries
    errors: tuple[str, ...]


class SegmentationData:
    """A split of a data set. ``pairs`` may be shortened by the caller (e.g. to limit a run)."""

    def __init__(self, spec: DatasetSpec, split: str, check: bool = True) -> None:
        self.spec, self.split = spec, split
        listing = scan_split(spec, split)
        self.pairs: list[tuple[Path, Path]] = list(listing.pairs)
        self._lut = None if spec.label_map is None else np.asarray(spec.label_map, dtype=np.uint8)
        self._raw_counts: dict[Path, np.ndarray] = {}
        self._pixels: dict[Path, int] = {}
        if check:
            self._check(listing)
        elif not self.pairs:
            raise self._empty_error(listing)

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"SegmentationData({self.spec.name!r}, {self.split!r}, {len(self)} pairs, root={self.spec.root})"

    # --- reading ------------------------------------------------------------------
    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(image RGB uint8 HxWx3, label uint8 HxW with label_map applied)."""
        image, label = self.read_image(index), self.read_label(index)
        if image.shape[:2] != label.shape:
            raise EdgesegError(
                f"--data {self.spec.name}: {self._rel(self.pairs[index][1])} is {_wh(label.shape[::-1])} but its "
                f"image is {_wh(image.shape[1::-1])}; each label must match its image's size"
            )
        return image, label

    def read_image(self, index: int) -> np.ndarray:
        return self._load(self.pairs[index][0], load_image)

    def read_label(self, index: int) -> np.ndarray:
        raw = self._load(self.pairs[index][1], lambda path: load_label(path, self.spec.layout))
        return raw if self._lut is None else self._lut[raw]

    def _load(self, path: Path, loader: Callable[[Path], np.ndarray]) -> np.ndarray:
        try:
            return loader(path)
        except _ReadError as err:
            message = f"--data {self.spec.name}: cannot read {self._rel(path)} ({err}); replace the file"
            raise EdgesegError(message) from err

    # --- statistics ---------------------------------------------------------------
    def class_pixel_counts(self) -> np.ndarray:
        """Pixels of each class over all labels of the split (ignored pixels excluded), int64 (num_classes,)."""
        return self._mapped_counts().sum(axis=0)

    def image_class_counts(self) -> np.ndarray:
        """Per image, pixels of each class (ignored pixels excluded): int64 (len(self), num_classes)."""
        return self._mapped_counts()

    def median_frequency_weights(self) -> np.ndarray:
        """Median-frequency class weights (Eigen & Fergus 2015; SegNet), float32 (num_classes,).

        freq_c = pixels of class c / all pixels (ignored ones included) of the labels in which c appears;
        weight_c = median(freq over present classes) / freq_c. A class that never appears gets weight 0:
        it contributes nothing to the loss on this split anyway, and 0 keeps the vector finite.
        """
        counts = self._mapped_counts()
        pixels = np.array([self._pixels[label] for _, label in self.pairs], dtype=np.int64)
        present = counts > 0
        denominator = (present * pixels[:, None]).sum(axis=0)
        seen = denominator > 0
        weights = np.zeros(self.spec.num_classes, dtype=np.float64)
        if seen.any():
            freq = counts.sum(axis=0)[seen] / denominator[seen]
            weights[seen] = np.median(freq) / freq
        return weights.astype(np.float32)

    def sqrt_median_frequency_weights(self) -> np.ndarray:
        """The square root of the median-frequency weights: rare classes still count more, big ones less pushed down."""
        return np.sqrt(self.median_frequency_weights()).astype(np.float32)

    def log_frequency_weights(self, c: float = 1.02) -> np.ndarray:
        """ENet's weights (Paszke et al. 2016): 1 / ln(c + p), p the class's share of labelled pixels, float32.

        Bounded by 1 / ln(c) (about 50.5 for c = 1.02), so very rare classes cannot take over the loss.
        A class that never appears gets weight 0, as in median_frequency_weights.
        """
        counts = self.class_pixel_counts().astype(np.float64)
        weights = np.zeros(self.spec.num_classes, dtype=np.float64)
        seen = counts > 0
        if seen.any():
            weights[seen] = 1.0 / np.log(c + counts[seen] / counts.sum())
        return weights.astype(np.float32)

    def class_weights(self, mode: str) -> np.ndarray | None:
        """Loss weights by ``mode`` (one of CLASS_WEIGHTINGS); None for "none"."""
        if mode not in CLASS_WEIGHTINGS:
            raise ValueError(f"unknown class weighting {mode!r}; choose one of {CLASS_WEIGHTINGS}")
        makers = {
            "median-freq": self.median_frequency_weights,
            "sqrt-median-freq": self.sqrt_median_frequency_weights,
            "log": self.log_frequency_weights,
        }
        return makers[mode]() if mode in makers else None

    def _mapped_counts(self) -> np.ndarray:
        """Per label, class pixel counts after label_map: int64 (len(pairs), num_classes)."""
        missing = [pair for pair in self.pairs if pair[1] not in self._raw_counts]
        for item in _parallel_map(self._inspect_label_only, missing):
            if item.errors:
                raise EdgesegError(f"--data {self.spec.name}: {item.errors[0]}; replace the file")
        rows = [self._class_counts(self._raw_counts[label]) for _, label in self.pairs]
        return np.stack(rows) if rows else np.zeros((0, self.spec.num_classes), dtype=np.int64)

    def _class_counts(self, raw: np.ndarray) -> np.ndarray:
        mapped = raw if self._lut is None else np.bincount(self._lut, weights=raw, minlength=256).astype(np.int64)
        return mapped[: self.spec.num_classes]

    # --- checks when opened -------------------------------------------------------
    def _check(self, listing: SplitListing) -> None:
        self._check_listing(listing)
        items = _parallel_map(self._inspect, self.pairs)
        self._raise_if(
            [f"{e}" for item in items for e in item.errors],
            ("file cannot be read", "files cannot be read"),
            "replace or remove them",
        )
        self._raise_if(
            [
                f"{self._rel(i.label)} {_wh(i.label_wh)} vs image {_wh(i.image_wh)}"
                for i in items
                if i.image_wh != i.label_wh
            ],
            ("label differs in size from its image", "labels differ in size from their image"),
            "each label must have its image's width x height",
        )
        self._check_values(items)

    def _check_listing(self, listing: SplitListing) -> None:
        name = self.spec.name
        if listing.ids_without_files:
            raise EdgesegError(
                f"--data {name}: {len(listing.ids_without_files)} ids of split '{self.split}' have neither image nor "
                f"label (first: {', '.join(listing.ids_without_files[:SHOW])}); {listing.image_hint}"
            )
        if listing.images_without_label:
            raise EdgesegError(
                f"--data {name}: {_count(listing.images_without_label, 'image')} no label in {listing.label_dir} "
                f"(first: {_names(listing.images_without_label)}); {listing.label_hint}"
            )
        if listing.labels_without_image:
            raise EdgesegError(
                f"--data {name}: {_count(listing.labels_without_image, 'label')} no image in {listing.image_dir} "
                f"(first: {_names(listing.labels_without_image)}); {listing.image_hint}"
            )
        if not self.pairs:
            raise self._empty_error(listing)

    def _check_values(self, items: Sequence[_Inspection]) -> None:
        classes, ignore = self.spec.num_classes, self.spec.ignore_index
        valid = np.zeros(256, dtype=bool)
        valid[:classes] = True
        valid[ignore] = True
        if self._lut is not None:
            valid = valid[self._lut]  # a raw value is valid when it maps to a class or to ignore
        other = f"values other than classes 0..{classes - 1} and ignore {ignore}"
        problems = []
        for item in items:
            bad = np.flatnonzero((item.raw_counts > 0) & ~valid)
            if bad.size:
                shown = ", ".join(map(str, bad[:5])) + (", ..." if bad.size > 5 else "")
                problems.append(f"{self._rel(item.label)} has {shown}")
        self._raise_if(
            problems,
            (f"label holds {other}", f"labels hold {other}"),
            "fix those labels, or map raw values with [label_map] in a dataset TOML",
        )

    def _raise_if(self, problems: list[str], what: tuple[str, str], fix: str) -> None:
        """Raise for ``problems`` (one entry per file); ``what`` is (singular, plural) wording."""
        if problems:
            first = "; ".join(problems[:SHOW])
            wording = what[0] if len(problems) == 1 else what[1]
            raise EdgesegError(
                f"--data {self.spec.name}: {len(problems)} {wording} in split '{self.split}' of {self.spec.root} "
                f"(first: {first}); {fix}"
            )

    def _empty_error(self, listing: SplitListing) -> EdgesegError:
        return EdgesegError(
            f"--data {self.spec.name}: split '{self.split}' has no (image, label) pairs in {listing.image_dir}; "
            "add data or pick another split"
        )

    # --- per-file inspection (runs in threads) -------------------------------------
    def _inspect(self, pair: tuple[Path, Path]) -> _Inspection:
        image, label = pair
        errors: list[str] = []
        try:
            image_wh = _header_size(image)
        except _ReadError as err:
            image_wh = None
            errors.append(f"{self._rel(image)} ({err})")
        labelled = self._inspect_label_only(pair)
        return _Inspection(image, label, image_wh, labelled.label_wh, labelled.raw_counts, (*errors, *labelled.errors))

    def _inspect_label_only(self, pair: tuple[Path, Path]) -> _Inspection:
        image, label = pair
        try:
            raw = load_label(label, self.spec.layout)
        except _ReadError as err:
            return _Inspection(image, label, None, None, None, (f"{self._rel(label)} ({err})",))
        counts = np.bincount(raw.ravel(), minlength=256).astype(np.int64)
        self._raw_counts[label] = counts
        self._pixels[label] = raw.size
        return _Inspection(image, label, None, (raw.shape[1], raw.shape[0]), counts, ())

    def _rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.spec.root).as_posix()
        except ValueError:
            return str(path)


def load_image(path: Path) -> np.ndarray:
    """Any 8/16-bit grey, RGB or RGBA file as RGB uint8 HxWx3 (EXIF orientation ignored, as for labels)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise _ReadError("not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_label(path: Path, layout: str) -> np.ndarray:
    """Raw label values, uint8 HxW. Palette PNGs give their palette index, never colours."""
    raw = None if layout == "voc" else cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2:
        # cv2 expands palette PNGs to BGR; Pillow keeps the index. Also the path for voc labels.
        raw = _pillow_label(path)
    if raw.dtype != np.uint8:
        if raw.max(initial=0) > 255 or raw.min(initial=0) < 0:
            raise _ReadError(f"{raw.dtype} values above 255; labels must be 8-bit class ids")
        raw = raw.astype(np.uint8)
    return raw


def _pillow_label(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "1", "I", "I;16", "I;16B", "I;16L"):
                raise _ReadError(f"{image.mode} image; labels must be single-channel or palette PNGs of class ids")
            return np.asarray(image)
    except (OSError, SyntaxError, ValueError) as err:
        raise _ReadError("not a readable image") from err


def _header_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file header only; Pillow decodes nothing here."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError) as err:
        raise _ReadError("not a readable image") from err


def _parallel_map(func: Callable[[T], R], items: Iterable[T]) -> list[R]:
    # OpenCV's decoders release the GIL, so threads give real speed-up on label reads.
    items = list(items)
    if len(items) < 8:
        return [func(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(func, items))


def _wh(size: tuple[int, int] | None) -> str:
    return "?" if size is None else f"{size[0]}x{size[1]}"


def _count(paths: Sequence[Path], noun: str) -> str:
    return f"1 {noun} has" if len(paths) == 1 else f"{len(paths)} {noun}s have"


def _names(paths: Sequence[Path]) -> str:
    return ", ".join(p.name for p in paths[:SHOW])
