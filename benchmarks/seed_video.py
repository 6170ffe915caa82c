"""The seed repository's video mode against `edgeseg run`, on the same clip and threads, in one run.

    python benchmarks/seed_video.py [--checkpoint models/reference/best.pt]
        [--model out/main/export/model.int8.onnx [more.onnx ...]] [--clip out/main/video/camvid_heldout_clip.mp4]
        [--threads 2] [--rounds 2]

The seed (github.com/bubbliiiing/deeplabv3-plus-pytorch) runs video with ``predict.py``'s
``mode = "video"`` loop and ``DeeplabV3.detect_image`` (deeplab.py). Re-implemented here step by
step with our PyTorch model from ``--checkpoint`` (``torch.set_num_threads(--threads)``): read a
frame, BGR -> RGB, PIL image, letterbox (``resize_image``: PIL bicubic onto a grey canvas), /255,
the network under ``torch.no_grad``, softmax over classes, crop the padding, ``cv2.resize``
(linear) of the probabilities to the frame's size, argmax, palette lookup, ``Image.blend`` at 0.7,
back to BGR, the fps text, ``VideoWriter.write`` (XVID, as the seed). The window
(``cv2.imshow``/``waitKey``) is left out: the benchmark has no screen, and neither side shows one.
Like the seed, the first frame is read once before the loop and not processed.

Against it: `edgeseg run` with each ``--model`` (ONNX) on the same clip to an mp4, with the same
threads. Frames per second on both sides are frames out over the time between the first and the
last frame out (`edgeseg run`'s own measure). Goal: >= 10x with the separable INT8 model.
Writes benchmarks/results/seed_video_cpu.json and the `seed_video` section of RESULTS.md.
Measure on a quiet machine: the ratio is of numbers taken in the same run, but another process
on the cores makes both noisy.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

from _results import ROOT, machine, markdown_table, save_json, update_section
from video_fps import default_clip, machine_line, shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models/reference/best.pt",
                        help="The PyTorch model the seed's loop runs (an edgeseg .pt).")
    parser.add_argument("--model", nargs="+", default=[str(ROOT / "out/main/export/model.int8.onnx")],
                        help="One or more ONNX models for `edgeseg run` (for example the seed-exact and the separable INT8).")
    parser.add_argument("--clip", type=Path, default=default_clip(), help="Default: scripts/main_job.sh's clip.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for path in [args.checkpoint, args.clip, *map(Path, args.model)]:
        if not path.is_file():
            raise SystemExit(f"error: {path} is missing; run scripts/main_job.sh (or edgeseg export) first")

    from edgeseg.video import RunOptions, run_session

    seed_fps: list[float] = []
    run_fps: dict[str, list[float]] = {str(m): [] for m in args.model}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):  # alternate, so that a change in the machine's load hits both sides
            seed_fps.append(seed_video_mode(args.checkpoint, args.clip, Path(work) / "seed.avi", args.threads))
            for model in args.model:
                options = RunOptions(threads=args.threads, exist_ok=True)
                report = run_session(model, str(args.clip), [str(Path(work) / "run.mp4")], options)
                run_fps[model].append(report["fps"])
    seed = statistics.median(seed_fps)
    rows = [{"model": shown(Path(m)), "run_fps": fps, "ratio": statistics.median(fps) / seed} for m, fps in run_fps.items()]
    report = {"checkpoint": shown(args.checkpoint), "clip": shown(args.clip), "threads": args.threads,
              "seed_fps": seed_fps, "runs": rows, "machine": machine(args.threads)}  # fmt: skip
    save_json("seed_video_cpu.json", report)
    markdown = render(report)
    update_section("seed_video", markdown)
    print(markdown)


def seed_video_mode(checkpoint: Path, clip: Path, out: Path, threads: int) -> float:
    """predict.py's video loop with detect_image, on our PyTorch model; frames per second out."""
    import cv2
    import numpy as np
    import torch
    from PIL import Image

    from edgeseg.model.checkpoint import load_model

    torch.set_num_threads(threads)
    net, meta = load_model(checkpoint)
    input_h, input_w = meta.input_size
    colors = np.array(meta.palette, np.uint8)  # RGB, as the seed's self.colors
    capture = cv2.VideoCapture(str(clip))
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"XVID"), 25.0, size)
    ok, frame = capture.read()  # the seed's check that the source opens; this frame is not processed
    if not ok:
        raise SystemExit(f"error: {clip}: OpenCV cannot read it")

    def detect_image(image: Image.Image) -> Image.Image:
        old_img = copy.deepcopy(image)
        original_h, original_w = np.array(image).shape[:2]
        image_data, nw, nh = resize_image(image, (input_w, input_h))
        image_data = np.expand_dims(np.transpose(np.array(image_data, np.float32) / 255.0, (2, 0, 1)), 0)
        with torch.no_grad():
            pr = net(torch.from_numpy(image_data))[0]
            pr = torch.nn.functional.softmax(pr.permute(1, 2, 0), dim=-1).cpu().numpy()
            top, left = (input_h - nh) // 2, (input_w - nw) // 2
            pr = pr[top : top + nh, left : left + nw]
            pr = cv2.resize(pr, (original_w, original_h), interpolation=cv2.INTER_LINEAR)
            pr = pr.argmax(axis=-1)
        seg_img = np.reshape(colors[np.reshape(pr, [-1])], [original_h, original_w, -1])
        return Image.blend(old_img, Image.fromarray(np.uint8(seg_img)), 0.7)

    fps, done = 0.0, []
    while True:
        t1 = time.time()
        ok, frame = capture.read()
        if not ok:
            break
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        frame = Image.fromarray(np.uint8(frame))
        frame = np.array(detect_image(frame))
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        fps = (fps + (1.0 / (time.time() - t1))) / 2
        frame = cv2.putText(frame, "fps= %.2f" % fps, (0, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, (0, 255, 0), 2)
        writer.write(frame)
        done.append(time.perf_counter())
    capture.release()
    writer.release()
    return (len(done) - 1) / (done[-1] - done[0]) if len(done) > 1 else 0.0


def resize_image(image, size: tuple[int, int]):
    """The seed's letterbox (utils/utils.py): bicubic resize, pasted on a grey (128) canvas."""
    from PIL import Image

    iw, ih = image.size
    w, h = size
    scale = min(w / iw, h / ih)
    nw, nh = int(iw * scale), int(ih * scale)
    image = image.resize((nw, nh), Image.BICUBIC)
    new_image = Image.new("RGB", size, (128, 128, 128))
    new_image.paste(image, ((w - nw) // 2, (h - nh) // 2))
    return new_image, nw, nh


def render(report: dict) -> str:
    seed = statistics.median(report["seed_fps"])
    rows = [["seed video mode (`predict.py`), PyTorch " + report["checkpoint"], f"{seed:.2f}", "1.0"]]
    rows += [[f"`edgeseg run` {row['model']}", f"{statistics.median(row['run_fps']):.2f}", f"**{row['ratio']:.1f}**"]
             for row in report["runs"]]  # fmt: skip
    return "\n".join([
        "## Video: `edgeseg run` against the seed's video mode — `python benchmarks/seed_video.py`",
        "",
        f"`{report['clip']}`, {report['threads']} threads on both sides (PyTorch's, ONNX Runtime's), medians of "
        f"alternating rounds in one run. {machine_line(report['machine'])}. The seed's loop is predict.py's video "
        "mode with detect_image (PIL letterbox, softmax, linear resize of the probabilities, argmax, PIL blend, "
        "XVID) on our PyTorch model; `edgeseg run` writes an mp4 with the overlay, legend and heads-up line. "
        "Goal: >= 10x with the separable INT8 model.",
        "",
        markdown_table(["loop", "FPS", "x seed"], rows),
    ])


if __name__ == "__main__":
    main()
