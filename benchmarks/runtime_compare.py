"""The standard CPU runtime comparison: PyTorch eager vs ONNX Runtime FP32 vs ONNX Runtime INT8.

    python benchmarks/runtime_compare.py [--fp32 out/main/export/model.fp32.onnx]
        [--int8 out/main/export/model.int8.onnx] [--threads 2]

The reference model at 360x480 on CamVid val frames, batch 1, the same thread count for all,
end to end (the Segmenter's pre-processing, the model, post-processing back to labels) and
model only; the models take turns round by round so machine drift hits them alike. Also the
label agreement of each deployed model with PyTorch over all of CamVid val.
Goals: pre+post <= 15 % of model time (ONNX Runtime FP32); ONNX Runtime FP32 model latency
<= 0.7x PyTorch eager; ONNX Runtime FP32 labels equal PyTorch's on >= 99.99 % of pixels.
Writes benchmarks/results/runtime_compare_cpu.json and the `runtime_compare` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import asdict
from pathlib import Path

from _results import ROOT, markdown_table, save_json, update_section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models/reference/best.pt"))
    parser.add_argument("--fp32", default=str(ROOT / "out/main/export/model.fp32.onnx"),
                        help="FP32 ONNX model; exported from --model into a temporary folder if missing.")  # fmt: skip
    parser.add_argument("--int8", default=str(ROOT / "out/main/export/model.int8.onnx"),
                        help="INT8 ONNX model (its row is skipped if missing); model.int8.qdq.onnx beside it is added.")  # fmt: skip
    parser.add_argument("--data", default=f"camvid:{ROOT.parent / 'shared/datasets/camvid'}")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--iters", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        models = {"PyTorch eager": Path(args.model), **deployed_models(args, Path(scratch))}
        images = val_images(args.data, 8)
        timings = time_models(models, images, args.threads, args.rounds, args.iters)
        agreement = label_agreement(models, args.data)
    report = {"threads": args.threads, "rounds": args.rounds, "iters": args.iters,
              "models": {name: str(path) for name, path in models.items()}, "timings": timings,
              "agreement_with_pytorch": agreement, "goals": goals(timings, agreement),
              "environment": environment(args.threads)}  # fmt: skip
    save_json("runtime_compare_cpu.json", report)
    markdown = render(report)
    update_section("runtime_compare", markdown)
    print(markdown)


def deployed_models(args, scratch: Path) -> dict[str, Path]:
    fp32, int8 = Path(args.fp32), Path(args.int8)
    if not fp32.is_file():
        from edgeseg.export.exporter import export_onnx

        print(f"note: {fp32} not found; exporting FP32 ONNX from {args.model}")
        fp32 = export_onnx(Path(args.model), scratch / "export", verify=False).onnx_path
    models = {"ONNX Runtime FP32": fp32}
    if int8.is_file():
        models["ONNX Runtime INT8"] = int8
    else:
        print(f"note: {int8} not found; skipping the ONNX Runtime INT8 row (make it with edgeseg export --int8)")
    qdq = int8.with_name("model.int8.qdq.onnx")
    if qdq.is_file():
        models["ONNX Runtime INT8 (QDQ)"] = qdq
    return models


def val_images(data: str, count: int):
    import cv2

    folder = Path(data.split(":", 1)[1]) / "images" / "val"
    return [cv2.imread(str(p)) for p in sorted(folder.glob("*.jpg"))[:count]]


def time_models(models: dict[str, Path], images, threads: int, rounds: int, iters: int) -> dict:
    from edgeseg.deploy.bench import BenchOptions, benchmark_models

    runs: dict[str, dict[str, list]] = {name: {"end-to-end": [], "model-only": []} for name in models}
    for _ in range(rounds):
        for name, path in models.items():
            for model_only in (False, True):
                options = BenchOptions(iters=iters, warmup=2, threads=threads, model_only=model_only)
                result = benchmark_models([path], options, images)[0]
                runs[name]["model-only" if model_only else "end-to-end"].append(asdict(result))
    return {name: {mode: _combine(results) for mode, results in modes.items()} for name, modes in runs.items()}


def _combine(results: list[dict]) -> dict:
    """Median over rounds of each round's mean."""
    stages = {k: statistics.median(r["stages_ms"][k] for r in results) for k in results[0]["stages_ms"]}
    return {"mean_ms": statistics.median(r["latency_ms"]["mean"] for r in results),
            "p50_ms": statistics.median(r["latency_ms"]["p50"] for r in results),
            "p90_ms": statistics.median(r["latency_ms"]["p90"] for r in results),
            "stages_ms": stages, "peak_rss_mb": max(r["peak_rss_mb"] or 0 for r in results)}  # fmt: skip


def label_agreement(models: dict[str, Path], data: str) -> dict[str, float]:
    from edgeseg.data import SegmentationData, resolve_dataset
    from edgeseg.evaluate.fidelity import compare_to_reference, reference_predictions
    from edgeseg.runtime import Segmenter

    dataset = SegmentationData(resolve_dataset(data), "val")
    names = list(models)
    with Segmenter.load(models[names[0]]) as reference_model:
        reference = reference_predictions(reference_model, dataset, names[0])
    agreement = {}
    for name in names[1:]:
        with Segmenter.load(models[name]) as deployed:
            agreement[name] = compare_to_reference(deployed, reference, dataset, name).pixel_agreement
    return agreement


def pre_post_fraction(modes: dict) -> float:
    """Pre- plus post-processing time as a fraction of the model's own (model-only) time."""
    stages = modes["end-to-end"]["stages_ms"]
    return (stages["preprocess"] + stages["postprocess"]) / modes["model-only"]["mean_ms"]


def goals(timings: dict, agreement: dict) -> dict:
    fp32 = timings["ONNX Runtime FP32"]
    return {
        "pre_post_fraction_ort_fp32": _goal(pre_post_fraction(fp32), "<=", 0.15),
        "ort_fp32_model_vs_pytorch": _goal(
            fp32["model-only"]["mean_ms"] / timings["PyTorch eager"]["model-only"]["mean_ms"], "<=", 0.7),
        "ort_fp32_label_agreement": _goal(agreement["ONNX Runtime FP32"], ">=", 0.9999),
    }  # fmt: skip


def _goal(value: float, op: str, target: float) -> dict:
    return {"value": value, "goal": f"{op} {target}", "met": value <= target if op == "<=" else value >= target}


def render(report: dict) -> str:
    timings, agreement, met = report["timings"], report["agreement_with_pytorch"], report["goals"]
    torch_e2e = timings["PyTorch eager"]["end-to-end"]["mean_ms"]
    torch_model = timings["PyTorch eager"]["model-only"]["mean_ms"]
    rows = []
    for name, modes in timings.items():
        e2e, model = modes["end-to-end"], modes["model-only"]
        rows.append([name, f"{e2e['mean_ms']:.1f} / {e2e['p50_ms']:.1f} / {e2e['p90_ms']:.1f}",
                     f"{model['mean_ms']:.1f} / {model['p50_ms']:.1f} / {model['p90_ms']:.1f}",
                     f"{e2e['mean_ms'] / torch_e2e:.2f}x", f"{model['mean_ms'] / torch_model:.2f}x",
                     f"{e2e['stages_ms']['preprocess']:.1f} + {e2e['stages_ms']['postprocess']:.1f}",
                     f"{100 * pre_post_fraction(modes):.1f} %", f"{e2e['peak_rss_mb']:.0f}",
                     f"{100 * agreement[name]:.4f} %" if name in agreement else "reference"])  # fmt: skip
    verdict = {True: "met", False: "NOT met"}
    lines = [
        f"pre+post = {100 * met['pre_post_fraction_ort_fp32']['value']:.1f} % of ONNX Runtime FP32 model time "
        f"(goal <= 15 %): {verdict[met['pre_post_fraction_ort_fp32']['met']]}",
        f"ONNX Runtime FP32 model latency = {met['ort_fp32_model_vs_pytorch']['value']:.2f}x PyTorch eager "
        f"(goal <= 0.7x): {verdict[met['ort_fp32_model_vs_pytorch']['met']]}",
        f"ONNX Runtime FP32 labels = PyTorch's on {100 * met['ort_fp32_label_agreement']['value']:.4f} % of CamVid val "
        f"pixels (goal >= 99.99 %): {verdict[met['ort_fp32_label_agreement']['met']]}",
    ]  # fmt: skip
    return "\n".join([
        "## Runtime comparison on the CPU — `python benchmarks/runtime_compare.py`",
        "",
        f"Reference model at 360x480, batch 1, {report['threads']} threads for every backend, 8 CamVid val frames; "
        f"median of {report['rounds']} interleaved rounds of {report['iters']} runs (latency mean / p50 / p90 per image). "
        f"{report['environment']}.",
        "",
        markdown_table(["model", "end to end ms", "model only ms", "e2e vs PyTorch", "model vs PyTorch",
                        "pre + post ms", "pre+post / model", "peak RSS MB", "labels = PyTorch (CamVid val)"], rows),  # fmt: skip
        "",
        *[f"- {line}" for line in lines],
    ])


def environment(threads: int) -> str:
    from edgeseg.core.sysinfo import environment as probe, summary

    return summary(probe(threads))


if __name__ == "__main__":
    main()
