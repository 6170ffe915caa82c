"""PNG charts for evaluation and training runs. matplotlib is imported lazily (Agg backend).

Every writer renders to a temporary file beside the target and renames it into place,
so a reader never sees a half-written PNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgeseg.core.fileio import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ANNOTATE_MAX_CLASSES = 25  # above this, per-cell numbers are unreadable


def save_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: str | Path, subject: str = "") -> None:
    """Row-normalised confusion heatmap (rows = ground truth), every cell annotated when readable (an empty
    cell says 0). ``subject``, e.g. "best.pt on camvid heldout", completes the title."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(class_names)
    if matrix.shape != (n, n):
        raise ValueError(f"confusion matrix shape {matrix.shape} does not match {n} class names")
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)

    size = min(max(4.0, 0.45 * n + 2.5), 40.0)
    fig = _new_figure((size + 1.0, size))
    ax = fig.add_subplot()
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of ground-truth row")
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels=[str(c) for c in class_names], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, labels=[f"{c} (none)" if not rows[i, 0] else str(c) for i, c in enumerate(class_names)],
                  fontsize=8)  # a row of zeros for a class absent from the ground truth says so
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(_titled("Confusion matrix (row-normalised)", subject))
    if n <= ANNOTATE_MAX_CLASSES:
        _annotate_cells(ax, normalised)
    _save(fig, path)


def save_iou_bars(iou: np.ndarray, class_names: Sequence[str], path: str | Path, subject: str = "") -> None:
    """Per-class IoU bars in percent; NaN classes drawn at 0 and marked n/a; mIoU as a line; ``subject`` in the title."""
    iou = np.asarray(iou, dtype=np.float64)
    n = len(class_names)
    if iou.shape != (n,):
        raise ValueError(f"IoU has shape {iou.shape}, expected ({n},) for {n} class names")
    absent = np.isnan(iou)
    heights = np.where(absent, 0.0, iou) * 100

    fig = _new_figure((min(max(6.0, 0.4 * n + 2.0), 40.0), 4.5))
    ax = fig.add_subplot()
    positions = np.arange(n)
    ax.bar(positions, heights, color="tab:blue")
    for x in positions[absent]:
        ax.text(x, 1.0, "n/a", ha="center", va="bottom", fontsize=7, color="gray", rotation=90)
    for x in positions[~absent]:  # the value on each bar: a 0 bar is as readable as a tall one
        ax.text(x, heights[x] + 1.0, f"{heights[x]:.1f}", ha="center", va="bottom", fontsize=7)
    if not absent.all():
        miou = float(np.nanmean(iou)) * 100
        ax.axhline(miou, color="tab:red", linestyle="--", label=f"mIoU {miou:.2f}%")
        ax.legend(loc="upper right")
    ax.set_xticks(positions, labels=[str(c) for c in class_names], rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("IoU (%)")
    ax.set_title(_titled("Per-class IoU", subject))
    if absent.any():
        fig.text(0.01, 0.01, "n/a: class absent from both ground truth and prediction (not in mIoU)",
                 fontsize=7, color="gray")
    _save(fig, path)


def save_training_curves(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Loss and val mIoU per epoch, plus a learning-rate panel when any row has one."""
    train_loss = _series(rows, "train_loss")
    val_loss = _series(rows, "val_loss")
    val_miou = _series(rows, "val_miou")
    lr = _series(rows, "lr")
    panels = 3 if lr[0] else 2

    fig = _new_figure((4.5 * panels, 4.0))
    axes = fig.subplots(1, panels)
    _plot_series(axes[0], [(train_loss, "train"), (val_loss, "val")], "loss")
    _plot_series(axes[1], [((val_miou[0], [100 * v for v in val_miou[1]]), "val")], "mIoU (%)")
    if panels == 3:
        _plot_series(axes[2], [(lr, "lr")], "learning rate")
        if min(lr[1]) > 0 and max(lr[1]) / min(lr[1]) > 10:
            axes[2].set_yscale("log")
    _save(fig, path)


def _new_figure(size: tuple[float, float]) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    # A bare Figure (not pyplot) is never registered globally, so nothing leaks between calls.
    return Figure(figsize=size, layout="constrained")


def _save(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _titled(title: str, subject: str) -> str:
    return f"{title}\n{subject}" if subject else title


def _annotate_cells(ax: Any, values: np.ndarray) -> None:
    """Every cell's share: "0" where nothing fell, "<.01" for a share that would round to 0.00."""
    for (row, col), value in np.ndenumerate(values):
        text = "0" if value == 0 else "<.01" if value < 0.005 else f"{value:.2f}"
        color = "white" if value > 0.5 else "black"
        ax.text(col, row, text, ha="center", va="center", fontsize=7, color=color)


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) for the rows where `key` holds a finite number; rows from CSV may hold ''."""
    epochs, values = [], []
    for index, row in enumerate(rows):
        value = _as_float(row.get(key))
        if value is not None:
            epoch = _as_float(row.get("epoch"))
            epochs.append(epoch if epoch is not None else float(index + 1))
            values.append(value)
    return epochs, values


def _as_float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plot_series(ax: Any, series: list[tuple[tuple[list[float], list[float]], str]], ylabel: str) -> None:
    drawn = False
    for (epochs, values), label in series:
        if epochs:
            ax.plot(epochs, values, marker="o" if len(epochs) < 30 else None, markersize=3, label=label)
            drawn = True
    if drawn:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
