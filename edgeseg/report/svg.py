"""Charts as inline SVG text: per-class bars and a confusion matrix with every cell's number."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from edgeseg.report.html import esc

SERIES_COLOURS = ("#4a5568", "#2b6cb0", "#38a169", "#d69e2e", "#c53030", "#805ad5", "#dd6b20")
LABEL_WIDTH = 130
BAR_WIDTH = 520


def class_bars(classes: Sequence[str], series: Sequence[Tuple[str, Sequence[Optional[float]]]], title: str) -> str:
    """Horizontal bars per class, one per series (fractions 0..1, drawn in percent; None: n/a)."""
    bar, gap = 11, 9
    group = len(series) * bar + gap
    width = LABEL_WIDTH + BAR_WIDTH + 70
    legend, x, y = [], LABEL_WIDTH, 4
    for index, (name, _) in enumerate(series):
        step = 24 + 7 * len(name)
        if x + step > width and x > LABEL_WIDTH:  # the next legend entry goes on a new line
            x, y = LABEL_WIDTH, y + 16
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        legend.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{colour}"/>'
                      f'<text x="{x + 14}" y="{y + 9}" font-size="11">{esc(name)}</text>')  # fmt: skip
        x += step
    legend_height = y + 18
    height = legend_height + len(classes) * group + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}"><title>{esc(title)}</title>', *legend]  # fmt: skip
    for tick in range(0, 101, 20):
        tx = LABEL_WIDTH + BAR_WIDTH * tick / 100
        parts.append(f'<line x1="{tx:.1f}" y1="{legend_height}" x2="{tx:.1f}" y2="{height - 20}" stroke="#e2e5e9"/>'
                     f'<text x="{tx:.1f}" y="{height - 6}" font-size="10" text-anchor="middle">{tick} %</text>')  # fmt: skip
    for row, class_name in enumerate(classes):
        top = legend_height + row * group
        parts.append(f'<text x="{LABEL_WIDTH - 8}" y="{top + group / 2:.1f}" font-size="12" text-anchor="end" '
                     f'dominant-baseline="middle">{esc(class_name)}</text>')  # fmt: skip
        for index, (name, values) in enumerate(series):
            value = values[row]
            y = top + index * bar
            colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
            length = 0.0 if value is None else BAR_WIDTH * max(0.0, min(1.0, value))
            text = "n/a" if value is None else f"{100 * value:.2f}"
            parts.append(f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{bar - 2}" fill="{colour}">'
                         f'<title>{esc(class_name)}, {esc(name)}: {text}</title></rect>'
                         f'<text x="{LABEL_WIDTH + length + 4:.1f}" y="{y + bar - 3}" font-size="9">{text}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def confusion(matrix: np.ndarray, classes: Sequence[str], rows_are: str, columns_are: str) -> str:
    """Row-normalised heat map; each cell shows its share of the row in percent, its pixel count on hover."""
    counts = np.asarray(matrix, dtype=np.float64)[: len(classes), : len(classes)]
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n = len(classes)
    cell, left, top = 46, LABEL_WIDTH, 110
    width, height = left + n * cell + 10, top + n * cell + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}"><title>confusion matrix: rows {esc(rows_are)}, columns {esc(columns_are)}</title>',
             f'<text x="{left + n * cell / 2}" y="12" font-size="12" text-anchor="middle">{esc(columns_are)} →</text>',
             f'<text x="12" y="{top + n * cell / 2}" font-size="12" text-anchor="middle" '
             f'transform="rotate(-90 12 {top + n * cell / 2})">{esc(rows_are)} →</text>']  # fmt: skip
    for index, name in enumerate(classes):
        cx = left + index * cell + cell / 2
        parts.append(f'<text x="{cx}" y="{top - 6}" font-size="11" transform="rotate(-50 {cx} {top - 6})">{esc(name)}</text>'
                     f'<text x="{left - 6}" y="{top + index * cell + cell / 2 + 4}" font-size="11" '
                     f'text-anchor="end">{esc(name)}</text>')  # fmt: skip
    for row in range(n):
        for column in range(n):
            share = shares[row, column]
            fill, ink = _blue(share)
            x, y = left + column * cell, top + row * cell
            parts.append(f'<g><rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" stroke="#fff"/>'
                         f'<text x="{x + cell / 2}" y="{y + cell / 2 + 4}" font-size="10" text-anchor="middle" '
                         f'fill="{ink}">{cell_text(share)}</text><title>{esc(classes[row])} → {esc(classes[column])}: '
                         f'{int(counts[row, column])} pixels</title></g>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def cell_text(share: float) -> str:
    """A cell's number: its share of the row in percent (one decimal; "0" for none at all)."""
    return "0" if share == 0 else f"{100 * share:.1f}"


def _blue(share: float) -> Tuple[str, str]:
    """Fill from white to dark blue, and a text colour that stays readable on it."""
    low, high = np.array([247, 251, 255]), np.array([8, 48, 107])
    rgb: List[int] = [int(v) for v in low + (high - low) * min(max(share, 0.0), 1.0)]
    return "#%02x%02x%02x" % tuple(rgb), ("#ffffff" if share > 0.5 else "#1d2127")
