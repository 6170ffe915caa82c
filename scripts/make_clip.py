"""Write a 480x360 video clip from CamVid val frames (for `edgeseg run` demos, tests and benchmarks).

    python scripts/make_clip.py [--camvid ../shared/datasets/camvid] [--frames 120] [--fps 10] --out clip.avi
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_clip(camvid: Path, out: Path, frames: int = 120, fps: float = 10.0) -> Path:
    import cv2

    paths = sorted((camvid / "images" / "val").glob("*.jpg"))[:frames]
    if not paths:
        raise SystemExit(f"error: {camvid}/images/val has no frames; pass --camvid")
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
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print(f"clip: {make_clip(args.camvid, args.out, args.frames, args.fps)}")


if __name__ == "__main__":
    main()
