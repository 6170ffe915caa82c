"""INT8 with and without cross-layer equalization (CLE) and bias correction, against PyTorch.

    python benchmarks/int8_equalize.py [--model models/reference/best.pt | --model none] [--untrained-separable]
        [--calib calib_data/camvid-train-heldout-256] [--split heldout] [--variants plain,cle-skip,cle,bias,cle+bias]

For each model: the plain FP32 export; then per variant the FP32 model the INT8 step starts from
(plain, or equalized by edgeseg/export/equalize.py), calibrated on the same images with the export's
default settings, and both INT8 forms (model.int8.onnx CPU form, model.int8.qdq.onnx TensorRT
form, run on ONNX Runtime's CPU provider) scored against PyTorch on --split (CamVid's held-out
drive 0006R0 by default): mIoU change, worst class change, pixel agreement. An equalized FP32
model is scored too (it must agree with PyTorch as the plain one does).

Variants: plain (no equalization), cle-skip (CLE on ReLU chains only, ReLU6 chains left alone),
cle (CLE, ReLU6 chains bounded by the calibration maxima), bias (bias correction only),
cle+bias. Writes benchmarks/results/int8_equalize.json (with the machine and its CPU flags);
--update-results also replaces the `int8_equalize` section of RESULTS.md; --merge puts the models of an
earlier results file in the same table (`--model none --merge a.json --merge b.json` only re-renders).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _results import RESULTS_DIR, ROOT, machine, markdown_table, save_json, update_section

VARIANTS = {  # name: (equalize mode, ReLU6 handling)
    "plain": ("off", "bounded"),
    "cle-skip": ("cle", "skip"),
    "cle": ("cle", "bounded"),
    "bias": ("bias", "bounded"),
    "cle+bias": ("cle+bias", "bounded"),
}
FORMS = (("cpu", "model.int8.onnx"), ("tensorrt", "model.int8.qdq.onnx"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="Checkpoint(s); default models/reference/best.pt ('none': no checkpoint).")
    parser.add_argument("--untrained-separable", action="store_true", help="Also an untrained --head separable model.")
    parser.add_argument("--data", default=f"camvid:{ROOT.parent / 'shared/datasets/camvid'}")
    parser.add_argument("--calib", default=str(ROOT / "calib_data/camvid-train-heldout-256"))
    parser.add_argument("--split", default="heldout")
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--headroom", type=float, default=None, help="Bounded ReLU6 headroom (default: equalize.py's).")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--images", type=int, default=None, help="Score on the first N images of --split (default all).")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", default="int8_equalize.json", help="File name in benchmarks/results/.")
    parser.add_argument("--update-results", action="store_true")
    parser.add_argument("--merge", action="append", default=[],
                        help="An earlier results file in benchmarks/results/ (same split and calibration) whose models join the table first.")
    args = parser.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")

    results: list[dict] = []
    report = {"split": args.split, "images": args.images, "calib": Path(args.calib).name, "calib_images": args.calib_images,
              "data": args.data, "models": results, "machine": machine(args.threads)}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="int8_equalize-") as work:
        models = [Path(m) for m in (args.model or [str(ROOT / "models/reference/best.pt")]) if m != "none"]
        if args.untrained_separable:
            models.append(untrained_separable(args.data, Path(work)))
        for index, model in enumerate(models):
            results.append({})

            def record(entry: dict, slot: int = index) -> None:
                results[slot] = entry
                save_json(args.results, report)

            measure_model(model, variants, args, Path(work) / f"m{index}", record)
    if args.merge:
        report["models"] = [*merged_models(args.merge, report), *results]
        save_json(args.results, report)
    markdown = render(report)
    if args.update_results:
        update_section("int8_equalize", markdown)
    print(markdown)


def merged_models(names: list[str], report: dict) -> list[dict]:
    models = []
    for name in names:
        earlier = json.loads((RESULTS_DIR / name).read_text())
        if (earlier["split"], earlier["calib"], earlier["calib_images"]) != (report["split"], report["calib"], report["calib_images"]):
            raise SystemExit(f"--merge {name}: measured on another split or calibration set; rerun it with this run's settings")
        models += earlier["models"]
    return models


def untrained_separable(data: str, work: Path) -> Path:
    import torch

    from edgeseg.model.checkpoint import checkpoint_dict, save_checkpoint
    from edgeseg.data import resolve_dataset
    from edgeseg.core.meta import ModelMeta
    from edgeseg.model.network import build_model

    spec = resolve_dataset(data)
    meta = ModelMeta(num_classes=spec.num_classes, classes=spec.classes, palette=spec.palette,
                     ignore_index=spec.ignore_index, input_size=(360, 480), head="separable")  # fmt: skip
    torch.manual_seed(0)
    return save_checkpoint(checkpoint_dict(build_model(spec.num_classes, head="separable").eval(), meta),
                           work / "untrained-separable.pt")  # fmt: skip


def measure_model(model: Path, variants: list[str], args, work: Path, progress) -> None:
    """Every variant of one model; ``progress(entry)`` after each, so a long run saves what it has."""
    from edgeseg.export import quantize
    from edgeseg.export.calibration import load_calibration_set
    from edgeseg.data import SegmentationData, resolve_dataset
    from edgeseg.export.equalize import DEFAULT_HEADROOM, equalize_onnx
    from edgeseg.export.exporter import calibration_batches, export_onnx
    from edgeseg.evaluate.fidelity import compare_to_reference, reference_predictions
    from edgeseg.runtime import Segmenter

    headroom = args.headroom or DEFAULT_HEADROOM
    fp32 = export_onnx(model, work / "export", verify=False).onnx_path
    data = SegmentationData(resolve_dataset(args.data), args.split)
    classes = tuple(data.spec.classes)
    with Segmenter.load(model, threads=args.threads) as reference_model:
        reference = reference_predictions(reference_model, data, "PyTorch (checkpoint)", args.images)
        meta = reference_model.meta
    calib_set = load_calibration_set(args.calib)

    def images():
        return calibration_batches(meta, calib_set, args.calib_images, 1)

    def score(path: Path, name: str) -> dict:
        with Segmenter.load(path, threads=args.threads) as deployed:
            scored = compare_to_reference(deployed, reference, data, name).to_dict(classes)
        print(f"  {name}: mIoU {100 * scored['miou_delta']:+.2f}, worst class {100 * (scored['worst_class_delta'] or 0):+.2f}, "
              f"agreement {100 * scored['pixel_agreement']:.3f} %", flush=True)  # fmt: skip
        return scored

    rows: dict[str, dict] = {}
    summary = {"model": str(model), "head": meta.head, "num_images": len(reference.labels),
               "reference_miou": reference.metrics.miou, "variants": rows}  # fmt: skip
    for variant in variants:
        mode, relu6 = VARIANTS[variant]
        print(f"{model.name} / {variant}", flush=True)
        entry: dict = {"mode": mode, "relu6": relu6 if mode in ("cle", "cle+bias") else None}
        source = fp32
        begin = time.perf_counter()
        if mode != "off":
            source = work / f"{variant}.fp32.onnx"
            equalized = equalize_onnx(fp32, source, images, mode, relu6, headroom)
            entry["equalize"] = {k: v for k, v in equalized.to_dict().items() if k != "skipped"}
            entry["equalize"]["skipped"] = len(equalized.skipped)
            entry["equalize_seconds"] = round(time.perf_counter() - begin, 1)
            entry["fp32"] = score(source, f"{variant}: model.fp32.onnx")
        ranges = work / f"{variant}.ranges.json"
        quantize.calibrate(source, images(), quantize.CalibrationSettings(max_images=args.calib_images), ranges)
        for form, name in FORMS:
            path = quantize.quantize_int8(source, ranges, work / f"{variant}.{name}", form)
            entry[name] = score(path, f"{variant}: {name}")
        entry["seconds"] = round(time.perf_counter() - begin, 1)
        rows[variant] = entry
        progress(summary)


def render(report: dict) -> str:
    info = report["machine"]
    lines = [
        "## INT8 with cross-layer equalization and bias correction — `python benchmarks/int8_equalize.py`",
        "",
        f"CamVid {report['split']}, against PyTorch; {report['calib_images']} calibration images from "
        f"`{report['calib']}`, percentile calibration. {info.get('summary', '')}; CPU flags: "
        f"{', '.join(info.get('cpu_flags', []))}. Goals: mIoU change >= -0.50, worst class >= -2.00 points, agreement >= 98 %.",
        "",
    ]
    rows = []
    for model in report["models"]:
        for variant, entry in model["variants"].items():
            for name in ("fp32", *(name for _, name in FORMS)):
                if name not in entry:
                    continue
                r = entry[name]
                rows.append([f"{Path(model['model']).name} ({model['head']})", variant,
                             "model.fp32.onnx" if name == "fp32" else name, f"{100 * r['miou']:.2f}",
                             f"{100 * r['miou_delta']:+.2f}", f"{100 * (r['worst_class_delta'] or 0):+.2f}",
                             f"{100 * r['pixel_agreement']:.2f}"])  # fmt: skip
    lines.append(markdown_table(["model", "variant", "file", "mIoU %", "change", "worst class", "agreement %"], rows))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
