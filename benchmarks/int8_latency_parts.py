"""Where the INT8 CPU form's time goes, seed-exact head against separable head (issue 13's 0.30x latency goal).

    python benchmarks/int8_latency_parts.py [--seed out/main/export/model.int8.onnx]
        [--separable out/separable/export/model.int8.onnx] [--threads 2] [--runs 30]

ONNX Runtime's own profiler times every node of both models (same threads, sessions as `edgeseg bench` makes them),
and so does OpenVINO's (its per-node performance counters, f32 for the parts left in float, as edgeseg's OpenVINO
backend compiles them) where it is installed; each node's median over --runs runs is summed per part of the network:

- backbone: MobileNetV2 up to output stride 16, the same in both models;
- head: ASPP, low-level projection, decoder and classifier, the only part the separable head changes;
- in/out: the bilinear upsample of the logits to the input size, and the input's quantization.

The "head for free" row is the separable model's time without its head: no head, however cheap, gets below it.
Writes benchmarks/results/int8_latency_parts.json and the `int8_latency_parts` section of RESULTS.md, with the
machine and its CPU flags. Run on a quiet machine: anything else running inflates the medians.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

from _results import ROOT, machine, markdown_table, openvino_missing, save_json, update_section

PARTS = ("backbone", "head", "in/out")


def part_of(node: str, op_type: str, last_resize: str) -> str:
    if "/backbone/" in node:
        return "backbone"
    if node == last_resize or op_type in ("QuantizeLinear", "DequantizeLinear") and "Resize" not in node:
        return "in/out"
    return "head"


def profile(model: Path, threads: int, runs: int, warmup: int = 3) -> dict:
    """Median milliseconds per part (sum of each node's median) and the median whole run."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as folder:
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0]
        shape = [dim if isinstance(dim, int) else 1 for dim in feed.shape]
        image = np.random.default_rng(0).random(shape, dtype=np.float32)
        for _ in range(warmup + runs):
            session.run(None, {feed.name: image})
        events = json.loads(Path(session.end_profiling()).read_text())
    whole = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[warmup:]
    start = whole[0]["ts"]
    per_node: dict[str, list[float]] = collections.defaultdict(list)
    op_types: dict[str, str] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= start:
            node = event["name"][: -len("_kernel_time")]
            per_node[node].append(event["dur"] / 1000)
            op_types[node] = event["args"]["op_name"]
    resizes = [node for node in per_node if op_types[node] == "Resize"]
    last_resize = max(resizes, key=lambda node: statistics.median(per_node[node])) if resizes else ""
    parts = dict.fromkeys(PARTS, 0.0)
    for node, durations in per_node.items():
        parts[part_of(node, op_types[node], last_resize)] += statistics.median(durations)
    return {"model": str(model), "parts_ms": parts, "run_ms": statistics.median(e["dur"] / 1000 for e in whole)}


def profile_openvino(model: Path, threads: int, runs: int, warmup: int = 3) -> dict:
    """The same for OpenVINO: its nodes keep the ONNX names, fused and reordered ones start with their source's."""
    import numpy as np
    import openvino as ov

    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
              "PERF_COUNT": True}  # fmt: skip
    compiled = ov.Core().compile_model(str(model), "CPU", config)
    request = compiled.create_infer_request()
    image = np.random.default_rng(0).random([int(d) for d in compiled.inputs[0].shape], dtype=np.float32)
    per_node: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    whole = []
    for index in range(warmup + runs):
        start = time.perf_counter()
        request.infer([image])
        if index >= warmup:
            whole.append((time.perf_counter() - start) * 1000)
            for node in request.profiling_info:
                per_node[(node.node_name, node.node_type)].append(node.real_time.total_seconds() * 1000)
    medians = {key: statistics.median(durations) for key, durations in per_node.items()}
    resizes = [name for (name, kind) in medians if kind == "Interpolate"]
    last_resize = max(resizes, key=lambda name: medians[(name, "Interpolate")]) if resizes else "\0"
    input_name = compiled.inputs[0].any_name
    parts = dict.fromkeys(PARTS, 0.0)
    for (name, _), ms in medians.items():
        if name.startswith((last_resize, input_name)):
            parts["in/out"] += ms
        else:
            parts["backbone" if "/backbone/" in name else "head"] += ms
    return {"model": str(model), "parts_ms": parts, "run_ms": statistics.median(whole)}


def _row(backend: str, name: str, result: dict, parts: tuple[str, ...], reference_ms: float) -> list[object]:
    ms = sum(result["parts_ms"][part] for part in parts)
    return [backend, name, *(f"{result['parts_ms'][part]:.2f}" if part in parts else "-" for part in PARTS),
            f"{ms:.2f}", f"{ms / reference_ms:.2f}x"]  # fmt: skip


def render(results: dict[str, tuple[dict, dict]], info: dict) -> str:
    """results: backend -> (seed-exact profile, separable profile)."""
    table, wholes = [], []
    for backend, (seed, separable) in results.items():
        seed_ms = sum(seed["parts_ms"].values())
        seed_labels_path_ms = seed["parts_ms"]["backbone"] + seed["parts_ms"]["head"]
        table += [_row(backend, "seed-exact head", seed, PARTS, seed_ms),
                  _row(backend, "separable head", separable, PARTS, seed_ms),
                  _row(backend, "separable, head for free", separable, ("backbone", "in/out"), seed_ms),
                  _row(backend, "separable head, both without in/out", separable, ("backbone", "head"),
                       seed_labels_path_ms)]  # fmt: skip
        wholes.append(f"{backend} {seed['run_ms']:.2f} and {separable['run_ms']:.2f} ms")
    return "\n\n".join([
        "## INT8 CPU form, time per part of the network (ONNX Runtime and OpenVINO profilers)",
        f"Sum of each node's median over {info['runs']} runs, {info['threads']} threads, 360x480, batch 1 "
        f"(whole runs, seed-exact and separable: {'; '.join(wholes)}). The issue's goal is the separable "
        f"INT8 model at 0.30x of the seed-exact INT8's latency. The last row of each backend leaves the in/out part "
        f"out of both models: most of it is the last upsample, which the labels path skips. "
        f"Machine: {info['summary']}; CPU flags {' '.join(info['cpu_flags']) or 'none of note'}.",
        markdown_table(["backend", "model", "backbone ms", "head ms", "in/out ms", "total ms", "vs seed-exact"],
                       table),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=Path, default=ROOT / "out/main/export/model.int8.onnx")
    parser.add_argument("--separable", type=Path, default=ROOT / "out/separable/export/model.int8.onnx")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    for flag, path in (("--seed", args.seed), ("--separable", args.separable)):
        if not path.is_file():
            raise SystemExit(f"{flag} {path}: no such model; export one with `edgeseg export ... --precision int8`")
    results = {"onnxruntime": (profile(args.seed, args.threads, args.runs),
                               profile(args.separable, args.threads, args.runs))}
    missing = openvino_missing()
    if missing:
        print(f"note: {missing}; only ONNX Runtime is profiled")
    else:
        results["openvino"] = (profile_openvino(args.seed, args.threads, args.runs),
                               profile_openvino(args.separable, args.threads, args.runs))
    info = {**machine(args.threads), "threads": args.threads, "runs": args.runs}
    save_json("int8_latency_parts.json", {"machine": info, **{
        backend: {"seed": seed, "separable": separable} for backend, (seed, separable) in results.items()}})
    markdown = render(results, info)
    update_section("int8_latency_parts", markdown)
    print(markdown)


if __name__ == "__main__":
    main()
