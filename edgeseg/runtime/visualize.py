"""Label maps to pictures: palette lookup, overlay blend, side-by-side, the class legend."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
LEGEND_MIN_PIXELS = 25  # a class with fewer pixels is speckle: the legend counts it on its last row instead
SWATCH_BORDER = (200, 200, 200)  # light grey on the legend's darkened panel: white and black classes both show


def palette_lut_bgr(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """256-entry BGR lookup table; ids beyond the palette (ignore, 255) are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for index, (r, g, b) in enumerate(palette[:256]):
        lut[index] = (b, g, r)
    return lut


def colorize(labels: np.ndarray, lut_bgr: np.ndarray) -> np.ndarray:
    """BGR picture of a uint8 label map: one single-channel cv2.LUT per colour channel, merged.

    At 360x480 that is 0.2 ms, against 0.4 for one LUT on a 3-channel copy of the labels and 1.8
    for numpy indexing.
    """
    if labels.dtype != np.uint8:
        return lut_bgr[labels]
    return cv2.merge([cv2.LUT(labels, lut_bgr[:, channel]) for channel in range(3)])


def overlay(image_bgr: np.ndarray, labels: np.ndarray, lut_bgr: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    return cv2.addWeighted(image_bgr, 1.0 - alpha, colorize(labels, lut_bgr), alpha, 0.0)


def side_by_side(*images: np.ndarray) -> np.ndarray:
    return np.concatenate(images, axis=1)


def draw_legend(image: np.ndarray, labels: np.ndarray, classes: Sequence[str], lut_bgr: np.ndarray,
                hidden: Collection[int] = (), top: int = 8, min_pixels: int = LEGEND_MIN_PIXELS) -> list[str]:  # fmt: skip
    """The classes in ``labels`` with at least ``min_pixels`` pixels, top right of ``image`` (drawn in place):
    a bordered swatch and the name each, on a darkened panel, sized to the picture. When classes are
    present with fewer pixels, a last row says how many and under what size, so none is left out unsaid.
    ``hidden``: class ids never listed (``run --ignore-class``, which are not drawn either). Returns the rows' texts."""
    counts = class_pixels(labels, len(classes))
    listed = [c for c in range(len(classes)) if counts[c] >= max(min_pixels, 1) and c not in hidden]
    small = [c for c in range(len(classes)) if 0 < counts[c] < min_pixels and c not in hidden]
    rows: list[tuple[str, int | None]] = [(classes[c], c) for c in listed]
    if small:
        rows.append((f"+{len(small)} under {min_pixels} px", None))
    if not rows:
        return []
    unit = max(1.0, min(image.shape[:2]) / 360)  # 1 at 360x480; larger pictures get a larger legend
    scale, swatch, step, pad = 0.45 * unit, round(14 * unit), round(18 * unit), round(4 * unit)
    thickness = max(1, round(unit))
    width = swatch + pad + max(cv2.getTextSize(text, FONT, scale, thickness)[0][0] for text, _ in rows)
    x0, y0 = image.shape[1] - width - 2 * pad, top
    panel = image[y0 : y0 + len(rows) * step + pad, max(x0 - pad, 0) : image.shape[1]]
    panel //= 3
    for row, (text, class_id) in enumerate(rows):
        y = y0 + pad + row * step
        if class_id is not None:
            cv2.rectangle(image, (x0, y), (x0 + swatch, y + swatch), tuple(int(v) for v in lut_bgr[class_id]), -1)
            cv2.rectangle(image, (x0, y), (x0 + swatch, y + swatch), SWATCH_BORDER, 1)
        cv2.putText(image, text, (x0 + swatch + pad, y + swatch - max(1, swatch // 7)), FONT, scale, (255, 255, 255),
                    thickness, cv2.LINE_AA)  # fmt: skip
    return [text for text, _ in rows]


def class_pixels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each class 0..num_classes-1 in a label map (ids beyond, such as ignore 255, not counted).
    OpenCV's histogram: 0.35 ms at 360x480, a few times faster than numpy's bincount."""
    if labels.dtype == np.uint8 and labels.ndim == 2:
        counts = cv2.calcHist([np.ascontiguousarray(labels)], [0], None, [256], [0, 256]).ravel()
    else:
        counts = np.bincount(labels.ravel().astype(np.int64), minlength=256)
    return counts[:num_classes].astype(np.int64)
