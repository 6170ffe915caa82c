"""Image files: which suffixes count as images, listing them, reading and writing them. numpy + OpenCV only."""

from __future__ import annotations

import glob
import io
from pathlib import Path
from typing import List, Sequence

import cv2
import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import write_bytes

# The one definition of what edgeseg reads as an image (data sets, calibration, predict, video folders).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def images_in(folder: Path) -> List[Path]:
    """The image files directly inside ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if is_image(p))


def list_images(source: str) -> List[Path]:
    """An image file, a folder of images, or a glob, sorted."""
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = images_in(path)
        if not found:
            raise EdgesegError(f"{source}: folder has no images ({', '.join(IMAGE_SUFFIXES)}); pass a folder of pictures")
        return found
    matches = sorted(Path(p) for p in glob.glob(source) if is_image(Path(p)))
    if not matches:
        raise EdgesegError(f"{source}: no such image, folder or glob match; check the path")
    return matches


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise EdgesegError(f"{path}: cannot be read as an image; pass a valid JPEG/PNG file")
    return image


def write_image(path: Path, image: np.ndarray) -> Path:
    """Encode in memory, then write under a temporary name and rename: no half-written files."""
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise EdgesegError(f"{path}: OpenCV cannot encode {path.suffix} files; use .png or .jpg")
    return write_bytes(path, encoded.tobytes())


def write_label_png(path: Path, labels: np.ndarray, palette: Sequence[Sequence[int]]) -> Path:
    """Class ids as a palette PNG (PNG colour type 3, as Pascal VOC's labels): each pixel's value is its class id,
    and image viewers show the model's colours. Pillow and ``edgeseg.data`` read the ids back; OpenCV expands the
    palette to BGR colours, so read class ids with Pillow: ``numpy.asarray(PIL.Image.open(path))``."""
    from PIL import Image

    colours = [int(v) for rgb in palette[:256] for v in rgb]
    picture = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    picture.putpalette(colours + [0] * (768 - len(colours)))  # ids beyond the palette (ignore, 255) are black
    encoded = io.BytesIO()
    picture.save(encoded, format="PNG", optimize=False)
    return write_bytes(path, encoded.getvalue())
