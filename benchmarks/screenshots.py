"""Screenshots of the live view and of the export report, as Debian's headless Chromium shows them.

    python benchmarks/screenshots.py [--model out/main/export/model.int8.onnx] [--bundle out/main/export]

The live page: `edgeseg run` with the model over the held-out clip, paced like a camera
(--realtime --loop), served on loopback; the page is captured after a few seconds of figures.
The report: the bundle's report.html opened from file://, the whole page.
Writes benchmarks/results/live_view_page.png and export_report.png (the browser helpers are the tests').
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import RESULTS_DIR, ROOT

sys.path.insert(0, str(ROOT / "tests"))
import browser as chromium  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from video_fps import default_clip  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from make_clip import make_clip  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "out/main/export/model.int8.onnx")
    parser.add_argument("--bundle", type=Path, default=ROOT / "out/main/export")
    parser.add_argument("--clip", type=Path, default=default_clip())
    parser.add_argument("--seconds", type=float, default=6.0, help="How long the page runs before the picture.")
    parser.add_argument("--camvid", type=Path, default=ROOT.parent / "shared" / "datasets" / "camvid")
    args = parser.parse_args()
    driver = chromium.start()
    try:
        with tempfile.TemporaryDirectory() as work:
            clip = args.clip if args.clip.is_file() else make_clip(args.camvid, Path(work) / "clip.mp4", 101, folder="train",
                                                                   sequence="0006R0")  # fmt: skip
            live_page(driver, args.model, clip, args.seconds, RESULTS_DIR / "live_view_page.png")
        whole_page(driver, (args.bundle / "report.html").resolve().as_uri(), RESULTS_DIR / "export_report.png")
    finally:
        chromium.stop(driver)


def live_page(driver, model: Path, clip: Path, seconds: float, out: Path) -> None:
    command = [sys.executable, "-m", "edgeseg", "run", str(model), "--source", str(clip), "--out", "http://127.0.0.1:0",
               "--no-show", "--realtime", "--loop", "--threads", "2"]  # fmt: skip
    run = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        url = next(line.split()[2] for line in run.stdout if line.startswith("live view: "))
        driver.set_window_size(1280, 720)
        driver.get(url)
        time.sleep(seconds)
        out.write_bytes(driver.get_screenshot_as_png())
        print(f"{out}: console errors {chromium.console_errors(driver)}")
    finally:
        run.terminate()
        run.wait(timeout=30)


def whole_page(driver, url: str, out: Path) -> None:
    driver.set_window_size(1280, 900)
    driver.get(url)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(height + 140, 12000))  # the window's frame takes part of its height
    time.sleep(0.5)
    out.write_bytes(driver.get_screenshot_as_png())
    print(f"{out}: {height} px tall, console errors {chromium.console_errors(driver)}")


if __name__ == "__main__":
    main()
