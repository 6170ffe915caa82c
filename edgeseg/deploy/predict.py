"""``edgeseg predict``: images segmented into files, on any backend (a device's too).

``<stem>.png`` holds the class ids as a palette PNG (viewers show the class colours, the pixel values
stay class ids); ``<stem>_overlay.jpg`` (and ``<stem>_side.jpg``) carry a legend.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeseg.core.fileio import prepare_output_dir
from edgeseg.core.images import list_images, read_image, write_image, write_label_png


@dataclass(frozen=True)
class PredictOptions:
    alpha: float = 0.5  # overlay opacity
    backend: str = "auto"
    device: str | None = None
    exist_ok: bool = False  # write into a non-empty --out folder
    side_by_side: bool = False  # also the image beside its colour mask


def run_predict(model: Path, source: str, out: Path, options: PredictOptions = PredictOptions()) -> list[Path]:
    """Segment an image, a folder or a glob into ``out``; returns the files written."""
    from edgeseg.runtime import Segmenter

    images = list_images(source)
    written = []
    with Segmenter.load(model, backend=options.backend, device=options.device) as segmenter:
        prepare_output_dir(out, options.exist_ok, flag="--out")
        for path in images:
            written += _segment_one(segmenter, path, out, options)
    print(f"{len(images)} images segmented into {out}")
    return written


def _segment_one(segmenter, path: Path, out: Path, options: PredictOptions) -> list[Path]:
    from edgeseg.runtime import visualize
    from edgeseg.runtime.preprocess import to_bgr8

    meta = segmenter.meta
    image = read_image(path)
    labels = segmenter.segment(image)
    written = [write_label_png(out / f"{path.stem}.png", labels, meta.palette)]
    overlay = segmenter.overlay(image, labels, options.alpha)
    visualize.draw_legend(overlay, labels, meta.classes, segmenter.lut_bgr)
    written.append(write_image(out / f"{path.stem}_overlay.jpg", overlay))
    if options.side_by_side:
        panel = visualize.side_by_side(to_bgr8(image), segmenter.colorize(labels))
        visualize.draw_legend(panel, labels, meta.classes, segmenter.lut_bgr)
        written.append(write_image(out / f"{path.stem}_side.jpg", panel))
    return written
