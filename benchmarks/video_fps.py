"""`edgeseg run` FPS to an mp4 against the bare model's FPS, same backend and threads, side by side in one run.

    python benchmarks/video_fps.py [--model out/main/export/model.int8.onnx [more.onnx ...]] [--threads 2]
                                   [--clip out/main/video/camvid_heldout_clip.mp4] [--rounds 3]

For each model: the bare model's throughput (as ``edgeseg bench --model-only``: the backend on a
prepared input, nothing else; the faster of ONNX Runtime's idle threads spinning, its default, and
sleeping, what `edgeseg run` uses), the same with two sessions at once (``--streams 2``, what
`edgeseg run` uses on a file), and `edgeseg run`'s frames per second from the clip to an mp4
(decode, pre-processing, the model, labels, overlay, legend, heads-up line, encode, write), by
default and with ``--streams 1``, alternating ``--rounds`` times; the ratios of the medians (goal:
>= 0.95). Then where the time around the model goes: the CPU of each thread of the run, and every
stage of one frame run one after another in one thread, wall and CPU milliseconds (CPU of the
whole process, so a stage's helper threads count).
The clip is scripts/main_job.sh's (made from CamVid val with scripts/make_clip.py if there is none).
Writes benchmarks/results/video_fps_cpu.json and the `video_fps` section of RESULTS.md.
Measure on a quiet machine: the ratio is of two numbers taken in the same run, but another
process on the cores makes both noisy.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import threading
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
    """Alternate bare-model and `edgeseg run` rounds with the same threads, then the stage breakdown."""
    from edgeseg.video import RunOptions, run_session

    spinning, sleeping, streamed, run_fps, one_stream_fps, runs, cut = [], [], [], [], [], [], []
    for _ in range(rounds):
        spinning.append(bare_model_fps(model, threads, spin=True, iters=iters))
        sleeping.append(bare_model_fps(model, threads, spin=False, iters=iters))
        cut.append(max(bare_model_fps(model, threads, spin=spin, iters=iters, cut=True) for spin in (True, False)))
        streamed.append(bare_streams_fps(model, threads, iters=iters))
        threads_cpu = ThreadCpu()
        stats = run_session(model, str(clip), [str(work / "out.mp4")],
                            RunOptions(threads=threads, exist_ok=True, on_frame=threads_cpu.sample))
        run_fps.append(stats["fps"])
        runs.append({**stats, "thread_cpu_ms_per_frame": threads_cpu.per_frame(stats["processed"])})
        one = run_session(model, str(clip), [str(work / "out.mp4")], RunOptions(threads=threads, streams=1, exist_ok=True))
        one_stream_fps.append(one["fps"])
    model_only = [max(pair) for pair in zip(spinning, sleeping)]
    best_bare = [max(pair) for pair in zip(model_only, streamed)]
    return {"model": shown(model), "threads": threads, "model_only_fps": model_only,
            "model_only_spinning_fps": spinning, "model_only_sleeping_fps": sleeping,
            "model_only_streams_fps": streamed, "model_only_cut_fps": cut, "run_fps": run_fps, "run_one_stream_fps": one_stream_fps,
            "run_streams": runs[-1]["streams"],
            "ratio": statistics.median(run_fps) / statistics.median(model_only),
            "ratio_to_best_bare": statistics.median(run_fps) / statistics.median(best_bare),
            "stages_ms": stage_breakdown(model, clip, work, threads, stage_frames), "last_run": runs[-1]}  # fmt: skip


def bare_model_fps(model: Path, threads: int, spin: bool, iters: int = 60, warmup: int = 5, cut: bool = False) -> float:
    """Frames per second of the backend alone on one prepared input, as `edgeseg bench --model-only`
    times it; ``spin``: ONNX Runtime's idle threads spin (its default) or sleep (as in `edgeseg run`);
    ``cut``: the graph without its last upsample, as `edgeseg run`'s model threads run it on a CPU."""
    import numpy as np

    from edgeseg.runtime import Segmenter

    with Segmenter.load(model, threads=threads, spin=spin) as segmenter:
        segmenter.prepare([np.full((*segmenter.meta.input_size, 3), 128, np.uint8)])
        for _ in range(warmup):
            segmenter.run(1, for_labels=cut)
        begin = time.perf_counter()
        for _ in range(iters):
            segmenter.run(1, for_labels=cut)
        return iters / (time.perf_counter() - begin)


def bare_streams_fps(model: Path, threads: int, iters: int = 60) -> float:
    """Frames per second of the model alone as `edgeseg run` uses it on a file: ``auto_streams`` copies
    of it at the same time, each on its share of the threads (`edgeseg bench --model-only --streams`)."""
    from edgeseg.deploy.bench import BenchOptions, benchmark_models
    from edgeseg.video.session import auto_streams

    streams = auto_streams(True, False, threads)
    result = benchmark_models([model], BenchOptions(iters=iters, warmup=3, threads=threads, model_only=True, streams=streams))
    return result[0].throughput_fps


class ThreadCpu:
    """CPU of each thread of this process per frame of a run, by name, from its 10th frame to its last
    (Linux's /proc; empty elsewhere): the steady state, without opening the model and the first frames."""

    def __init__(self) -> None:
        self.first: dict[int, tuple[int, float]] = {}  # thread id -> (frames out, CPU seconds) at its first sample
        self.last: dict[int, tuple[str, int, float]] = {}
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def sample(self, stats) -> None:
        """Called by the run after each written frame: every 10th frame, read every thread's CPU time."""
        tasks = Path("/proc/self/task")
        if stats.processed % 10 or not tasks.is_dir():
            return
        names = {thread.native_id: thread.name for thread in threading.enumerate()}
        for task in tasks.iterdir():
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                name = names.get(int(task.name)) or (task / "comm").read_text().strip()
            except (OSError, ValueError, IndexError):
                continue
            seconds = (int(fields[11]) + int(fields[12])) / self.tick
            self.first.setdefault(int(task.name), (stats.processed, seconds))
            self.last[int(task.name)] = (name, stats.processed, seconds)

    def per_frame(self, _frames: int = 0) -> dict[str, float]:
        """Milliseconds of CPU a frame of each thread name (threads of one name summed), largest first."""
        totals: dict[str, float] = {}
        for task, (name, frames, seconds) in self.last.items():
            first_frames, first_seconds = self.first[task]
            if frames > first_frames:
                label = "the model (every stream's thread)" if name.startswith("edgeseg-model") else name
                totals[label] = totals.get(label, 0.0) + 1000 * (seconds - first_seconds) / (frames - first_frames)
        return dict(sorted(totals.items(), key=lambda item: -item[1]))


def stage_breakdown(model: Path, clip: Path, work: Path, threads: int, frames: int) -> dict:
    """Wall and process-CPU milliseconds of each stage of one frame, the stages run one after another,
    with the same code and OpenCV threading as `edgeseg run` (the medians over ``frames`` frames)."""
    import numpy as np

    from edgeseg.runtime import Segmenter
    from edgeseg.runtime.preprocess import labels_to_source
    from edgeseg.runtime.labels import to_labels
    from edgeseg.video import SourceOptions, open_sink, open_source
    from edgeseg.video.threads import opencv_threads
    from edgeseg.video.render import Renderer, _text

    times: dict[str, list[tuple[float, float]]] = {}

    def timed(stage: str, call):
        wall, cpu = time.perf_counter(), _cpu_seconds()
        value = call()
        times.setdefault(stage, []).append((1000 * (time.perf_counter() - wall), 1000 * (_cpu_seconds() - cpu)))
        return value

    with Segmenter.load(model, threads=threads, spin=False) as segmenter, opencv_threads(0):
        overlay = Renderer(segmenter.meta, legend=False, hud=False)
        legend = Renderer(segmenter.meta)
        source = open_source(str(clip), SourceOptions(loop=True, decode_threads=1))  # as edgeseg run on a CPU
        labels_out = segmenter.backend.output_kind == "labels"  # argmax inside the model
        size = segmenter.meta.input_size
        sink = open_sink(str(work / "stages.mp4"), source.fps, exist_ok=True)
        for index in range(frames + 5):  # the first 5 warm up
            if index == 5:
                times.clear()
            frame = timed("decode", source.read)
            places = timed("pre-process", lambda: segmenter.prepare([frame.image]))
            outputs = timed("model", lambda: segmenter.run(1, for_labels=True))  # as the run's model threads
            labels = outputs[0] if labels_out else timed("labels", lambda: to_labels(outputs[0], size))
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
    rows, stage_rows, thread_rows = [], [], []
    for row in report["models"]:
        last = row["last_run"]
        bare, streamed = statistics.median(row["model_only_fps"]), statistics.median(row["model_only_streams_fps"])
        cut = statistics.median(row["model_only_cut_fps"])
        rows.append([row["model"], f"{bare:.1f}", f"{cut:.1f}", f"{streamed:.1f}",
                     f"{statistics.median(row['run_one_stream_fps']):.1f}",
                     f"{statistics.median(row['run_fps']):.1f} ({row['run_streams']} streams)", f"**{row['ratio']:.2f}**",
                     f"{row['ratio_to_best_bare']:.2f}", f"{last['model_latency_ms']['p50']:.1f}",
                     f"{last['capture_to_display_ms']['p50']:.0f}", f"{last['processed']}/{last['frames_in']}"])  # fmt: skip
        stages = row["stages_ms"]
        stage_rows += [[row["model"], stage, f"{ms['wall']:.2f}", f"{ms['cpu']:.2f}"] for stage, ms in stages.items()]
        thread_rows += [[row["model"], name, f"{ms:.2f}"] for name, ms in last.get("thread_cpu_ms_per_frame", {}).items()
                        if ms >= 0.05]  # fmt: skip
    threads = report["threads"]
    parts = [
        "## Video: `edgeseg run` against the bare model — `python benchmarks/video_fps.py`",
        "",
        f"`{report['clip']}` decoded, segmented, drawn (overlay, legend, heads-up line) and encoded to mp4 by "
        f"`edgeseg run` with {threads} threads, against the bare model on a prepared input: as `edgeseg bench "
        f"--model-only --threads {threads}` times it (one session, the faster of ONNX Runtime's idle threads spinning "
        f"and sleeping), and as `edgeseg bench --model-only --streams 2` does (two sessions of {threads // 2} "
        f"thread{'s' if threads // 2 > 1 else ''} at once, the streams `edgeseg run` uses on a file). `edgeseg run` "
        f"on a CPU runs the graph without its last layer, the bilinear upsample of the logits, and takes the same "
        f"labels from the small logits (edgeseg/runtime/labels.py); the third column times that graph alone, one "
        f"session. The ratios are against the whole graph, the file as it is. Medians of "
        f"alternating rounds in one run. {machine_line(report['machine'])}. Goal: run >= 0.95x the bare model.",
        "",
        markdown_table(["model", "bare FPS, 1 session", "bare FPS, 1 session, no last upsample", "bare FPS, 2 streams", "run FPS, --streams 1",
                        "run FPS (default)", "run / bare 1 session", "run / best bare", "model p50 ms in the run",
                        "capture-to-file p50 ms", "frames out/in"], rows),  # fmt: skip
        "",
        "CPU milliseconds a frame of each thread in the last default run, from its 10th frame out to its last "
        "(Linux's per-thread counters, in 10 ms ticks):",
        "",
        markdown_table(["model", "thread", "CPU ms a frame"], thread_rows),
        "",
        "Each stage of one frame, run one after another in one thread (medians; CPU is the whole process's, so the "
        "model's own threads count in its row):",
        "",
        markdown_table(["model", "stage", "wall ms", "CPU ms"], stage_rows),
        "",
        "In `edgeseg run` these stages overlap: capture and pre-processing, each stream of the model, drawing, and",
        "encoding each have a thread; the helpers run at a lower priority than the model's threads, so they use the",
        "moments the model leaves idle. On 2 cores the frame rate is about 2000 / (the model's CPU ms + the helpers'",
        "CPU ms) a frame: every helper millisecond is a model millisecond lost. Capture-to-file latency of a file",
        "source includes the frames waiting in the queues (every frame is kept).",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    main()
