"""`edgeseg run` FPS to an mp4 against the bare model's FPS, same backend and threads, side by side in one run.

    python benchmarks/video_fps.py [--model out/main/export/model.int8.onnx [more.onnx ...]] [--threads 2]
                                   [--clip out/main/video/camvid_heldout_clip.mp4] [--rounds 3]

For each model: the bare model's throughput (as ``edgeseg bench --model-only``: the backend on a
prepared input, nothing else; the faster of ONNX Runtime's idle threads spinning, its default, and
sleeping, what `edgeseg run` uses) and `edgeseg run`'s frames per second from the clip to an mp4
(decode, pre-processing, the model, argmax, overlay, legend, heads-up line, encode, write),
alternating the two ``--rounds`` times; the ratio of the medians (goal: >= 0.95). Then where the
time around the model goes: every stage of one frame run one after another in one thread, wall
and CPU milliseconds (CPU of the whole process, so a stage's helper threads count).
The clip is scripts/main_job.sh's (made from CamVid val with scripts/make_clip.py if there is none).
Writes benchmarks/results/video_fps_cpu.json and the `video_fps` section of RESULTS.md.
Measure on a quiet machine: the ratio is of two numbers taken in the same run, but another
process on the cores makes both noisy.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _results import ROOT, machine, markdown_table, save_json, update_section

sys.path.insert(0, str(ROOT / "scripts"))
from make_clip import make_clip  # noqa: E402

CLIPS = ("out/main/video/camvid_heldout_clip.mp4", "out/main/video/camvid_val_clip.mp4")  # scripts/main_job.sh's, new and old
HUD = "23.4 FPS  model 41 ms  capture-to-display 260 ms"  # a typical heads-up line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=[str(ROOT / "out/main/export/model.int8.onnx")],
                        help="One or more .onnx models (for example the seed-exact and the separable INT8 model).")
    parser.add_argument("--clip", type=Path, default=default_clip(),
                        help="Default: scripts/main_job.sh's clip; made from CamVid val frames when there is none.")
    parser.add_argument("--camvid", type=Path, default=ROOT.parent / "shared" / "datasets" / "camvid",
                        help="Where the clip is made from when --clip is missing.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=60, help="Timed runs of the bare model per round.")
    parser.add_argument("--stage-frames", type=int, default=60, help="Frames timed stage by stage.")
    args = parser.parse_args()
    models = [Path(m) for m in args.model]
    for model in models:
        if not model.is_file():
            raise SystemExit(f"error: {model} is missing; run scripts/main_job.sh (or edgeseg export) first")
    with tempfile.TemporaryDirectory() as work:
        clip = args.clip if args.clip.is_file() else make_clip(args.camvid, Path(work) / "clip.mp4", 101)
        rows = [measure(model, clip, Path(work), args.threads, args.rounds, args.iters, args.stage_frames) for model in models]
    report = {"clip": shown(clip), "threads": args.threads,
              "models": rows, "machine": machine(args.threads)}  # fmt: skip
    save_json("video_fps_cpu.json", report)
    markdown = render(report)
    update_section("video_fps", markdown)
    print(markdown)


def default_clip() -> Path:
    return next((ROOT / clip for clip in CLIPS if (ROOT / clip).is_file()), ROOT / CLIPS[0])


def measure(model: Path, clip: Path, work: Path, threads: int, rounds: int, iters: int, stage_frames: int) -> dict:
    """Alternate bare-model and `edgeseg run` rounds with the same backend threads, then the stage breakdown."""
    from edgeseg.video import run_video

    spinning, sleeping, run_fps, runs = [], [], [], []
    for _ in range(rounds):
        spinning.append(bare_model_fps(model, threads, spin=True, iters=iters))
        sleeping.append(bare_model_fps(model, threads, spin=False, iters=iters))
        stats = run_video(model, str(clip), [str(work / "out.mp4")], threads=threads, exist_ok=True)
        run_fps.append(stats["fps"])
        runs.append(stats)
    model_only = [max(pair) for pair in zip(spinning, sleeping)]
    return {"model": shown(model), "threads": threads, "model_only_fps": model_only,
            "model_only_spinning_fps": spinning, "model_only_sleeping_fps": sleeping, "run_fps": run_fps,
            "ratio": statistics.median(run_fps) / statistics.median(model_only),
            "stages_ms": stage_breakdown(model, clip, work, threads, stage_frames), "last_run": runs[-1]}  # fmt: skip


def bare_model_fps(model: Path, threads: int, spin: bool, iters: int = 60, warmup: int = 5) -> float:
    """Frames per second of the backend alone on one prepared input, as `edgeseg bench --model-only`
    times it; ``spin``: ONNX Runtime's idle threads spin (its default) or sleep (as in `edgeseg run`)."""
    import numpy as np

    from edgeseg.runtime import Segmenter

    with Segmenter.load(model, threads=threads, spin=spin) as segmenter:
        segmenter.prepare([np.full((*segmenter.meta.input_size, 3), 128, np.uint8)])
        for _ in range(warmup):
            segmenter.run(1)
        begin = time.perf_counter()
        for _ in range(iters):
            segmenter.run(1)
        return iters / (time.perf_counter() - begin)


def stage_breakdown(model: Path, clip: Path, work: Path, threads: int, frames: int) -> dict:
    """Wall and process-CPU milliseconds of each stage of one frame, the stages run one after another,
    with the same code and OpenCV threading as `edgeseg run` (the medians over ``frames`` frames)."""
    import numpy as np

    from edgeseg.runtime import Segmenter
    from edgeseg.runtime.preprocess import labels_to_source
    from edgeseg.runtime.segmenter import argmax
    from edgeseg.video import open_sink, open_source
    from edgeseg.video.pipeline import _opencv_threads
    from edgeseg.video.render import Renderer, _text

    times: dict[str, list[tuple[float, float]]] = {}

    def timed(stage: str, call):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        value = call()
        times.setdefault(stage, []).append((1000 * (time.perf_counter() - wall), 1000 * (_cpu_seconds() - cpu)))
        return value

    with Segmenter.load(model, threads=threads, spin=False) as segmenter, _opencv_threads(0):
        overlay = Renderer(segmenter.meta, legend=False, hud=False)
        legend = Renderer(segmenter.meta)
        source = open_source(str(clip), loop=True)
        labels_out = segmenter.backend.output_kind == "labels"  # argmax inside the model
        sink = open_sink(str(work / "stages.mp4"), source.fps, exist_ok=True)
        for index in range(frames + 5):  # the first 5 warm up
            if index == 5:
                times.clear()
            frame = timed("decode", source.read)
            places = timed("pre-process", lambda: segmenter.prepare([frame.image]))
            outputs = timed("model", lambda: segmenter.run(1))
            labels = outputs[0] if labels_out else timed("argmax", lambda: argmax(outputs[0]))
            labels = timed("crop, label resize", lambda: labels_to_source(labels, places[0]))
            image = timed("overlay", lambda: overlay.render(frame.image, labels))
            timed("legend", lambda: legend._draw_legend(image, labels))
            timed("heads-up line", lambda: _text(image, HUD, (8, 20), scale=0.5))
            timed("encode, write", lambda: sink.write(image))
        sink.close()
        source.close()
    stages = {stage: {"wall": statistics.median(w for w, _ in pairs), "cpu": statistics.median(c for _, c in pairs)}
              for stage, pairs in times.items()}  # fmt: skip
    around = [stage for stage in stages if stage != "model"]
    stages["around the model"] = {key: float(np.sum([stages[s][key] for s in around])) for key in ("wall", "cpu")}
    return stages


def shown(path: Path) -> str:
    """A path as the table shows it: relative to the project where it is inside."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_line(info: dict) -> str:
    load = info.get("load_average")
    busy = f"; load average {load[0]:.1f} at the end" if load else ""
    return f"{info['summary']}; CPU flags {' '.join(info['cpu_flags']) or 'none of note'}{busy}"


def render(report: dict) -> str:
    rows, stage_rows = [], []
    for row in report["models"]:
        last = row["last_run"]
        bare_ms = 1000 / statistics.median(row["model_only_fps"])
        rows.append([row["model"], f"{statistics.median(row['model_only_fps']):.1f}", f"{statistics.median(row['run_fps']):.1f}",
                     f"**{row['ratio']:.2f}**", f"{bare_ms:.1f}", f"{last['model_latency_ms']['p50']:.1f}",
                     f"{last['capture_to_display_ms']['p50']:.0f}", f"{last['processed']}/{last['frames_in']}"])  # fmt: skip
        stages = row["stages_ms"]
        stage_rows += [[row["model"], stage, f"{ms['wall']:.2f}", f"{ms['cpu']:.2f}"] for stage, ms in stages.items()]
    return "\n".join([
        "## Video: `edgeseg run` against the bare model — `python benchmarks/video_fps.py`",
        "",
        f"`{report['clip']}` decoded, segmented, drawn (overlay, legend, heads-up line) and encoded to mp4 by "
        f"`edgeseg run`, against the bare model (as `bench --model-only`; the faster of ONNX Runtime's idle threads "
        f"spinning and sleeping), ONNX Runtime with {report['threads']} threads, "
        f"medians of alternating rounds in one run. {machine_line(report['machine'])}. Goal: run >= 0.95x the bare model.",
        "",
        markdown_table(["model", "bare model FPS", "run FPS (mp4)", "ratio", "bare model ms", "model p50 ms in the run",
                        "capture-to-file p50 ms", "frames out/in"], rows),  # fmt: skip
        "",
        "Where the time around the model goes: each stage of one frame, run one after another in one thread "
        "(medians; CPU is the whole process's, so the model's own threads count in its row).",
        "",
        markdown_table(["model", "stage", "wall ms", "CPU ms"], stage_rows),
        "",
        "In `edgeseg run` these stages overlap: capture and pre-processing, the model, drawing, and encoding each",
        "have a thread; the helpers run at a lower priority than the model's threads, which meet at a barrier after",
        "every layer, so the helpers use the moments the model leaves idle instead of delaying it. Capture-to-file",
        "latency of a file source includes the frames waiting in the queues (every frame is kept).",
    ])


if __name__ == "__main__":
    main()
