"""Network outputs to class ids: argmax of full-size logits, or of logits the model has not upsampled yet.

The model's last layer upsamples its 1/4-size logits bilinearly (align_corners=True) to the input
size, and post-processing takes the argmax. On a CPU that upsample is about a tenth of the INT8
model's time, and argmax then reads all of it again. ``upsample_argmax`` gives the same labels from
the small logits: bilinear interpolation is a weighted mean (non-negative weights) of a cell's
four corners, so where all four corners pick the same class (the first one on ties, as argmax),
every pixel inside the cell picks it too. Only the pixels of cells whose corners disagree need
their logits interpolated: about a tenth of a CamVid frame.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import cv2
import numpy as np


def argmax(logits: np.ndarray) -> np.ndarray:
    """Class ids (uint8) of one (C,H,W) logits array, the first class on ties as numpy's argmax.

    numpy's argmax over the strided class axis takes 5 to 7 ms at 11x360x480. Here one pass per
    class keeps the best score so far and, where a class beats it, takes that class's id: ids come
    in ascending order, so the new id is larger than any id already held and a maximum of
    (beats & id) with the labels sets it. 0.9 ms in OpenCV's vector code, whatever the scores.
    """
    if logits.dtype != np.float32 or logits.shape[0] > 255:
        return logits.argmax(axis=0).astype(np.uint8)
    logits = np.ascontiguousarray(logits)
    best = logits[0].copy()
    labels = np.zeros(best.shape, dtype=np.uint8)
    beats = np.empty(best.shape, dtype=np.uint8)
    for index in range(1, logits.shape[0]):
        plane = logits[index]
        cv2.compare(plane, best, cv2.CMP_GT, dst=beats)  # 255 where this class is strictly higher
        cv2.max(best, plane, dst=best)
        cv2.bitwise_and(beats, index, dst=beats)
        cv2.max(labels, beats, dst=labels)
    return labels


def to_labels(output: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Class ids (uint8) at ``size`` (H, W) from one network output: labels (H,W), logits (C,H,W) at
    ``size``, or smaller logits that the model's last layer would upsample (see ``upsample_argmax``)."""
    if output.ndim == 2:
        return output
    if output.shape[1:] == tuple(size):
        return argmax(output)
    return upsample_argmax(output, size)


class _Axis(NamedTuple):
    """Where the output positions of one axis fall between the input's, for align_corners=True."""

    first: np.ndarray  # (out,) the lower input index of each output position
    weight: np.ndarray  # (out,) float32 weight of the upper index
    cell_positions: np.ndarray  # (in - 1, most) the output positions inside each cell, the last one repeated


@lru_cache(maxsize=8)
def _axis(size_in: int, size_out: int) -> _Axis:
    if size_in < 2 or size_out < size_in:
        raise ValueError(f"upsample_argmax upsamples: got {size_in} -> {size_out} positions")
    position = np.arange(size_out, dtype=np.float64) * ((size_in - 1) / (size_out - 1))
    first = np.minimum(np.floor(position).astype(np.intp), size_in - 2)
    weight = (position - first).astype(np.float32)
    counts = np.bincount(first, minlength=size_in - 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    steps = np.minimum(np.arange(counts.max())[None, :], np.maximum(counts - 1, 0)[:, None])
    cell_positions = starts[:, None] + steps  # every cell holds at least one position when upsampling
    return _Axis(first, weight, cell_positions)


def upsample_argmax(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """argmax over classes of ``logits`` (C,h,w) upsampled bilinearly with align_corners=True to ``size``
    (H, W), as uint8 class ids, without upsampling every pixel.

    Equal to the argmax of the upsampled logits wherever a pixel's top two classes differ by more than
    float32 rounding: on CamVid val and the held-out drive, all but a few pixels in millions
    (benchmarks/early_exit.py). Pixels in cells whose four corners agree take that class; the rest are
    interpolated here, with the formula of a Resize node, in float32.
    """
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    rows, cols = _axis(logits.shape[1], size[0]), _axis(logits.shape[2], size[1])
    low = argmax(logits)
    labels = low.take(rows.first, axis=0).take(cols.first, axis=1)
    cell_rows, cell_cols = np.nonzero(_mixed_cells(low))
    if cell_rows.size:
        _interpolate_cells(logits, cell_rows, cell_cols, rows, cols, labels)
    return labels


def _mixed_cells(low: np.ndarray) -> np.ndarray:
    """(h-1, w-1) True where a cell's four corner labels are not all the same class."""
    corner = low[:-1, :-1]
    return ~((corner == low[1:, :-1]) & (corner == low[:-1, 1:]) & (corner == low[1:, 1:]))


def _interpolate_cells(
    logits: np.ndarray, cell_rows: np.ndarray, cell_cols: np.ndarray, rows: _Axis, cols: _Axis, labels: np.ndarray
) -> None:
    """Write the labels of every output pixel inside the given K cells, from their interpolated logits.
    The cells run along the last axis of every array, so that numpy's inner loops run over K; one output
    row of every cell at a time, because numpy broadcasts over two axes at once several times slower."""
    out_rows = np.ascontiguousarray(rows.cell_positions[cell_rows].T)  # (R, K): a cell spans R output rows at most
    out_cols = np.ascontiguousarray(cols.cell_positions[cell_cols].T)  # (S, K)
    weight_y, weight_x = rows.weight[out_rows], cols.weight[out_cols]
    flat = logits.reshape(logits.shape[0], -1)
    top_left_index = cell_rows * logits.shape[2] + cell_cols
    # take() returns C-ordered arrays, where fancy indexing would put K outermost in memory (3x slower below)
    top_left, top_right = (flat.take(top_left_index + shift, axis=1)[:, None, :] for shift in (0, 1))
    below = top_left_index + logits.shape[2]
    bottom_left, bottom_right = (flat.take(below + shift, axis=1)[:, None, :] for shift in (0, 1))  # (C, 1, K)
    top = top_left + (top_right - top_left) * weight_x  # (C, S, K)
    step = bottom_left + (bottom_right - bottom_left) * weight_x - top
    scores = np.empty((top.shape[0], len(weight_y)) + top.shape[1:], dtype=np.float32)  # (C, R, S, K)
    for row, weight in enumerate(weight_y):
        np.multiply(step, weight, out=scores[:, row])
        scores[:, row] += top
    ids = argmax(scores.reshape(scores.shape[0], -1, scores.shape[3])).reshape(scores.shape[1:])
    labels[out_rows[:, None, :], out_cols[None, :, :]] = ids
