"""The pictures people look at, made by the real commands with the reference model on the held-out drive.

    python benchmarks/pictures.py [--data ../shared/datasets/camvid]

Writes benchmarks/results/pictures/: `predict`'s class-id palette PNG, its overlay and side-by-side JPEGs
(legend top right), `eval`'s confusion matrix and per-class IoU on the whole held-out split (titled with
model and split), and two frames of `edgeseg run` (legend and heads-up line: the first frame, before any
FPS is measured, and a later one). Nothing here is timed; look at them after a change to the drawing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import RESULTS_DIR, ROOT

FRAME = "0006R0_f02130"  # a held-out frame with ten classes in view, one of them under the legend's pixel threshold
RUN_FRAMES = ("0006R0_f02040", "0006R0_f02070", "0006R0_f02100", "0006R0_f02130")


def edgeseg(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "edgeseg", *map(str, args)], cwd=ROOT, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/camvid"), help="CamVid root")
    parser.add_argument("--model", default=str(ROOT / "models/reference/best.pt"))
    args = parser.parse_args()
    out = RESULTS_DIR / "pictures"
    images = Path(args.data) / "images" / "train"  # the held-out drive 0006R0 lies in CamVid's train folder
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        edgeseg("predict", args.model, images / f"{FRAME}.jpg", "--out", work / "predict", "--side-by-side")
        edgeseg("eval", args.model, "--data", f"camvid:{args.data}", "--split", "heldout", "--json", work / "eval" / "eval.json")
        frames = work / "frames"
        frames.mkdir()
        for name in RUN_FRAMES:
            shutil.copy(images / f"{name}.jpg", frames / f"{name}.jpg")
        edgeseg("run", args.model, "--source", frames, "--out", work / "run", "--no-show", "--threads", "2", "--streams", "1")
        out.mkdir(parents=True, exist_ok=True)
        for path in sorted((work / "predict").iterdir()):
            shutil.copy(path, out / f"predict_{path.name}")
        for name in ("confusion_matrix.png", "per_class_iou.png"):
            shutil.copy(work / "eval" / name, out / f"eval_heldout_{name}")
        shutil.copy(work / "run" / "frame_000000.png", out / "run_first_frame.png")
        shutil.copy(work / "run" / f"frame_{len(RUN_FRAMES) - 1:06d}.png", out / "run_later_frame.png")
    print(f"pictures: {out}")


if __name__ == "__main__":
    main()
