"""Export of the reference model, measured: parity, FP16/INT8 fidelity per calibration method, CPU latency.

    python benchmarks/export_int8.py [--model models/reference/best.pt] [--calib calib_data/camvid-train-heldout-256]
        [--split heldout]

1. `edgeseg export` with FP32 + FP16 + INT8 + calibration cache and the default settings, timed
   end to end (goal: under 5 minutes on a 2-core CPU); its parity and fidelity reports.
2. The same calibration images with each method (percentile, entropy, minmax): both INT8 files
   against PyTorch on --split, CamVid's held-out drive 0006R0 by default (goals: mIoU drop <= 0.5 points, no class losing more than
   2 points, pixel agreement >= 98 %).
3. ONNX Runtime CPU latency at 360x480, batch 1, 2 threads, model only, the models' rounds
   interleaved (goal: CPU-form INT8 <= 0.30 x FP32).
Writes benchmarks/results/export_int8_cpu.json and the `export_int8` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from _results import ROOT, markdown_table, save_json, update_section

import cv2
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "models/reference/best.pt"))
    parser.add_argument("--data", default=f"camvid:{ROOT.parent / 'shared/datasets/camvid'}")
    parser.add_argument("--calib", default=str(ROOT / "calib_data/camvid-train-heldout-256"))
    parser.add_argument("--split", default="heldout", help="Split of --data the proofs and fidelity use.")
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--iters", type=int, default=5, help="Timed runs per model per round.")
    parser.add_argument("--out", default=str(ROOT / "out/bench/export"))
    args = parser.parse_args()

    from edgeseg.export.exporter import export_onnx

    out = Path(args.out)
    start = time.perf_counter()
    result = export_onnx(Path(args.model), out / "percentile", data=args.data, precisions=("fp32", "fp16", "int8"),
                         calib=args.calib, calib_images=args.calib_images, split=args.split, exist_ok=True)  # fmt: skip
    export_seconds = time.perf_counter() - start
    fidelity = {"percentile": {r["model"]: r for r in result.fidelity}}
    for method in ("entropy", "minmax"):
        fidelity[method] = other_method(result, method, args)
    latency = measure_latency(result.files, args.threads, args.rounds, args.iters, args.data)
    report = {"export_seconds": export_seconds, "export_steps_seconds": _steps(out / "percentile"),
              "parity": result.parity, "fidelity": fidelity, "latency_ms": latency,
              "calib_images": args.calib_images, "calib": Path(args.calib).name, "split": args.split,
              "num_images": _split_size(args), "threads": args.threads, "environment": environment()}  # fmt: skip
    save_json("export_int8_cpu.json", report)
    markdown = render(report)
    update_section("export_int8", markdown)
    print(markdown)


def _split_size(args) -> int:
    from edgeseg.data import SegmentationData, resolve_dataset

    return len(SegmentationData(resolve_dataset(args.data), args.split, check=False))


def other_method(result, method: str, args) -> dict:
    """Calibrate with ``method`` on the same images, quantize both forms, score them like the export did."""
    from edgeseg.export import quantize
    from edgeseg.export.calibration import load_calibration_set
    from edgeseg.data import SegmentationData, resolve_dataset
    from edgeseg.export.exporter import calibration_batches
    from edgeseg.evaluate.fidelity import compare_to_reference, format_fidelity, reference_predictions
    from edgeseg.runtime import Segmenter

    fp32 = result.files["fp32"]
    data = SegmentationData(resolve_dataset(args.data), args.split)
    with Segmenter.load(args.model) as reference_model:
        reference = reference_predictions(reference_model, data, "PyTorch (checkpoint)")
    with Segmenter.load(fp32) as probe:
        meta = probe.meta
    calib_set = load_calibration_set(args.calib)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        ranges = work / "ranges.json"
        begin = time.perf_counter()
        quantize.calibrate(fp32, calibration_batches(meta, calib_set, args.calib_images, 1),
                           quantize.CalibrationSettings(method), ranges)  # fmt: skip
        print(f"{method}: calibrated in {time.perf_counter() - begin:.0f} s")
        results = {}
        for form, name in (("tensorrt", "model.int8.qdq.onnx"), ("cpu", "model.int8.onnx")):
            path = quantize.quantize_int8(fp32, ranges, work / name, form)
            with Segmenter.load(path) as deployed:
                scored = compare_to_reference(deployed, reference, data, name)
            print(format_fidelity([scored], tuple(data.spec.classes)))
            results[name] = scored.to_dict(tuple(data.spec.classes))
    return results


def measure_latency(files: dict, threads: int, rounds: int, iters: int, data: str) -> dict:
    """Model-only ONNX Runtime latency; every round runs every model, so drift hits them alike."""
    from edgeseg.runtime import Segmenter
    from edgeseg.runtime.backends.amx import has_amx_int8

    keys = [k for k in ("fp32", "fp16", "int8_qdq", "int8") if k in files]
    backends = {k: Segmenter.load(files[k], threads=threads) for k in keys}
    if has_amx_int8() and "int8" in files:  # the in-memory AMX rewrite (opt-in), measured against its absence
        backends[AMX_ON] = Segmenter.load(files["int8"], threads=threads, amx=True)
        keys.append(AMX_ON)
    image = cv2.imread(str(sorted((Path(data.split(":", 1)[1]) / "images" / "val").glob("*.jpg"))[0]))
    buffers = {}
    for key, segmenter in backends.items():
        segmenter.preprocessor(image, 0)
        buffers[key] = segmenter.preprocessor.buffer[:1].copy()
        for _ in range(2):
            segmenter.backend.infer(buffers[key])
    samples = {k: [] for k in keys}
    for _ in range(rounds):
        for key in keys:
            for _ in range(iters):
                begin = time.perf_counter()
                backends[key].backend.infer(buffers[key])
                samples[key].append(1000 * (time.perf_counter() - begin))
    return {_label(files, k): {"median": statistics.median(v), "p90": float(np.percentile(v, 90)), "n": len(v)}
            for k, v in samples.items()}  # fmt: skip


AMX_ON = "int8_amx_on"


def _label(files: dict, key: str) -> str:
    return f"{files['int8'].name}, AMX rewrite on" if key == AMX_ON else files[key].name


def render(report: dict) -> str:
    parity = report["parity"]
    lines = [
        "## Export, INT8 fidelity and CPU latency — `python benchmarks/export_int8.py`",
        "",
        f"Reference model (`models/reference/best.pt`), CamVid {report['split']} ({report['num_images']} images), "
        f"{report['calib_images']} calibration images from `calib_data/{report['calib']}`. {report['environment']}.",
        "",
        f"- Export FP32 + FP16 + INT8 (both forms) + calibration cache, with parity and fidelity reports: "
        f"**{report['export_seconds']:.0f} s** (goal < 300 s); steps: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in report["export_steps_seconds"].items() if k != "total"),
        f"- FP32 ONNX parity on {parity['num_images']} {report['split']} images: argmax agreement "
        f"**{100 * parity['argmax_agreement']:.4f} %** (goal >= 99.99 %), max |logit diff| "
        f"{parity['max_abs_logit_diff']:.2e} = **{parity['max_rel_logit_diff']:.1e} x max |logit|** (goal <= 1e-3)",
        "",
        f"Against PyTorch on CamVid {report['split']} (goals: mIoU change >= -0.50, worst class >= -2.00 points, agreement >= 98 %):",
        "",
    ]
    rows = []
    for method, models in report["fidelity"].items():
        for name, r in models.items():
            if method != "percentile" and name.startswith("model.fp"):
                continue
            label = name if name.startswith("model.fp") else f"{name} ({method})"
            rows.append([label, f"{100 * r['miou']:.2f}", f"{100 * r['miou_delta']:+.2f}",
                         f"{100 * (r['worst_class_delta'] or 0):+.2f}", f"{100 * r['pixel_agreement']:.2f}",
                         f"{100 * r['miou_vs_reference']:.2f}"])  # fmt: skip
    lines.append(markdown_table(["model", "mIoU %", "change", "worst class", "agreement %", "mIoU vs PyTorch %"], rows))
    latency = report["latency_ms"]
    fp32 = latency["model.fp32.onnx"]["median"]
    lines += ["", f"ONNX Runtime CPU, 360x480, batch 1, {report['threads']} threads, model only, rounds interleaved "
              "(goal: model.int8.onnx <= 0.30x FP32):", ""]  # fmt: skip
    lines.append(markdown_table(["model", "median ms", "p90 ms", "ratio to FP32"],
                                [[k, f"{v['median']:.1f}", f"{v['p90']:.1f}", f"{v['median'] / fp32:.2f}x"]
                                 for k, v in latency.items()]))  # fmt: skip
    return "\n".join(lines)


def _steps(folder: Path) -> dict:
    import json

    return json.loads((folder / "export.json").read_text())["seconds"]


def environment() -> str:
    import onnxruntime

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "CPU")
    return f"{time.strftime('%Y-%m-%d')}, {cpu} ({os.cpu_count()} cores), ONNX Runtime {onnxruntime.__version__}"


if __name__ == "__main__":
    main()
