"""Image -> network input, and network output -> labels at the image's size. numpy + OpenCV only."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.meta import Preprocess


@dataclass(frozen=True)
class Placement:
    """Where the resized image sits inside the network input (letterbox bookkeeping)."""

    top: int
    left: int
    height: int
    width: int
    source_hw: tuple[int, int]


def to_bgr8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Any OpenCV-read image (grey, BGRA, 16-bit) as 8-bit 3-channel BGR."""
    if image is None or image.size == 0:
        raise EdgesegError(f"{name}: empty image; pass a readable, non-empty picture")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def placement_for(source_hw: tuple[int, int], input_hw: tuple[int, int], mode: str) -> Placement:
    src_h, src_w = source_hw
    dst_h, dst_w = input_hw
    if mode == "resize":
        return Placement(0, 0, dst_h, dst_w, source_hw)
    scale = min(dst_w / src_w, dst_h / src_h)
    new_w, new_h = int(src_w * scale), int(src_h * scale)
    return Placement((dst_h - new_h) // 2, (dst_w - new_w) // 2, new_h, new_w, source_hw)


class Preprocessor:
    """Fills one preallocated NCHW float32 buffer per batch slot; no per-frame allocation of the input."""

    def __init__(self, spec: Preprocess, input_hw: tuple[int, int], max_batch: int = 1) -> None:
        self.spec = spec
        self.input_hw = input_hw
        self.buffer = np.empty((max_batch, 3, *input_hw), dtype=np.float32)
        self._canvas = np.empty((*input_hw, 3), dtype=np.uint8)
        # Folding scale, mean and std into one multiply-add per channel.
        std = np.asarray(spec.std, dtype=np.float32)
        self._gain = [np.float32(g) for g in spec.scale / std]
        self._offset = [np.float32(o) for o in -np.asarray(spec.mean, dtype=np.float32) / std]
        # Which BGR plane feeds each input channel.
        self._planes = (2, 1, 0) if spec.channel_order == "RGB" else (0, 1, 2)

    def __call__(self, image_bgr: np.ndarray, slot: int = 0) -> Placement:
        """Letterbox (or resize) the image and write it, normalised, into buffer row ``slot``.

        One plane at a time (split, then multiply into the float buffer): half the time of a
        strided HWC-to-CHW copy, and the channel order costs nothing.
        """
        place = placement_for(image_bgr.shape[:2], self.input_hw, self.spec.resize)
        planes = cv2.split(self._letterbox(image_bgr, place))
        out = self.buffer[slot]
        for channel, plane in enumerate(self._planes):
            np.multiply(planes[plane], self._gain[channel], out=out[channel], dtype=np.float32)  # numpy 1.x would pick float16
            if self._offset[channel]:
                out[channel] += self._offset[channel]
        return place

    def _letterbox(self, image: np.ndarray, place: Placement) -> np.ndarray:
        """The image itself when it already has the input's size; else the canvas with the image placed in it."""
        if image.shape[:2] == self._canvas.shape[:2]:
            return image
        canvas = self._canvas
        if (place.height, place.width) != canvas.shape[:2]:
            canvas[:] = self.spec.pad_value
        region = canvas[place.top : place.top + place.height, place.left : place.left + place.width]
        if image.shape[:2] == (place.height, place.width):
            np.copyto(region, image)
        else:
            cv2.resize(image, (place.width, place.height), dst=region, interpolation=cv2.INTER_CUBIC)
        return canvas


def labels_to_source(labels: np.ndarray, place: Placement) -> np.ndarray:
    """Crop the letterbox padding off network-size labels and map them back (nearest) to the image size."""
    crop = labels[place.top : place.top + place.height, place.left : place.left + place.width]
    src_h, src_w = place.source_hw
    if crop.shape == (src_h, src_w):
        return np.ascontiguousarray(crop)
    return cv2.resize(crop, (src_w, src_h), interpolation=cv2.INTER_NEAREST)
