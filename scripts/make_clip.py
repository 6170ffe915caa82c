"""Write a 480x360 video clip from CamVid frames (for `edgeseg run` demos, tests and benchmarks).

    python scripts/make_clip.py [--camvid ../shared/datasets/camvid] [--frames 120] [--fps 10] --out clip.avi
    python scripts/make_clip.py --folder train --sequence 0006R0 --out heldout.mp4   # the held-out drive
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_clip(camvid: Path, out: Path, frames: int = 120, fps: float = 10.0, folder: str = "val",
              sequence: str = "") -> Path:
    import cv2

    paths = sorted((camvid / "images" / folder).glob(f"{sequence}*.jpg"))[:frames]
    if not paths:
        raise SystemExit(f"error: {camvid}/images/{folder} has no {sequence + '_' if sequence else ''}*.jpg frames; "
                         "pass --camvid, --folder or --sequence")
    codec = "mp4v" if out.suffix.lower() == ".mp4" else "MJPG"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial{out.suffix}")  # OpenCV picks the container from the suffix
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*codec), fps, (480, 360))
    for path in paths:
        writer.write(cv2.resize(cv2.imread(str(path)), (480, 360)))
    writer.release()
    partial.replace(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--camvid", type=Path, default=ROOT.parent / "shared" / "datasets" / "camvid")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--folder", default="val", help="Image folder under images/ (val, train, ...).")
    parser.add_argument("--sequence", default="", help="Only frames whose name starts with this (a drive, e.g. 0006R0).")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(f"clip: {make_clip(args.camvid, args.out, args.frames, args.fps, args.folder, args.sequence)}")


if __name__ == "__main__":
    main()
