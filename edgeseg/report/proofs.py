"""The report pages of ``export`` (report.html in the bundle), ``eval --report`` and ``verify --report``.

Each page is made from the same dictionaries the command writes as JSON (export.json, parity.json,
fidelity.json, eval's and verify's reports), so its tables hold exactly those numbers, plus what
JSON does not carry: the class colours, confusion matrices and the worst images' pictures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.report import svg
from edgeseg.report.html import Page, class_legend, esc, hex_colours, image, percent, points, table, verdict

REFERENCE_SERIES = "PyTorch reference"
# where `edgeseg bench` results sit in a bundle: its default bench-<time>.json beside the model, or --json BUNDLE/bench.json
BENCH_FILES = ("bench.json", "bench/bench.json", "bench-*.json")


@dataclass
class Legend:
    classes: Sequence[str]
    palette: Sequence[Sequence[int]]  # RGB per class

    @property
    def colours(self) -> List[str]:
        return hex_colours(self.palette)


@dataclass
class WorstImage:
    """One of the most different images: input, reference and model labels in colour, and where they differ."""

    title: str
    picture: np.ndarray  # BGR
    reference: np.ndarray  # BGR colours of the reference's labels
    model: np.ndarray  # BGR colours of the model's labels
    differ: np.ndarray  # bool, True where the labels differ


def worst_image(title: str, picture: np.ndarray, reference_labels: np.ndarray, model_labels: np.ndarray,
                lut_bgr: np.ndarray) -> WorstImage:  # fmt: skip
    from edgeseg.runtime import visualize

    return WorstImage(title, picture, visualize.colorize(reference_labels, lut_bgr), visualize.colorize(model_labels, lut_bgr),
                      reference_labels != model_labels)  # fmt: skip


def check_report_name(path: Optional[Path]) -> None:
    """Refuse, before any work, a --report that is not an .html file name (``fileio.check_outputs`` does the rest)."""
    if path is not None and Path(path).suffix.lower() not in (".html", ".htm"):
        raise EdgesegError(f"--report {path}: give an .html file name, e.g. report.html")


# --- export ---------------------------------------------------------------------------------
def export_page(bundle_dir: Path, legend: Legend, worst: Sequence[WorstImage] = ()) -> Page:
    """The bundle's proofs on one page, from the JSON files in ``bundle_dir``."""
    manifest = _read_json(bundle_dir / "export.json") or {}
    parity = _read_json(bundle_dir / "parity.json")
    fidelity = _read_json(bundle_dir / "fidelity.json")
    page = Page(f"edgeseg export: {Path(str(manifest.get('checkpoint', '?'))).name}", "the deployment bundle's proofs")
    page.add("Model", _model_table(manifest), class_legend(legend.classes, legend.colours))
    page.add("Every precision against the reference", _precision_table(manifest, parity, fidelity))
    if fidelity and fidelity.get("models"):
        models = fidelity["models"]
        reference = models[0]["reference_metrics"]["per_class"]
        series = [(REFERENCE_SERIES, [reference[c]["iou"] for c in legend.classes])]
        series += [(m["model"], [m["model_metrics"]["per_class"][c]["iou"] for c in legend.classes]) for m in models]
        note = (f'<p class="note">{esc(fidelity.get("dataset"))} {esc(fidelity.get("split"))}, '
                f'{models[0]["num_images"]} images, against the ground truth.</p>')  # fmt: skip
        page.add("Per-class IoU", note, svg.class_bars(legend.classes, series, "per-class IoU"), _class_delta_table(models, legend))
        deployed = models[-1]
        if deployed.get("confusion_matrix"):
            page.add(f"Confusion matrix: {deployed['model']}", _confusion_note("the ground truth", deployed["model"]),
                     svg.confusion(np.array(deployed["confusion_matrix"]), legend.classes, "ground truth", "prediction"))  # fmt: skip
    if worst:
        page.add("The most different images", _worst_section(worst))
    bench = _bench_results(bundle_dir)
    if bench:
        page.add("Latency", _bench_table(bench))
    page.add("Environment", _export_environment(manifest), _machine())
    return page


def _model_table(manifest: Dict[str, Any]) -> str:
    complexity = manifest.get("complexity") or {}
    size = manifest.get("input_size") or ["?", "?"]
    rows = [
        ("checkpoint", manifest.get("checkpoint", "-")),
        ("checkpoint sha256", manifest.get("checkpoint_sha256", "-")),
        ("head", complexity.get("head", "-")),
        ("input size (H x W)", f"{size[0]} x {size[1]}"),
        ("MACs", _giga(complexity.get("macs"), "G")),
        ("parameters", _mega(complexity.get("params"))),
        ("output", manifest.get("output_kind", "-")),
        ("classes", manifest.get("num_classes", len(manifest.get("classes", [])))),
        ("files", ", ".join(entry["name"] for entry in (manifest.get("files") or {}).values())),
    ]
    return table(["", ""], rows, label="model")


def _precision_table(manifest: Dict[str, Any], parity: Optional[dict], fidelity: Optional[dict]) -> str:
    files = manifest.get("files") or {}
    precision_of = {entry["name"]: ("int8" if key.startswith("int8") else key) for key, entry in files.items()}
    thresholds = manifest.get("thresholds") or {}
    rows = []
    for model in (fidelity or {}).get("models", []):
        precision = precision_of.get(model["model"], "?")
        bar = (thresholds.get(precision) or {}).get("min_agreement")
        worst = _worst_class(model.get("class_iou_delta") or {})
        passed = None if bar is None else model["pixel_agreement"] >= bar
        rows.append([model["model"], precision, percent(model["miou"]), points(model["miou_delta"]), worst,
                     percent(model["pixel_agreement"], 3), "-" if bar is None else f"≥ {percent(bar)}", verdict(passed),
                     percent(model["miou_vs_reference"])])  # fmt: skip
    header = ["model", "precision", "mIoU %", "mIoU change (points)", "worst class (points)", "pixel agreement %",
              "bar (verify)", "", "mIoU vs reference %"]  # fmt: skip
    parts = [table(header, rows, numeric=(2, 3, 5, 6, 8), raw=(7,), label="precisions")] if rows else [
        '<p class="note">No fidelity report in this bundle (exported with --no-verify or one precision).</p>']
    if parity:
        diff = parity.get("max_abs_logit_diff")
        detail = f", max |logit difference| {diff:.3e}" if diff is not None else ""
        parts.append(f'<p>Parity of {esc(parity.get("onnx"))} with PyTorch on {esc(parity.get("source"))}: argmax agreement '
                     f'{percent(parity["argmax_agreement"], 4)} % (bar ≥ {percent(parity.get("threshold_argmax_agreement"), 1)} %)'
                     f'{esc(detail)}: {verdict(parity.get("passed"))}</p>')  # fmt: skip
    parts.append('<p class="note">Each model is scored against the ground truth and against the PyTorch reference\'s own '
                 "labels (pixel agreement, mIoU vs reference); the bar is the pixel agreement `edgeseg verify` requires "
                 "of that precision on the device.</p>")  # fmt: skip
    return "".join(parts)


def _worst_class(deltas: Dict[str, Optional[float]]) -> str:
    scored = [(value, name) for name, value in deltas.items() if value is not None]
    if not scored:
        return "-"
    value, name = min(scored)
    return f"{name} {points(value)}"


def _class_delta_table(models: Sequence[dict], legend: Legend) -> str:
    reference = models[0]["reference_metrics"]["per_class"]
    header = ["class", "reference IoU %"] + [f"{m['model']} (points)" for m in models]
    rows = [[name, percent(reference[name]["iou"])] + [points(m["class_iou_delta"].get(name)) for m in models]
            for name in legend.classes]  # fmt: skip
    return table(header, rows, numeric=tuple(range(1, len(header))), label="per-class IoU change")


def _confusion_note(rows: str, model: str) -> str:
    return (f'<p class="note">Rows: {esc(rows)}; columns: {esc(model)}. Each cell: the share of its row\'s pixels, in '
            "percent (the pixel count on hover).</p>")  # fmt: skip


def _worst_section(worst: Sequence[WorstImage]) -> str:
    parts = []
    for item in worst:
        differ = np.where(item.differ[..., None], np.uint8(255), np.uint8(0)).repeat(3, axis=2)
        figures = [(item.picture, "input", "jpeg"), (item.reference, "reference", "png"), (item.model, "deployed", "png"),
                   (differ, f"disagreement: {100 * float(item.differ.mean()):.2f} % of pixels", "png")]  # fmt: skip
        cells = "".join(f"<figure>{image(picture, f'{item.title}: {caption}', kind)}<figcaption>{esc(caption)}</figcaption></figure>"
                        for picture, caption, kind in figures)  # fmt: skip
        parts.append(f"<h3>{esc(item.title)}</h3><div class=\"worst\">{cells}</div>")
    return "".join(parts)


def _bench_results(bundle_dir: Path) -> List[dict]:
    """The newest ``edgeseg bench`` results in the bundle, or none."""
    candidates = sorted((path for pattern in BENCH_FILES for path in bundle_dir.glob(pattern)),
                        key=lambda path: path.stat().st_mtime, reverse=True)  # fmt: skip
    for path in candidates:
        data = _read_json(path)
        if data and isinstance(data.get("results"), list):
            return data["results"]
    return []


def _bench_table(results: Sequence[dict]) -> str:
    rows = []
    for r in results:
        latency = r.get("latency_ms") or {}
        rows.append([Path(str(r.get("model"))).name, r.get("backend"), r.get("device"), r.get("mode"), r.get("batch_size"),
                     *(_ms(latency.get(key)) for key in ("mean", "p50", "p90", "p99")), f"{r.get('throughput_fps', 0):.1f}"])  # fmt: skip
    header = ["model", "backend", "device", "mode", "batch", "mean ms", "p50 ms", "p90 ms", "p99 ms", "images/s"]
    return table(header, rows, numeric=(4, 5, 6, 7, 8, 9), label="latency")


def _export_environment(manifest: Dict[str, Any]) -> str:
    options = manifest.get("options") or {}
    calibration = manifest.get("calibration") or {}
    rows = [("edgeseg", manifest.get("edgeseg_version", "-")),
            ("precisions", ", ".join(options.get("precisions") or [])),
            ("proof images", f"{options.get('data')} {options.get('split')}"),
            ("calibration", f"{calibration.get('method')} on {calibration.get('images')} images of {calibration.get('source')}"
             if calibration else "-"),
            ("export time", f"{(manifest.get('seconds') or {}).get('total', 0):.0f} s")]  # fmt: skip
    return "<h3>Export</h3>" + table(["", ""], rows, label="export settings")


def _machine() -> str:
    from edgeseg.core.sysinfo import environment

    env = environment()
    libraries = ", ".join(f"{name} {version}" for name, version in env["libraries"].items() if version)
    rows = [("CPU", f"{env['cpu']} ({env['logical_cores']} cores)"), ("OS", f"{env['os']} {env['machine']}"),
            ("Python", env["python"]), ("libraries", libraries), ("GPU", env["gpu"] or "-")]  # fmt: skip
    if env.get("jetson"):
        rows.append(("Jetson", ", ".join(f"{k} {v}" for k, v in env["jetson"].items() if v is not None)))
    return "<h3>This machine (where the report was made)</h3>" + table(["", ""], rows, label="machine")


# --- eval -----------------------------------------------------------------------------------
def eval_page(report: Dict[str, Any], legend: Legend, confusions: Dict[str, np.ndarray]) -> Page:
    """``eval --report``: a section per split (``report["splits"]``, or one report), ground truth as reference."""
    splits = report.get("splits") or {report.get("split", "split"): report}
    page = Page(f"edgeseg eval: {Path(str(report['model'])).name}", f"{report.get('dataset')}")
    page.add("Model", table(["", ""], [("model", report["model"]), ("dataset", report.get("dataset"))], label="model"),
             class_legend(legend.classes, legend.colours))  # fmt: skip
    summary = [[name, split["num_images"], percent(split["miou"]), percent(split["pixel_accuracy"]), percent(split["mean_accuracy"])]
               for name, split in splits.items()]  # fmt: skip
    page.add("Scores", table(["split", "images", "mIoU %", "pixel accuracy %", "mean accuracy %"], summary,
                             numeric=(1, 2, 3, 4), label="scores"))  # fmt: skip
    for name, split in splits.items():
        per_class = split["per_class"]
        rows = [[c, percent(per_class[c]["iou"]), percent(per_class[c]["accuracy"]), per_class[c]["gt_pixels"]] for c in legend.classes]
        page.add(f"Per-class IoU: {name}", svg.class_bars(legend.classes, [(name, [per_class[c]["iou"] for c in legend.classes])],
                                                         f"per-class IoU, {name}"),
                 table(["class", "IoU %", "accuracy %", "ground-truth pixels"], rows, numeric=(1, 2, 3), label=f"per-class {name}"))  # fmt: skip
        if name in confusions:
            page.add(f"Confusion matrix: {name}", _confusion_note("the ground truth", "the model's prediction"),
                     svg.confusion(confusions[name], legend.classes, "ground truth", "prediction"))  # fmt: skip
    page.add("Environment", _machine())
    return page


def fidelity_page(report: Dict[str, Any], legend: Legend, worst: Sequence[WorstImage]) -> Page:
    """``eval MODEL --reference REF --report``: the model against the reference, as in the export report."""
    page = Page(f"edgeseg eval: {Path(str(report['model'])).name} against {Path(str(report['reference'])).name}",
                f"{report.get('dataset')} {report.get('split')}")  # fmt: skip
    page.add("Classes", class_legend(legend.classes, legend.colours))
    rows = [[report["model"], percent(report["miou"]), percent(report["reference_miou"]), points(report["miou_delta"]),
             _worst_class(report.get("class_iou_delta") or {}), percent(report["pixel_agreement"], 3),
             percent(report["miou_vs_reference"])]]  # fmt: skip
    header = ["model", "mIoU %", "reference mIoU %", "mIoU change (points)", "worst class (points)", "pixel agreement %",
              "mIoU vs reference %"]  # fmt: skip
    page.add("Against the reference", table(header, rows, numeric=(1, 2, 3, 5, 6), label="fidelity"))
    reference = report["reference_metrics"]["per_class"]
    series = [(REFERENCE_SERIES, [reference[c]["iou"] for c in legend.classes]),
              (Path(str(report["model"])).name, [report["model_metrics"]["per_class"][c]["iou"] for c in legend.classes])]  # fmt: skip
    page.add("Per-class IoU", svg.class_bars(legend.classes, series, "per-class IoU"), _class_delta_table([report], legend))
    if report.get("confusion_matrix"):
        page.add("Confusion matrix", _confusion_note("the ground truth", report["model"]),
                 svg.confusion(np.array(report["confusion_matrix"]), legend.classes, "ground truth", "prediction"))  # fmt: skip
    if worst:
        page.add("The most different images", _worst_section(worst))
    page.add("Environment", _machine())
    return page


# --- verify ---------------------------------------------------------------------------------
@dataclass
class VerifiedModel:
    """One model's ``verify`` result for the page: its report (``VerifyReport.to_dict``), confusion and worst images."""

    report: Dict[str, Any]
    confusion: np.ndarray
    worst: Sequence[WorstImage] = ()


def verify_page(models: Sequence[VerifiedModel], manifest: Dict[str, Any], legend: Legend) -> Page:
    """``verify --report``: each deployed model against the reference labels stored in its bundle."""
    first = models[0].report
    several = len(models) > 1
    title = f"{len(models)} models of the bundle" if several else first["model"]
    page = Page(f"edgeseg verify: {title}", f"bundle {first.get('bundle')}")
    for item in models:
        page.add("Result" + _of(item, several), _verify_result(item.report))
    page.add("Model", _model_table(manifest), class_legend(legend.classes, legend.colours))
    for item in models:
        report, name = item.report, _of(item, several)
        ious = report["class_iou_vs_reference"]
        page.add("Per-class IoU against the reference" + name,
                 svg.class_bars(legend.classes, [(report["model"], [ious.get(c) for c in legend.classes])], "per-class IoU vs reference"),
                 table(["class", "IoU vs reference %", "reference pixels"],
                       [[c, percent(ious.get(c)), report["reference_pixels"].get(c, 0)] for c in legend.classes],
                       numeric=(1, 2), label="per-class IoU vs reference" + name))  # fmt: skip
        page.add("Confusion matrix" + name, _confusion_note("the reference's labels", report["model"]),
                 svg.confusion(item.confusion, legend.classes, "reference", "deployed model"))  # fmt: skip
        if item.worst:
            page.add("The least agreeing images" + name, _worst_section(item.worst))
    bench = _bench_results(Path(first["bundle"])) if first.get("bundle") else []
    if bench:
        page.add("Latency", _bench_table(bench))
    page.add("Environment", _machine())
    return page


def _of(item: VerifiedModel, several: bool) -> str:
    return f": {Path(str(item.report['model'])).name}" if several else ""


def _verify_result(report: Dict[str, Any]) -> str:
    rows = [("model", report["model"]), ("sha256", report.get("model_sha256", "-")), ("precision", report["precision"]),
            ("backend", report["backend"]), ("images", f"{report['num_images']} of {report.get('dataset')} {report.get('split')}"),
            ("pixel agreement %", percent(report["agreement"], 3)),
            ("bar", f"≥ {percent(report['threshold'])} % ({report['threshold_from']})"),
            ("mIoU vs reference %", percent(report["miou_vs_reference"])), ("time", f"{report['seconds']:.1f} s")]  # fmt: skip
    cells = [(name, esc(value)) for name, value in rows] + [("verdict", verdict(report["passed"]))]
    return table(["", ""], cells, raw=(1,), label="verify")


# --- small helpers --------------------------------------------------------------------------
def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _giga(value: Optional[float], unit: str) -> str:
    return "-" if value is None else f"{value / 1e9:.2f} {unit}"


def _mega(value: Optional[float]) -> str:
    return "-" if value is None else f"{value / 1e6:.2f} M"


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}"
