"""`edgeseg run`'s FPS while browsers watch the live view (`--out http://...`), against none watching.

    python benchmarks/live_view.py [--model out/main/export/model.int8.onnx] [--threads 2] [--rounds 3]
                                   [--frames 300] [--clip out/main/video/camvid_heldout_clip.mp4]

The main job's run (the CPU INT8 model over the held-out clip into an mp4, ``--loop`` to --frames
frames, read as fast as it goes) with the live view added on a loopback port, and 0, 1 or 4 viewers,
or 1 viewer that connects and never reads; also the run without the live view. The cases alternate
within each round (the machine is shared: a slow moment hits every case alike); the ratios are of
the medians, to the live view with nobody watching (goal: >= 0.95 with 1 and with 4 viewers).
Viewers are another process (``--viewers PORT N``): raw HTTP clients that read /stream.mjpg as fast
as it comes and count the JPEG frames, as a browser on a laptop would take them; their own CPU is
spent on this machine too, so the ratios are if anything low.
Writes benchmarks/results/live_view_cpu.json and the `live_view` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _results import ROOT, machine, markdown_table, save_json, update_section

sys.path.insert(0, str(ROOT / "benchmarks"))
from video_fps import default_clip, shown  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from make_clip import make_clip  # noqa: E402

CASES = (("no live view", 0, False), ("live, nobody watching", 0, False), ("1 viewer", 1, False),
         ("4 viewers", 4, False), ("1 stalled viewer", 1, True))  # fmt: skip
BASELINE = "live, nobody watching"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "out/main/export/model.int8.onnx")
    parser.add_argument("--clip", type=Path, default=default_clip())
    parser.add_argument("--camvid", type=Path, default=ROOT.parent / "shared" / "datasets" / "camvid")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=300, help="Frames per run (the clip looped).")
    parser.add_argument("--viewers", nargs=3, metavar=("PORT", "COUNT", "STALLED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.viewers:
        watch(int(args.viewers[0]), int(args.viewers[1]), args.viewers[2] == "stalled")
        return
    if not args.model.is_file():
        raise SystemExit(f"error: {args.model} is missing; run scripts/main_job.sh (or edgeseg export) first")
    with tempfile.TemporaryDirectory() as work:
        clip = args.clip if args.clip.is_file() else make_clip(args.camvid, Path(work) / "clip.mp4", 101, folder="train",
                                                               sequence="0006R0")  # fmt: skip
        runs: dict[str, list[dict]] = {name: [] for name, _, _ in CASES}
        for round_index in range(args.rounds):
            order = CASES if round_index % 2 == 0 else CASES[::-1]
            for name, count, stalled in order:
                runs[name].append(one_run(args.model, clip, Path(work), args.threads, args.frames, count, stalled, name))
                print(f"round {round_index + 1}: {name}: {runs[name][-1]['fps']:.2f} FPS, "
                      f"viewers got {runs[name][-1]['frames_seen']}", flush=True)
    base = statistics.median(r["fps"] for r in runs[BASELINE])
    cases = [{"case": name, "viewers": count, "stalled": stalled, "fps": [r["fps"] for r in runs[name]],
              "median_fps": statistics.median(r["fps"] for r in runs[name]),
              "ratio": statistics.median(r["fps"] for r in runs[name]) / base,
              "frames_seen": [r["frames_seen"] for r in runs[name]], "dropped": [r["dropped"] for r in runs[name]]}
             for name, count, stalled in CASES]  # fmt: skip
    clip_name = shown(clip) if clip == args.clip else "CamVid 0006R0, 101 frames (scripts/make_clip.py)"
    report = {"model": shown(args.model), "clip": clip_name, "threads": args.threads, "frames": args.frames,
              "rounds": args.rounds, "baseline": BASELINE, "cases": cases, "machine": machine(args.threads)}  # fmt: skip
    save_json("live_view_cpu.json", report)
    markdown = render(report)
    update_section("live_view", markdown)
    print(markdown)


def one_run(model: Path, clip: Path, work: Path, threads: int, frames: int, viewers: int, stalled: bool, name: str) -> dict:
    """One `edgeseg run` in this process, with ``viewers`` clients in another process."""
    from edgeseg.video import RunOptions, run_session

    sinks = [str(work / "out.mp4")]
    port = free_port()
    watching = None
    if name != "no live view":
        sinks.append(f"http://127.0.0.1:{port}")
        if viewers:
            command = [sys.executable, __file__, "--viewers", str(port), str(viewers), "stalled" if stalled else "reading"]
            watching = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    stats = run_session(model, str(clip), sinks, RunOptions(threads=threads, exist_ok=True, loop=True, max_frames=frames))
    seen = json.loads(watching.communicate(timeout=60)[0]) if watching is not None else []
    return {"fps": stats["fps"], "dropped": stats["dropped"], "frames_seen": seen}


def free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def watch(port: int, count: int, stalled: bool) -> None:
    """``count`` clients of /stream.mjpg on ``port`` (connecting as soon as it listens) until the stream ends;
    prints the frames each received (a stalled client reads nothing, -1, and holds on until stdin closes)."""
    seen = [0] * count

    def client(index: int) -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                connection = socket.create_connection(("127.0.0.1", port), timeout=60)
                break
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.005)
        connection.sendall(f"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        if stalled:  # holds the connection, reads nothing, until the run is over (stdin closes)
            seen[index] = -1
            sys.stdin.read()
            connection.close()
            return
        tail = b""
        while True:
            try:
                chunk = connection.recv(1 << 18)
            except OSError:
                break
            if not chunk:
                break
            seen[index] += (tail + chunk).count(b"\r\n--edgeseg-frame") + (tail + chunk).startswith(b"--edgeseg-frame")
            tail = chunk[-32:]
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps(seen))


def render(report: dict) -> str:
    rows = [[case["case"], " ".join(f"{fps:.1f}" for fps in case["fps"]), f"{case['median_fps']:.2f}",
             f"**{case['ratio']:.3f}**", " ".join(str(seen) for seen in case["frames_seen"]) or "-"]
            for case in report["cases"]]  # fmt: skip
    return (f"### Live view: `run`'s FPS while browsers watch (`--out http://...`)\n\n"
            f"`python benchmarks/live_view.py` — {report['model']} over {report['clip']} looped to {report['frames']} "
            f"frames, to an mp4 and the live view on loopback, {report['threads']} threads, {report['rounds']} rounds "
            f"alternating the cases; ratio of the medians to \"{report['baseline']}\" (goal >= 0.95 with 1 and 4 viewers).\n\n"
            + markdown_table(["case", "FPS per round", "median FPS", "ratio", "frames each viewer received"], rows)
            + f"\n\n{report['machine']['summary']}; CPU flags {' '.join(report['machine']['cpu_flags'])}; "
            f"load average {report['machine']['load_average']}\n")  # fmt: skip


if __name__ == "__main__":
    main()
