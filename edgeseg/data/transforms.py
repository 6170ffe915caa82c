"""Training augmentation with numpy and OpenCV: scale, pad, crop, flip, colour jitter. Deterministic given the rng."""

from __future__ import annotations

import cv2
import numpy as np

BRIGHTNESS = 0.25  # factor drawn from 1 +- this (times the jitter strength)
CONTRAST = 0.25
SATURATION = 0.3
HUE_DEGREES = 9.0
MAX_JITTER = 3.0  # strength at which the saturation factor's range, 1 +- 0.9, nears 0


def train_augment(
    image: np.ndarray,
    label: np.ndarray,
    crop_hw: tuple[int, int],
    rng: np.random.Generator,
    ignore_index: int,
    scale_range: tuple[float, float] = (0.5, 2.0),
    pad_value: int = 128,
    jitter: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Random scale, pad to crop_hw (image with pad_value, label with ignore_index), random crop, h-flip, jitter.

    ``image`` is RGB uint8 HxWx3, ``label`` uint8 HxW; returns the same dtypes at ``crop_hw``.
    ``jitter`` scales the colour jitter's ranges (1: the defaults above; 0: no colour change).
    """
    _check_inputs(image, label, crop_hw)
    image, label = random_scale(image, label, rng, scale_range)
    image, label = pad_to(image, label, crop_hw, pad_value, ignore_index)
    image, label = random_crop(image, label, crop_hw, rng)
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    if jitter > 0:
        image = colour_jitter(image, rng, jitter)
    return np.ascontiguousarray(image), np.array(label, dtype=np.uint8, copy=True)


def random_scale(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, scale_range: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    scale = rng.uniform(*scale_range)
    height, width = label.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return image, label
    return (
        cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
        cv2.resize(label, size, interpolation=cv2.INTER_NEAREST),
    )


def pad_to(
    image: np.ndarray, label: np.ndarray, crop_hw: tuple[int, int], pad_value: int, ignore_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom and right up to at least crop_hw; the label's padding is ignored by the loss."""
    bottom = max(0, crop_hw[0] - label.shape[0])
    right = max(0, crop_hw[1] - label.shape[1])
    if not bottom and not right:
        return image, label
    image = cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=(pad_value,) * 3)
    label = cv2.copyMakeBorder(label, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=ignore_index)
    return image, label


def random_crop(
    image: np.ndarray, label: np.ndarray, crop_hw: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    top = int(rng.integers(0, label.shape[0] - crop_hw[0] + 1))
    left = int(rng.integers(0, label.shape[1] - crop_hw[1] + 1))
    window = (slice(top, top + crop_hw[0]), slice(left, left + crop_hw[1]))
    return image[window], label[window]


def colour_jitter(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Brightness, contrast, saturation and hue changes, their ranges scaled by ``strength``; RGB uint8 in and out."""
    if not 0 <= strength <= MAX_JITTER:
        raise ValueError(f"jitter strength must be in [0, {MAX_JITTER}], got {strength}")
    brightness = rng.uniform(1 - BRIGHTNESS * strength, 1 + BRIGHTNESS * strength)
    contrast = rng.uniform(1 - CONTRAST * strength, 1 + CONTRAST * strength)
    saturation = rng.uniform(1 - SATURATION * strength, 1 + SATURATION * strength)
    hue_shift = rng.uniform(-HUE_DEGREES * strength, HUE_DEGREES * strength)
    pixels = image.astype(np.float32)
    mean = pixels.mean()
    pixels = ((pixels - mean) * contrast + mean) * brightness
    rgb = np.clip(pixels, 0, 255) / 255.0
    # Float HSV: H in degrees [0, 360), S and V in [0, 1]; no 8-bit rounding of the hue.
    hsv = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + hue_shift) % 360.0
    hsv[..., 1] = np.clip(hsv[..., 1] * saturation, 0.0, 1.0)
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _check_inputs(image: np.ndarray, label: np.ndarray, crop_hw: tuple[int, int]) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 HxWx3, got {image.dtype} {image.shape}")
    if label.dtype != np.uint8 or label.shape != image.shape[:2]:
        raise ValueError(f"label must be uint8 {image.shape[:2]}, got {label.dtype} {label.shape}")
    if len(crop_hw) != 2 or min(crop_hw) < 1:
        raise ValueError(f"crop_hw must be two positive ints, got {crop_hw}")
