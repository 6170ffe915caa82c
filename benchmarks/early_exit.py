"""Labels from the model without its last upsample, against labels from the whole graph, on a CPU.

    python benchmarks/early_exit.py [--model out/main/export/model.int8.onnx ...] [--split val heldout]
                                    [--threads 1] [--frames 40]

``edgeseg`` on a CPU (segment, eval, verify, bench end to end, run) runs the ONNX graph without its
last layer, the bilinear upsample (align_corners) of the 1/4-size logits, and takes the labels from
the small logits with ``edgeseg.runtime.labels.upsample_argmax``. For each model this measures:
- agreement: the fraction of pixels where those labels equal the argmax of the whole graph's output,
  over every frame of the splits (goal: 100 %; only pixels whose top two classes tie to float32
  rounding may differ, as the interpolation rounds differently from ONNX Runtime's Resize);
- CPU milliseconds of one thread per frame (the thread's own clock, medians over ``--frames``
  frames): the whole graph plus argmax, against the cut graph plus ``upsample_argmax``; and the
  share of output pixels that needed interpolating.
Writes benchmarks/results/early_exit_cpu.json and the `early_exit` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from _results import ROOT, machine, markdown_table, save_json, update_section

MODELS = ("out/main/export/model.fp32.onnx", "out/main/export/model.int8.onnx",
          "out/separable/export/model.fp32.onnx", "out/separable/export/model.int8.onnx")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=[str(ROOT / m) for m in MODELS])
    parser.add_argument("--data", default=f"camvid:{ROOT.parent / 'shared' / 'datasets' / 'camvid'}")
    parser.add_argument("--split", nargs="+", default=["val", "heldout"])
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (1: the thread clock is the frame's CPU).")
    parser.add_argument("--frames", type=int, default=40, help="Frames timed per model.")
    args = parser.parse_args()
    models = [Path(m) for m in args.model]
    for model in models:
        if not model.is_file():
            raise SystemExit(f"error: {model} is missing; run scripts/main_job.sh (and the separable export) first")
    images = _images(args.data, args.split)
    rows = [measure(model, images, args.threads, args.frames) for model in models]
    report = {"data": args.data, "splits": args.split, "frames": len(images), "threads": args.threads,
              "models": rows, "machine": machine(args.threads)}  # fmt: skip
    save_json("early_exit_cpu.json", report)
    markdown = render(report)
    update_section("early_exit", markdown)
    print(markdown)


def _images(data: str, splits: list[str]) -> list[np.ndarray]:
    from edgeseg.data import SegmentationData, resolve_dataset

    spec = resolve_dataset(data)
    images = []
    for split in splits:
        frames = SegmentationData(spec, split)
        images += [cv2.cvtColor(frames.read_image(i), cv2.COLOR_RGB2BGR) for i in range(len(frames))]
    return images


def measure(model: Path, images: list[np.ndarray], threads: int, timed_frames: int) -> dict:
    from edgeseg.runtime import Segmenter
    from edgeseg.runtime.labels import argmax

    agree = total = interpolated = 0
    whole_ms, cut_ms = [], []
    with Segmenter.load(model, threads=threads) as segmenter:
        if getattr(segmenter.backend, "early_session", None) is None:
            raise SystemExit(f"error: {model}: ONNX Runtime opened it without the cut graph (is onnx installed?)")
        size = segmenter.meta.input_size
        for index, image in enumerate(images):
            segmenter.prepare([image])
            whole, whole_labels = _thread_ms(lambda: argmax(segmenter.run(1)[0]))
            cut, (small, cut_labels) = _thread_ms(lambda: _cut_labels(segmenter, size))
            if 3 <= index < 3 + timed_frames:  # the first frames warm up
                whole_ms.append(whole)
                cut_ms.append(cut)
            agree += int(np.count_nonzero(whole_labels == cut_labels))
            total += whole_labels.size
            interpolated += _interpolated_pixels(small, size)
    whole, cut = statistics.median(whole_ms), statistics.median(cut_ms)
    return {"model": _shown(model), "agreement_pct": 100 * agree / total, "pixels": total, "differing": total - agree,
            "whole_graph_and_argmax_cpu_ms": whole, "cut_graph_and_upsample_argmax_cpu_ms": cut,
            "ratio": cut / whole, "interpolated_pct": 100 * interpolated / total}  # fmt: skip


def _cut_labels(segmenter, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The cut graph's small logits, and the labels taken from them."""
    from edgeseg.runtime.labels import to_labels

    small = segmenter.run(1, for_labels=True)[0]
    return small, to_labels(small, size)


def _thread_ms(call):
    begin = time.thread_time()
    value = call()
    return 1000 * (time.thread_time() - begin), value


def _interpolated_pixels(logits: np.ndarray, size: tuple[int, int]) -> int:
    """Output pixels in cells whose four corners disagree (the ones upsample_argmax interpolates)."""
    from edgeseg.runtime.labels import _axis, _mixed_cells, argmax

    low = argmax(logits)
    mixed = _mixed_cells(low)
    rows, cols = _axis(low.shape[0], size[0]), _axis(low.shape[1], size[1])
    return int(mixed[rows.first][:, cols.first].sum())


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def render(report: dict) -> str:
    rows = [[r["model"], f"{r['agreement_pct']:.5f} ({r['differing']} of {r['pixels'] / 1e6:.1f} M differ)",
             f"{r['whole_graph_and_argmax_cpu_ms']:.2f}",
             f"{r['cut_graph_and_upsample_argmax_cpu_ms']:.2f}", f"**{r['ratio']:.2f}**", f"{r['interpolated_pct']:.1f}"]
            for r in report["models"]]  # fmt: skip
    info = report["machine"]
    return "\n".join([
        "## Labels without the model's last upsample — `python benchmarks/early_exit.py`",
        "",
        f"On a CPU edgeseg runs the ONNX graph without its last layer (the bilinear upsample of the 1/4-size logits) "
        f"and takes the labels from the small logits (`edgeseg/runtime/labels.py`): where a cell's four corners pick "
        f"the same class, every pixel between them does too, so only the other cells are interpolated. Agreement "
        f"with the argmax of the whole graph's output over all {report['frames']} frames of "
        f"{' and '.join(report['splits'])} ({report['data'].split(':')[0]}); CPU ms a frame of one thread "
        f"(ONNX Runtime with {report['threads']} thread{'s' if report['threads'] > 1 else ''}, medians). "
        f"{info['summary']}; CPU flags {' '.join(info['cpu_flags']) or 'none of note'}.",
        "",
        markdown_table(["model", "labels agree %", "whole graph + argmax, CPU ms", "cut graph + upsample_argmax, CPU ms",
                        "ratio", "pixels interpolated %"], rows),  # fmt: skip
    ])


if __name__ == "__main__":
    main()
