"""What a video frame looks like on screen or on disk: overlay, mask or side by side; legend; heads-up line."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.meta import ModelMeta
from edgeseg.runtime import visualize

MODES = ("overlay", "mask", "side-by-side")
FONT = visualize.FONT


class Renderer:
    def __init__(
        self,
        meta: ModelMeta,
        mode: str = "overlay",
        alpha: float = 0.5,
        legend: bool = True,
        hud: bool = True,
        ignore_classes: Sequence[str | int] = (),
    ) -> None:
        if mode not in MODES:
            raise EdgesegError(f"--mode {mode}: choose one of {', '.join(MODES)}")
        if not 0.0 <= alpha <= 1.0:
            raise EdgesegError(f"--alpha {alpha}: use a value from 0 to 1")
        self.meta, self.mode, self.alpha, self.legend, self.hud = meta, mode, alpha, legend, hud
        self.lut = visualize.palette_lut_bgr(meta.palette)
        self.hidden = _class_ids(ignore_classes, meta.classes)

    def render(self, image: np.ndarray, labels: np.ndarray, hud_text: str | None = None) -> np.ndarray:
        colours = visualize.colorize(labels, self.lut)
        shown = self._drawn(labels)
        if self.mode == "mask":
            out = np.where(shown[..., None], colours, 0).astype(np.uint8) if shown is not None else colours
        else:
            out = cv2.addWeighted(image, 1.0 - self.alpha, colours, self.alpha, 0.0)
            if shown is not None:
                out = np.where(shown[..., None], out, image)
            if self.mode == "side-by-side":
                out = visualize.side_by_side(image, out)
        if self.legend:
            self._draw_legend(out, labels)
        if self.hud and hud_text:
            _text(out, hud_text, (8, 20), scale=0.5)
        return out

    def _drawn(self, labels: np.ndarray) -> np.ndarray | None:
        """Pixels whose class is drawn, or None when every class is."""
        if not self.hidden:
            return None
        return ~np.isin(labels, list(self.hidden))

    def _draw_legend(self, out: np.ndarray, labels: np.ndarray) -> None:
        visualize.draw_legend(out, labels, self.meta.classes, self.lut, self.hidden, top=28)  # below the heads-up line


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float = 0.55) -> None:
    """White text on a dark box (an outline drawn with a thicker stroke comes out wider in OpenCV 5)."""
    (width, height), baseline = cv2.getTextSize(text, FONT, scale, 1)
    x, y = origin
    box = image[max(y - height - 3, 0) : y + baseline + 1, max(x - 3, 0) : x + width + 3]
    box //= 3
    cv2.putText(image, text, origin, FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _class_ids(names_or_ids: Sequence[str | int], classes: Sequence[str]) -> set[int]:
    ids = set()
    lowered = [c.lower() for c in classes]
    for item in names_or_ids:
        text = str(item).strip()
        if text.isdigit() and int(text) < len(classes):
            ids.add(int(text))
        elif text.lower() in lowered:
            ids.add(lowered.index(text.lower()))
        else:
            raise EdgesegError(f"--ignore-class {text}: not a class of this model; choose from {', '.join(classes)}")
    return ids
