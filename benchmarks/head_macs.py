"""The separable DeepLabv3+ head against the seed-exact one: MACs, parameters and FP32 ONNX latency (issue 13).

    python benchmarks/head_macs.py [--classes 11] [--threads 2] [--rounds 5] [--iters 4] [--no-latency] [--results-md]

1. MACs (Conv2d and Linear multiply-accumulates, one image) and parameters of both heads, whole network and
   head only (everything outside the backbone), at 360x480 and 512x512 (edgeseg.model.complexity, the counter export
   records in every model's metadata). Goal: separable head MACs <= 0.25 x the seed-exact head's.
2. FP32 ONNX Runtime latency of both at 360x480, batch 1, --threads threads, model only, untrained weights
   exported by `edgeseg export` (the same graph a trained model gets), the two models' rounds interleaved.
   Timings on a busy machine are disturbed: rerun on a quiet one.
Writes benchmarks/results/head_macs.json (with the CPU and its flags); --results-md also replaces the `head_macs`
section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _results import machine as shared_machine
from _results import markdown_table, save_json, update_section

HEADS = ("seed", "separable")
SIZES = ((360, 480), (512, 512))
LATENCY_SIZE = (360, 480)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=11, help="Classifier outputs (11: CamVid; the seed's VOC: 21).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=4, help="Timed runs per model per round.")
    parser.add_argument("--no-latency", action="store_true", help="Count only; no export, no timing.")
    parser.add_argument("--results-md", action="store_true", help="Also write the head_macs section of RESULTS.md.")
    args = parser.parse_args()

    report = {"classes": args.classes, "complexity": count(args.classes), "machine": machine(args.threads)}
    if not args.no_latency:
        report["latency"] = {"input_size": list(LATENCY_SIZE), "threads": args.threads, "rounds": args.rounds,
                             "iters": args.iters, "ms": latency(args.classes, args.threads, args.rounds, args.iters)}  # fmt: skip
    path = save_json("head_macs.json", report)
    markdown = render(report)
    print(markdown)
    print(f"results: {path}")
    if args.results_md:
        update_section("head_macs", markdown)


def count(classes: int) -> list[dict]:
    from edgeseg.model.complexity import measure
    from edgeseg.model.network import build_model

    rows: list[dict] = []
    for size in SIZES:
        seed, separable = (measure(build_model(classes, head=head), size) for head in HEADS)
        rows.append({
            "input_size": list(size),
            "seed": seed.to_dict(),
            "separable": separable.to_dict(),
            "ratio": {key: getattr(separable, key) / getattr(seed, key)
                      for key in ("macs", "params", "head_macs", "head_params")},
        })  # fmt: skip
    return rows


def latency(classes: int, threads: int, rounds: int, iters: int) -> dict[str, float]:
    """Median FP32 milliseconds per model; rounds alternate between the models so drift hits both alike."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    with tempfile.TemporaryDirectory() as folder:
        paths = {head: export(classes, head, Path(folder)) for head in HEADS}
        sessions = {head: ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for head, p in paths.items()}
        feed = {"images": np.random.default_rng(0).random((1, 3, *LATENCY_SIZE), dtype=np.float32)}
        for session in sessions.values():  # warm-up
            for _ in range(2):
                session.run(None, feed)
        times: dict[str, list[float]] = {head: [] for head in HEADS}
        for _ in range(rounds):
            for head, session in sessions.items():
                for _ in range(iters):
                    begin = time.perf_counter()
                    session.run(None, feed)
                    times[head].append(1000 * (time.perf_counter() - begin))
    return {head: statistics.median(values) for head, values in times.items()}


def export(classes: int, head: str, folder: Path) -> Path:
    """An untrained model of ``head`` through `edgeseg export` (FP32 only, no proofs)."""
    import torch

    from edgeseg.model.checkpoint import checkpoint_dict, save_checkpoint
    from edgeseg.export.exporter import export_onnx
    from edgeseg.core.meta import ModelMeta, default_class_names, default_palette
    from edgeseg.model.network import build_model

    meta = ModelMeta(num_classes=classes, classes=default_class_names(classes), palette=default_palette(classes),
                     ignore_index=255, input_size=LATENCY_SIZE, head=head)  # fmt: skip
    torch.manual_seed(0)
    checkpoint = save_checkpoint(checkpoint_dict(build_model(classes, head=head).eval(), meta), folder / f"{head}.pt")
    return export_onnx(checkpoint, folder / head, verify=False).onnx_path


def machine(threads: int) -> dict:
    return {**shared_machine(threads), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def render(report: dict) -> str:
    from edgeseg.core.sysinfo import summary

    env = report["machine"]
    lines = [f"## The separable head against the seed-exact one ({report['classes']} classes) — `python benchmarks/head_macs.py`", ""]
    rows: list[list[object]] = []
    for row in report["complexity"]:
        size = "x".join(map(str, row["input_size"]))
        seed, separable, ratio = row["seed"], row["separable"], row["ratio"]
        for part, macs, params in (("whole network", "macs", "params"), ("head only", "head_macs", "head_params")):
            rows.append([size, part, f"{seed[macs] / 1e9:.2f}", f"{separable[macs] / 1e9:.2f}", f"{ratio[macs]:.3f}",
                         f"{seed[params] / 1e6:.2f}", f"{separable[params] / 1e6:.2f}", f"{ratio[params]:.3f}"])  # fmt: skip
    lines.append(markdown_table(["input", "part", "seed GMACs", "separable GMACs", "MACs ratio", "seed M params",
                                 "separable M params", "params ratio"], rows))  # fmt: skip
    worst = max(row["ratio"]["head_macs"] for row in report["complexity"])
    lines += ["", f"Goal: head MACs ratio <= 0.25: {worst:.3f} ({'met' if worst <= 0.25 else 'NOT met'})."]
    if "latency" in report:
        lat = report["latency"]
        ms = lat["ms"]
        lines += ["", f"FP32 ONNX Runtime latency at {'x'.join(map(str, lat['input_size']))}, batch 1, "
                  f"{lat['threads']} threads, median of {lat['rounds']} x {lat['iters']} interleaved runs: seed "
                  f"{ms['seed']:.1f} ms, separable {ms['separable']:.1f} ms ({ms['separable'] / ms['seed']:.2f}x)."]  # fmt: skip
        if env["load_average"][0] > (env["logical_cores"] or 1):
            lines.append(f"The machine was busy (load {env['load_average'][0]:.1f} on {env['logical_cores']} cores): "
                         "these timings are disturbed; rerun on a quiet machine.")  # fmt: skip
    lines += ["", f"{summary(env)}; CPU flags {' '.join(env['cpu_flags']) or '-'}; load average "
              f"{' '.join(f'{v:.2f}' for v in env['load_average'])} at {env['date']}."]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
