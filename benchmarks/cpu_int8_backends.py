"""The CPU INT8 paths side by side: edgeseg's INT8 files on ONNX Runtime and OpenVINO, against ONNX Runtime's
own ``quantize_static`` defaults and OpenVINO on that model (issue 13's "Done when" on OpenVINO).

    python benchmarks/cpu_int8_backends.py [--export out/main/export] [--threads 2] [--rounds 5] [--iters 10]
        [--note "quiet machine"] [--no-results-md]

One process, every model loaded once, the rows' rounds interleaved so that drift of the machine
hits them alike; model only (the backend on a pre-processed CamVid val frame), batch 1, at the
export's input size (360x480 for the reference), the same thread count for every backend.
Latency is the median over rounds of each round's mean; ratios are to ONNX Runtime FP32 of the
same model. Rows:

- ONNX Runtime: FP32, edgeseg's INT8 CPU form (``model.int8.onnx``), edgeseg's INT8 TensorRT form
  (``model.int8.qdq.onnx``), and ONNX Runtime's own ``quantize_static`` U8S8 defaults (QDQ format,
  uint8 activations, int8 weights, MinMax, per tensor) on the same FP32 model, calibrated on the
  export's calibration images (its manifest, the same count), else on CamVid train frames;
- OpenVINO (CPU plugin, f32 inference precision): FP32, that U8S8 model, edgeseg's two INT8 files;
- OpenVINO bf16 on the FP32 model, only where the CPU has bf16 (else a row saying why it was skipped).

Each row's labels are compared with ONNX Runtime FP32's on the timed frames. The script says
which row wins, and whether edgeseg's fastest CPU INT8 path (its INT8 files on either backend) is
at least as fast as OpenVINO on ONNX Runtime's U8S8 model. The machine, its CPU flags and
OpenVINO's CPU capabilities go into the results.
Writes benchmarks/results/cpu_int8_backends.json and the `cpu_int8_backends` section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _results import ROOT, markdown_table, openvino_missing, save_json, update_section
from _results import machine as shared_machine

import cv2
import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.onnx_meta import read_meta
from edgeseg.runtime import open_backend
from edgeseg.runtime.preprocess import Preprocessor

REFERENCE = "ORT FP32"
U8S8_OV = "OpenVINO, ORT's U8S8 model"
  # fmt: skip


@dataclass
class Row:
    label: str
    file: str  # fp32, int8, qdq or u8s8
    backend: str
    options: dict = field(default_factory=dict)
    skipped: str | None = None
    name: str = ""  # the backend's own name once loaded, with its variant (onnxruntime+amx, openvino+bf16)
    round_means: list[float] = field(default_factory=list)
    samples: list[float] = field(default_factory=list)
    agreement: float | None = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", default=str(ROOT / "out/main/export"), help="An export folder (bash scripts/main_job.sh makes out/main/export).")
    parser.add_argument("--data", default=str(ROOT.parent / "shared/datasets/camvid"), help="CamVid root: val frames to time, train frames to calibrate if the export's manifest is gone.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=10, help="Timed runs per row per round.")
    parser.add_argument("--warmup", type=int, default=2, help="Untimed runs per row per round.")
    parser.add_argument("--frames", type=int, default=8, help="CamVid val frames the rows run on.")
    parser.add_argument("--calib-images", type=int, default=None, help="Images to calibrate the U8S8 model on (default: the export's count).")
    parser.add_argument("--note", default="", help="What the machine was doing, kept with the numbers.")
    parser.add_argument("--no-results-md", action="store_true", help="Leave benchmarks/RESULTS.md alone.")
    args = parser.parse_args()

    export = Path(args.export)
    files = {"fp32": export / "model.fp32.onnx", "int8": export / "model.int8.onnx", "qdq": export / "model.int8.qdq.onnx"}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"error: {', '.join(missing)} missing; make the export with `bash scripts/main_job.sh`")
    meta = read_meta(files["fp32"])[0]
    inputs = val_inputs(Path(args.data), meta, args.frames)
    with tempfile.TemporaryDirectory() as scratch:
        calibration = calibration_info(export, Path(args.data), args.calib_images)
        files["u8s8"] = ort_u8s8(files["fp32"], Path(scratch) / "model.u8s8.onnx", meta, calibration)
        rows = plan(args.threads)
        backends = load(rows, files, args.threads)
        measure(rows, backends, inputs, args.rounds, args.iters, args.warmup)
        for backend in backends.values():
            backend.close()
    report = {
        "export": str(export), "input_size": list(meta.input_size), "batch": 1, "threads": args.threads,
        "rounds": args.rounds, "iters": args.iters, "frames": len(inputs), "note": args.note,
        "calibration": {k: v for k, v in calibration.items() if k != "images"}, "machine": machine(args.threads), "rows": [row_report(r) for r in rows],
    }  # fmt: skip
    report["verdict"] = verdict(rows)
    save_json("cpu_int8_backends.json", report)
    markdown = render(report)
    if not args.no_results_md:
        update_section("cpu_int8_backends", markdown)
    print(markdown)


# --- inputs ------------------------------------------------------------------------------
def val_inputs(camvid: Path, meta, count: int) -> list[np.ndarray]:
    paths = sorted((camvid / "images" / "val").glob("*.jpg"))[:count]
    if not paths:
        raise SystemExit(f"error: no CamVid val frames under {camvid}/images/val; pass --data CAMVID_ROOT")
    return [_prepared(cv2.imread(str(p)), meta) for p in paths]


def _prepared(image: np.ndarray, meta) -> np.ndarray:
    preprocessor = Preprocessor(meta.preprocess, meta.input_size)
    preprocessor(image, 0)
    return preprocessor.buffer[:1].copy()


def calibration_info(export: Path, camvid: Path, count: int | None) -> dict:
    """The export's calibration images (its manifest and count), else the first CamVid train frames."""
    from edgeseg.export.calibration import load_calibration_set

    recorded = json.loads((export / "export.json").read_text()).get("calibration") or {}
    count = count or recorded.get("images") or 64
    source = recorded.get("source")
    if source:
        path = Path(source) if Path(source).is_absolute() else ROOT / source
        try:
            calib_set = load_calibration_set(path)
            return {"source": str(source), "images": [str(p) for p in calib_set.images[:count]], "count": min(count, len(calib_set))}
        except EdgesegError as err:
            print(f"note: the export's calibration set {source} cannot be used ({err}); calibrating on CamVid train frames")
    frames = sorted((camvid / "images" / "train").glob("*.jpg"))[:count]
    return {"source": f"{camvid}/images/train (first {len(frames)})", "images": [str(p) for p in frames], "count": len(frames)}


def ort_u8s8(fp32: Path, out: Path, meta, calibration: dict) -> Path:
    """ONNX Runtime's quantize_static with its U8S8 settings on the FP32 model, with edgeseg's metadata copied over."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgeseg.core.onnx_meta import META_KEY, write_meta

    paths = calibration["images"]

    class Reader(CalibrationDataReader):
        """The images in strides (ORT's CalibStridedMinMax), so ORT holds a few images' activations, not all."""

        def __init__(self) -> None:
            self.images = iter(paths)

        def __len__(self) -> int:
            return len(paths)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.images = iter(paths[start_index:end_index])

        def get_next(self):
            path = next(self.images, None)
            return None if path is None else {input_name: _prepared(cv2.imread(path), meta)}

    model = onnx.load(str(fp32))
    input_name = model.graph.input[0].name
    stride = max(n for n in range(1, 5) if len(paths) % n == 0)
    begin = time.perf_counter()
    # the stride only bounds memory (MinMax ranges merge exactly: min of minima, max of maxima); the rest is ORT's default
    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, extra_options={"CalibStridedMinMax": stride})  # fmt: skip
    calibration["seconds"] = round(time.perf_counter() - begin, 1)
    properties = {p.key: p.value for p in model.metadata_props}
    facts = json.loads(properties[META_KEY])
    properties[META_KEY] = json.dumps({**facts, "precision": "int8"})
    quantized = onnx.load(str(out))
    write_meta(quantized, properties)
    onnx.save(quantized, str(out))
    print(f"ORT quantize_static U8S8 (QDQ): {calibration['count']} images of {calibration['source']}, {calibration['seconds']} s")
    return out


# --- the rows ----------------------------------------------------------------------------
def plan(threads: int) -> list[Row]:
    rows = [
        Row(REFERENCE, "fp32", "onnxruntime"),
        Row("edgeseg INT8 CPU form on ORT", "int8", "onnxruntime"),
        Row("edgeseg INT8 TensorRT form (Q/DQ) on ORT", "qdq", "onnxruntime"),
        Row("ORT quantize_static U8S8 defaults on ORT", "u8s8", "onnxruntime"),
        Row("OpenVINO FP32", "fp32", "openvino"),
        Row(U8S8_OV, "u8s8", "openvino"),
        Row("OpenVINO, edgeseg INT8 CPU form", "int8", "openvino"),
        Row("OpenVINO, edgeseg INT8 Q/DQ form", "qdq", "openvino"),
        Row("OpenVINO bf16 on FP32", "fp32", "openvino", {"precision": "bf16"}),
    ]
    reason = openvino_missing()
    for row in rows:
        if row.backend == "openvino" and reason:
            row.skipped = reason
        elif row.options.get("precision") == "bf16":
            row.skipped = bf16_missing()
    return rows


def bf16_missing() -> str | None:
    import openvino as ov

    from edgeseg.runtime.backends.openvino_backend import cpu_has_bf16

    if cpu_has_bf16(ov.Core()):
        return None
    return "this CPU has no bf16 (no AVX512_BF16 or AMX-BF16 in OpenVINO's CPU capabilities)"


def load(rows: list[Row], files: dict[str, Path], threads: int) -> dict[str, object]:
    backends = {}
    for row in rows:
        if row.skipped:
            continue
        try:
            backend = open_backend(files[row.file], backend=row.backend, threads=threads, **row.options)
        except EdgesegError as err:
            row.skipped = f"cannot load: {err}"
            continue
        row.name = f"{backend.name}+{backend.variant}" if backend.variant else backend.name
        backends[row.label] = backend
    return backends


def measure(rows: list[Row], backends: dict, inputs: list[np.ndarray], rounds: int, iters: int, warmup: int) -> None:
    live = [row for row in rows if row.label in backends]
    labels = {row.label: [backends[row.label].infer(x)[0].argmax(0) for x in inputs] for row in live}
    for row in live:
        reference = labels[REFERENCE]
        row.agreement = float(np.mean([np.mean(a == b) for a, b in zip(labels[row.label], reference)]))
    for number in range(rounds):
        for row in live:
            backend = backends[row.label]
            for i in range(warmup):
                backend.infer(inputs[i % len(inputs)])
            times = []
            for i in range(iters):
                begin = time.perf_counter()
                backend.infer(inputs[i % len(inputs)])
                times.append(1000 * (time.perf_counter() - begin))
            row.round_means.append(statistics.fmean(times))
            row.samples += times
        print(f"round {number + 1}/{rounds}: " + ", ".join(f"{r.label} {r.round_means[-1]:.1f}" for r in live), flush=True)


def row_report(row: Row) -> dict:
    if row.skipped:
        return {"label": row.label, "file": row.file, "backend": row.backend, "options": row.options, "skipped": row.skipped}
    return {"label": row.label, "file": row.file, "backend": row.name, "options": row.options,
            "latency_ms": statistics.median(row.round_means), "p50_ms": statistics.median(row.samples),
            "p90_ms": float(np.percentile(row.samples, 90)), "round_means_ms": row.round_means,
            "agreement_with_ort_fp32": row.agreement}  # fmt: skip


def verdict(rows: list[Row]) -> dict:
    timed = {r.label: statistics.median(r.round_means) for r in rows if not r.skipped}
    reference = timed[REFERENCE]
    ratios = {label: ms / reference for label, ms in timed.items()}
    int8_rows = {r.label: timed[r.label] for r in rows if not r.skipped and r.file in ("int8", "qdq", "u8s8")}
    edgeseg_rows = {r.label: timed[r.label] for r in rows if not r.skipped and r.file in ("int8", "qdq")}
    fastest = min(timed, key=timed.__getitem__)
    fastest_int8 = min(int8_rows, key=int8_rows.__getitem__)
    edgeseg_best = min(edgeseg_rows, key=edgeseg_rows.__getitem__)
    result = {"ratios_to_ort_fp32": ratios, "fastest": fastest, "fastest_int8": fastest_int8,
              "edgeseg_fastest_int8": edgeseg_best, "edgeseg_fastest_int8_ms": edgeseg_rows[edgeseg_best]}  # fmt: skip
    if U8S8_OV in timed:
        result["openvino_u8s8_ms"] = timed[U8S8_OV]
        result["edgeseg_at_least_as_fast_as_openvino_u8s8"] = edgeseg_rows[edgeseg_best] <= timed[U8S8_OV]
    return result


# --- the machine -------------------------------------------------------------------------
def machine(threads: int) -> dict:
    info = shared_machine(threads)
    if not openvino_missing():
        import openvino as ov

        info["openvino"] = ov.__version__.split("-")[0]
        info["openvino_cpu_capabilities"] = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    return info


def render(report: dict) -> str:
    rows = []
    for row in report["rows"]:
        if "skipped" in row:
            rows.append([row["label"], row["backend"], "skipped", "-", "-", row["skipped"]])
            continue
        ratio = report["verdict"]["ratios_to_ort_fp32"][row["label"]]
        rows.append([row["label"], row["backend"], f"{row['latency_ms']:.1f} (p50 {row['p50_ms']:.1f}, p90 {row['p90_ms']:.1f})",
                     f"{ratio:.2f}", f"{100 * row['agreement_with_ort_fp32']:.2f} %", ""])  # fmt: skip
    result = report["verdict"]
    lines = [f"fastest: {result['fastest']}; fastest INT8: {result['fastest_int8']}",
             f"edgeseg's fastest CPU INT8 path: {result['edgeseg_fastest_int8']} ({result['edgeseg_fastest_int8_ms']:.1f} ms)"]  # fmt: skip
    if "openvino_u8s8_ms" in result:
        met = "met" if result["edgeseg_at_least_as_fast_as_openvino_u8s8"] else "NOT met"
        gap = 100 * (result["edgeseg_fastest_int8_ms"] / result["openvino_u8s8_ms"] - 1)
        lines.append(f"against OpenVINO on ORT's U8S8 model ({result['openvino_u8s8_ms']:.1f} ms; edgeseg {gap:+.1f} %), "
                     f"goal edgeseg <= it: {met}")  # fmt: skip
    machine_line = f"{report['machine']['summary']}; CPU flags {' '.join(report['machine']['cpu_flags']) or 'none of note'}"
    if report["machine"].get("openvino"):
        machine_line += (f"; openvino {report['machine']['openvino']} (CPU capabilities "
                         f"{', '.join(report['machine']['openvino_cpu_capabilities'])})")  # fmt: skip
    calibration = report["calibration"]
    return "\n".join([
        "## CPU INT8 backends — `python benchmarks/cpu_int8_backends.py`",
        "",
        f"Model only, batch 1, {report['input_size'][0]}x{report['input_size'][1]}, {report['threads']} threads for every "
        f"backend, {report['frames']} CamVid val frames; median over {report['rounds']} interleaved rounds of "
        f"{report['iters']} runs. Ratios against ORT FP32 of the same model; agreement: labels equal ORT FP32's. "
        f"U8S8 calibration: {calibration['count']} images of {calibration['source']}. {machine_line}."
        + (f" Note: {report['note']}." if report["note"] else ""),
        "",
        markdown_table(["model", "backend", "latency ms", "vs ORT FP32", "labels = ORT FP32", "note"], rows),
        "",
        *[f"- {line}" for line in lines],
    ])  # fmt: skip


if __name__ == "__main__":
    main()
