"""Memory of a long `edgeseg run`: RSS over 10,000+ frames, the growth per frame, and what grows.

    python benchmarks/soak_run.py [--frames 10000] [--out-kind folder|avi|mp4] [--model M.onnx]
    python benchmarks/soak_run.py --ort-only [--frames 10000]     # ONNX Runtime alone, allocator variants

The run: a 30-frame clip of CamVid val frames at 160x120 (generated), looped with --loop and
--max-frames through `run_session` (the body of `edgeseg run`), one backend thread. The model is,
unless --model names one, an untrained MobileNetV2-DeepLabv3+ at 96x128 exported to FP32 ONNX
(the same architecture and graph as the reference model, at a size that keeps the soak short on
a shared 2-core CPU; memory per frame does not depend on the weights). RSS is read every 100
frames; from 10 % of the frames on (the warm-up), tracemalloc traces Python's allocations. It
prints RSS at 10 %, 50 % and 100 %, the growth per frame after the warm-up (median pairwise slope
and end-to-end), the Python part (tracemalloc, its own bookkeeping excluded) and the rest (RSS
minus Python: native libraries), and the allocation sites that grew most.

--ort-only calls the ONNX Runtime session alone, each allocator variant in a fresh process:
the default, the CPU arena off, arena_extend_strategy kSameAsRequested, glibc MALLOC_ARENA_MAX=2,
and malloc_trim(0) every 1,000 calls. --containers measures the video muxers' in-memory index alone.

Writes benchmarks/results/soak_run_<out-kind>_cpu.json (or soak_ort_cpu.json) with the machine and its CPU flags,
and the `soak` section of RESULTS.md. Goal: < 19 bytes a frame after warm-up (50 MB a day at 30 FPS).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from _results import ROOT, markdown_table, save_json, update_section
from _results import machine as shared_machine

SAMPLE_EVERY = 100
CLIP_SIZE = (160, 120)  # width, height
ORT_VARIANTS = ("default", "arena_off", "same_as_requested", "malloc_arena_max_2", "malloc_trim")
GOAL_BYTES_PER_FRAME = 19
NOTES = [
    "RSS is counted in 4 KiB pages, so over 9,000 frames one page is 0.5 B/frame and a flat run shows a few",
    "B/frame of noise either way. The median slope is robust to the samples taken while large buffers were in",
    "flight, but it under-reads growth that comes in steps (a muxer's index grows by reallocation, and glibc",
    "first reuses freed heap): read the 10 %-to-100 % column for that. The Python sites listed are the frames in flight (capture, pre-processing and",
    "drawing buffers of the few frames in the queues when each snapshot was taken), CPython's free lists",
    "and the benchmark's own samples; the run statistics are fixed-size (`StreamingStats`). Before, they were two",
    "lists of floats (about 64 B/frame). A video file adds its container's index on top (last table), kept",
    "in memory by FFmpeg's muxer until the file is closed, and freed when it is: for day-long recordings cut",
    "the recording into files with `edgeseg run --segment SECONDS` (mp4-segments above: a new file every",
    "20 s of video, so 17 files in 10,000 frames), or write .avi.",
]


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def slope(points: list[tuple[int, float]]) -> float:
    """Bytes per frame: the median of the slopes between every two samples (Theil-Sen), which a few
    samples taken while large frame buffers were in flight, or a page mapped early, do not move."""
    if len(points) < 2:
        return 0.0
    x = np.array([p[0] for p in points], float)
    y = np.array([p[1] for p in points], float)
    first, second = np.triu_indices(len(points), k=1)
    return float(np.median((y[second] - y[first]) / (x[second] - x[first])))


def small_model(work: Path, camvid: Path) -> Path:
    """An untrained CamVid MobileNetV2-DeepLabv3+ at 96x128, exported to FP32 ONNX (as the tests' small model)."""
    import torch

    from edgeseg.model.checkpoint import checkpoint_dict, save_checkpoint
    from edgeseg.data import resolve_dataset
    from edgeseg.export.exporter import export_onnx
    from edgeseg.core.meta import ModelMeta
    from edgeseg.model.network import build_model

    spec = resolve_dataset(f"camvid:{camvid}")
    meta = ModelMeta(num_classes=spec.num_classes, classes=spec.classes, palette=spec.palette,
                     ignore_index=spec.ignore_index, input_size=(96, 128))  # fmt: skip
    torch.manual_seed(0)
    checkpoint = save_checkpoint(checkpoint_dict(build_model(spec.num_classes).eval(), meta), work / "small.pt")
    return export_onnx(checkpoint, work / "export", verify=False).onnx_path


OUT_KINDS = ("folder", "avi", "mp4", "mp4-segments")
SEGMENT_S = 20.0  # at the clip's 30 FPS: 600 frames a file, so 10,000 frames make 17 files


def make_clip(camvid: Path, out: Path, frames: int = 30) -> Path:
    import cv2

    paths = sorted((camvid / "images" / "val").glob("*.jpg"))[:frames]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 30, CLIP_SIZE)
    for path in paths:
        writer.write(cv2.resize(cv2.imread(str(path)), CLIP_SIZE, interpolation=cv2.INTER_AREA))
    writer.release()
    return out


# --- the run ------------------------------------------------------------------------------------


class Sampler:
    """Called by the run after every frame: RSS samples, tracemalloc from the warm-up on."""

    def __init__(self, frames: int) -> None:
        self.frames, self.warm = frames, frames // 10
        self.rss: list[tuple[int, int]] = []
        self.native: list[tuple[int, int]] = []  # RSS minus Python's traced memory and tracemalloc's own
        self.traced: list[tuple[int, int]] = []  # Python's traced memory
        self.marks: dict[str, int] = {}
        self.snapshots: list[tracemalloc.Snapshot] = []
        self.python: dict[str, int] = {}

    def __call__(self, stats) -> None:
        done = stats.processed
        if done % SAMPLE_EVERY and done not in (self.warm, self.frames // 2, self.frames):
            return
        rss = rss_bytes()
        if done == self.warm:
            tracemalloc.start(1)
            self.snapshots.append(tracemalloc.take_snapshot())
            rss = rss_bytes()  # tracemalloc's tables are allocated: measure growth from here
            self.python["warm"] = tracemalloc.get_traced_memory()[0]
        for name, at in (("10%", self.warm), ("50%", self.frames // 2), ("100%", self.frames)):
            if done == at:
                self.marks[name] = rss
        if done >= self.warm:
            self.rss.append((done, rss))
            traced = tracemalloc.get_traced_memory()[0]
            self.traced.append((done, traced))
            self.native.append((done, rss - traced - tracemalloc.get_tracemalloc_memory()))
        if done == self.frames:
            self.snapshots.append(tracemalloc.take_snapshot())
            self.python["end"] = tracemalloc.get_traced_memory()[0]


def soak(model: Path, clip: Path, out: Path, frames: int, segment_seconds: float | None = None) -> dict:
    from edgeseg.video import RunOptions, run_session

    sampler = Sampler(frames)
    started = time.perf_counter()
    options = RunOptions(loop=True, max_frames=frames, threads=1, exist_ok=True, on_frame=sampler, segment_seconds=segment_seconds)
    report = run_session(model, str(clip), [str(out)], options)
    seconds = time.perf_counter() - started
    tracemalloc.stop()
    after = frames - sampler.warm
    top = sampler.snapshots[1].compare_to(sampler.snapshots[0], "lineno")[:8]
    python_growth = sampler.python["end"] - sampler.python["warm"]
    rss_growth = sampler.marks["100%"] - sampler.marks["10%"]
    return {
        "frames": report["processed"], "seconds": round(seconds, 1), "fps": report["fps"],
        "rss_mb": {name: round(value / 2**20, 2) for name, value in sampler.marks.items()},
        "bytes_per_frame_after_warmup": {
            "rss_slope": round(slope(sampler.rss), 2), "rss_end_to_end": round(rss_growth / after, 2),
            "python_tracemalloc_slope": round(slope(sampler.traced), 2),
            "python_tracemalloc_end_to_end": round(python_growth / after, 2),
            "rest_rss_minus_python_slope": round(slope(sampler.native), 2),
        },
        "top_python_sites": [{"site": str(stat.traceback[0]), "size_diff_bytes": stat.size_diff,
                              "count_diff": stat.count_diff} for stat in top],  # fmt: skip
        "samples": {"rss": sampler.rss, "python": sampler.traced, "rest": sampler.native},
        "model_latency_ms": report["model_latency_ms"],
    }


# --- ONNX Runtime alone -------------------------------------------------------------------------


def ort_variant(model: Path, variant: str, calls: int) -> dict:
    """One allocator variant, in this process (started fresh by --ort-only for each)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    if variant == "arena_off":
        options.enable_cpu_mem_arena = False
    providers: list = ["CPUExecutionProvider"]
    if variant == "same_as_requested":
        providers = [("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})]
    session = ort.InferenceSession(str(model), options, providers=providers)
    name, shape = session.get_inputs()[0].name, session.get_inputs()[0].shape
    batch = np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in shape], np.float32)
    libc = ctypes.CDLL("libc.so.6") if variant == "malloc_trim" else None
    warm, points = calls // 10, []
    for call in range(1, calls + 1):
        session.run(None, {name: batch})
        if libc is not None and call % 1000 == 0:
            libc.malloc_trim(0)
        if call >= warm and call % SAMPLE_EVERY == 0:
            points.append((call, rss_bytes()))
    first, last = points[0], points[-1]
    half = [p for p in points if p[0] >= calls // 2]
    return {"variant": variant, "calls": calls, "rss_mb_after_warmup": round(first[1] / 2**20, 2),
            "rss_mb_end": round(last[1] / 2**20, 2),
            "bytes_per_call_slope": round(slope(points), 2),
            "bytes_per_call_end_to_end": round((last[1] - first[1]) / (last[0] - first[0]), 2),
            "bytes_per_call_second_half": round(slope(half), 2)}  # fmt: skip


def ort_only(model: Path, calls: int, variants: list[str]) -> list[dict]:
    rows = []
    for variant in variants:
        env = dict(os.environ)
        if variant == "malloc_arena_max_2":
            env["MALLOC_ARENA_MAX"] = "2"
        command = [sys.executable, __file__, "--ort-variant", variant, "--model", str(model), "--frames", str(calls)]
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    return rows


# --- video containers alone ----------------------------------------------------------------------


CONTAINERS = {".mp4": "mp4v", ".mkv": "MJPG", ".avi": "MJPG"}


def container_one(work: Path, suffix: str, frames: int) -> dict:
    """RSS growth of cv2.VideoWriter alone for one container (in a fresh process): the muxer's index."""
    import cv2

    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    fourcc = cv2.VideoWriter_fourcc(*CONTAINERS[suffix])
    writer = cv2.VideoWriter(str(work / f"index{suffix}"), cv2.CAP_FFMPEG, fourcc, 30, (64, 48))
    points = []
    for index in range(1, frames + 1):
        writer.write(image)
        if index >= frames // 10 and index % SAMPLE_EVERY == 0:
            points.append((index, rss_bytes()))
    writer.release()
    per_frame = slope(points)
    return {"container": suffix, "codec": CONTAINERS[suffix], "frames": frames, "bytes_per_frame_slope": round(per_frame, 2),
            "mb_per_day_at_30fps": round(per_frame * 30 * 86400 / 2**20, 1)}  # fmt: skip


def container_index(frames: int = 20_000) -> list[dict]:
    rows = []
    for suffix in CONTAINERS:
        command = [sys.executable, __file__, "--container-one", suffix, "--frames", str(frames)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


# --- report -------------------------------------------------------------------------------------


def machine() -> dict:
    return {**shared_machine(threads=1), "glibc": "-".join(os.confstr("CS_GNU_LIBC_VERSION").split())}


def render(runs: list[dict], ort: dict | None, containers: dict | None = None) -> str:
    """``runs``: saved soak reports (one per output kind); ``ort``: the saved --ort-only report; ``containers``: --containers."""
    from edgeseg.core.sysinfo import summary

    setup = (runs or [r for r in (ort, containers) if r])[0]
    lines = ["## Soak: memory over a long `edgeseg run` — `python benchmarks/soak_run.py`", "",
             f"{summary(setup['machine'])}; CPU flags {' '.join(setup['machine']['cpu_flags'])}; {setup['machine']['glibc']}. "
             f"Goal: < {GOAL_BYTES_PER_FRAME} bytes a frame after warm-up (50 MB a day at 30 FPS).", ""]  # fmt: skip
    rows, sites = [], []
    for report in runs:
        run = report["run"]
        growth, rss = run["bytes_per_frame_after_warmup"], run["rss_mb"]
        rows.append([f"{run['frames']} into {report['out_kind']}", f"{run['fps']:.0f}", f"{rss['10%']} MB",
                     f"{rss['50%']} MB", f"{rss['100%']} MB", f"**{growth['rss_end_to_end']}**", growth["rss_slope"],
                     growth["python_tracemalloc_slope"], growth["rest_rss_minus_python_slope"]])  # fmt: skip
        sites += [[report["out_kind"], f"`{s['site'].replace(str(ROOT) + '/', '')}`", s["size_diff_bytes"], s["count_diff"]]
                  for s in run["top_python_sites"][:5]]  # fmt: skip
    if runs:
        lines += [f"A 30-frame 160x120 clip looped through `run_session` (the body of `edgeseg run`; {setup['model']}, "
                  "1 backend thread); RSS sampled every 100 frames, growth from 10 % of the frames on.", "",
                  markdown_table(["frames, output", "FPS", "RSS at 10 %", "50 %", "100 %", "RSS B/frame, 10 % to 100 %",
                                  "RSS B/frame, median slope", "Python B/frame (tracemalloc, median slope)",
                                  "rest: RSS - Python (median slope)"], rows),
                  "", "Python allocation sites that grew most between 10 % and 100 % (end-to-end snapshots):", "",
                  markdown_table(["output", "site", "bytes", "blocks"], sites), ""]  # fmt: skip
    if ort:
        lines += [f"ONNX Runtime alone ({ort['model']}, 1 thread, `session.run` in a loop), each variant in a fresh "
                  "process, growth from 10 % of the calls on:", "",
                  markdown_table(["variant", "calls", "RSS after warm-up", "RSS at end", "B/call (slope)",
                                  "B/call, end to end", "B/call, second half"],
                                 [[r["variant"], r["calls"], f"{r['rss_mb_after_warmup']} MB", f"{r['rss_mb_end']} MB",
                                   r["bytes_per_call_slope"], r["bytes_per_call_end_to_end"],
                                   r["bytes_per_call_second_half"]] for r in ort["ort"]]), ""]  # fmt: skip
    if containers:
        lines += ["A video file's muxer alone (`cv2.VideoWriter`, FFmpeg, 64x48 frames; `--containers`): the index it "
                  "keeps in memory until the file is closed.", "",
                  markdown_table(["container", "codec", "frames", "B/frame (slope)", "MB a day at 30 FPS"],
                                 [[r["container"], r["codec"], r["frames"], r["bytes_per_frame_slope"],
                                   r["mb_per_day_at_30fps"]] for r in containers["containers"]]), ""]  # fmt: skip
    return "\n".join(lines + NOTES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--model", type=Path, help="An .onnx model (default: a 96x128 FP32 model made here).")
    parser.add_argument("--label", help="How the report names --model (default: its file name).")
    parser.add_argument("--out-kind", choices=OUT_KINDS, default="folder",
                        help="mp4-segments: an mp4 cut every --segment-seconds of video (`edgeseg run --segment`)")
    parser.add_argument("--segment-seconds", type=float, default=SEGMENT_S, help="With mp4-segments (the clip is 30 FPS).")
    parser.add_argument("--camvid", type=Path, default=ROOT.parent / "shared" / "datasets" / "camvid")
    parser.add_argument("--ort-only", action="store_true")
    parser.add_argument("--containers", action="store_true", help="Measure the video muxers' in-memory index alone.")
    parser.add_argument("--variants", default=",".join(ORT_VARIANTS), help="With --ort-only: comma-separated, of " + ", ".join(ORT_VARIANTS))
    parser.add_argument("--ort-variant", choices=ORT_VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--container-one", choices=tuple(CONTAINERS), help=argparse.SUPPRESS)
    parser.add_argument("--no-save", action="store_true", help="Print only; leave results/ and RESULTS.md alone.")
    args = parser.parse_args()
    if args.ort_variant:
        print(json.dumps(ort_variant(args.model, args.ort_variant, args.frames)))
        return
    if args.container_one:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(container_one(Path(folder), args.container_one, args.frames)))
        return
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        if args.containers:
            report = {"containers": container_index(), "machine": machine()}
            print(render([], None, report))
            if not args.no_save:
                save_json("soak_containers_cpu.json", report)
                update_section("soak", combined())
            return
        model = args.model or small_model(work, args.camvid)
        setup = {"model": args.label or (model.name if args.model else "untrained 96x128 FP32 ONNX"), "out_kind": args.out_kind,
                 "frames": args.frames, "machine": machine()}  # fmt: skip
        if args.out_kind == "mp4-segments":
            setup["segment_seconds"] = args.segment_seconds
        if args.ort_only:
            rows = ort_only(model, args.frames, [v for v in args.variants.split(",") if v])
            report, name = {**setup, "ort": rows}, "soak_ort_cpu.json"
            markdown = render([], report)
        else:
            clip = make_clip(args.camvid, work / "clip.avi")
            out = work / {"folder": "frames", "avi": "rec.avi", "mp4": "rec.mp4", "mp4-segments": "rec.mp4"}[args.out_kind]
            segment = args.segment_seconds if args.out_kind == "mp4-segments" else None
            result = soak(model, clip, out, args.frames, segment)
            report, name = {**setup, "run": result}, f"soak_run_{args.out_kind}_cpu.json"
            markdown = render([report], None)
    print(markdown)
    if not args.no_save:
        save_json(name, report)
        update_section("soak", combined())


def combined() -> str:
    """The RESULTS.md section from every saved soak (one per output kind) and the --ort-only report."""
    from _results import RESULTS_DIR

    runs = [json.loads((RESULTS_DIR / f"soak_run_{kind}_cpu.json").read_text()) for kind in OUT_KINDS
            if (RESULTS_DIR / f"soak_run_{kind}_cpu.json").exists()]  # fmt: skip
    ort, containers = RESULTS_DIR / "soak_ort_cpu.json", RESULTS_DIR / "soak_containers_cpu.json"
    return render(runs, json.loads(ort.read_text()) if ort.exists() else None,
                  json.loads(containers.read_text()) if containers.exists() else None)


if __name__ == "__main__":
    main()
