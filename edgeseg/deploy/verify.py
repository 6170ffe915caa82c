"""``edgeseg verify``: a deployed model against the PyTorch reference's labels stored in its bundle.

Runs the bundle's verify images through any model kind (.onnx, .engine, .pt, through
``Segmenter.load``) and compares the labels with the reference's: pixel agreement, mIoU and
per-class IoU taking the reference as ground truth, and the images that differ most. The model's
precision (its ONNX metadata, its engine manifest; .pt is fp32) picks the bundle's threshold.
Given the bundle folder itself, it verifies every model in it (``bundle_models``).

Every check that needs no inference comes first: the model against export.json's sha256, the
verify files against theirs, the model's input size and class count against the bundle's.
No torch unless the model is a .pt; no dataset.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np

from edgeseg.deploy.bundle import MANIFEST, Bundle, VerifySet, load_bundle
from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import file_sha256, write_json
from edgeseg.core.metrics import ConfusionMatrix

WORST = 3


@dataclass(frozen=True)
class ModelFacts:
    """What the model's own metadata says, read without running it (None where only loading tells)."""

    precision: str
    input_size: Optional[tuple]
    num_classes: Optional[int]


@dataclass
class VerifyReport:
    model: str
    precision: str
    min_agreement: float
    threshold_from: str  # "bundle" or "--min-agreement"
    pixel_agreement: float
    miou_vs_reference: float
    class_iou: Dict[str, Optional[float]]
    reference_pixels: Dict[str, int]
    images: List[Dict[str, Any]]
    backend: str
    seconds: float
    variant: str = ""  # the backend's variant ("amx", "bf16"), beside its name
    extra: Dict[str, Any] = field(default_factory=dict)
    confusion: Optional[np.ndarray] = None  # rows: the reference's labels, columns: the model's (not in to_dict)
    pictures: List[Any] = field(default_factory=list)  # the least agreeing images, for --report (not in to_dict)
    legend: Optional[tuple] = None  # (classes, palette) of the model, for --report

    @property
    def passed(self) -> bool:
        return self.pixel_agreement >= self.min_agreement

    def worst_classes(self, count: int = WORST) -> List[Dict[str, Any]]:
        scored = [(iou, name) for name, iou in self.class_iou.items() if iou is not None]
        return [{"class": name, "iou": iou} for iou, name in sorted(scored)[:count]]

    def worst_images(self, count: int = WORST) -> List[Dict[str, Any]]:
        return sorted(self.images, key=lambda item: item["agreement"])[:count]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "model": self.model, "precision": self.precision, "backend": self.backend, "variant": self.variant,
            "passed": self.passed,
            "agreement": self.pixel_agreement, "threshold": self.min_agreement, "threshold_from": self.threshold_from,
            "miou_vs_reference": _finite(self.miou_vs_reference),
            "class_iou_vs_reference": self.class_iou, "reference_pixels": self.reference_pixels,
            "worst_classes": self.worst_classes(), "worst_images": self.worst_images(),
            "num_images": len(self.images), "images": self.images, "seconds": round(self.seconds, 2), **self.extra,
        }  # fmt: skip


@dataclass(frozen=True)
class VerifyOptions:
    """``edgeseg verify``'s options: the bar, how the models run, and what is written."""

    min_agreement: Optional[float] = None  # a share of pixels; None takes the bundle's bar for the precision
    backend: str = "auto"
    device: Optional[str] = None
    threads: Optional[int] = None
    json_path: Optional[Path] = None
    report_path: Optional[Path] = None  # the --report page; its pictures are only kept when one is asked for


def run_verify(model: Path, bundle_dir: Optional[Path] = None, options: VerifyOptions = VerifyOptions()) -> VerifyReport:
    """Check, run, print the table and write --json and --report; the caller turns a failed report into exit 1."""
    model = Path(model)
    if not model.is_file():
        raise EdgesegError(f"{model}: no such model file; check the path")
    _check_min_agreement(options.min_agreement)
    bundle = _bundle_for(model, bundle_dir)
    facts = _checked_facts(model, bundle)
    report = _verify_one(model, facts, bundle, bundle.verify_set(), options)
    if options.json_path is not None:
        write_json(options.json_path, report.to_dict())
    _write_report(options.report_path, [report], bundle)
    return report


def run_verify_bundle(folder: Path, options: VerifyOptions = VerifyOptions()) -> List[VerifyReport]:
    """``verify BUNDLE``: every model of the bundle (``bundle_models``), each checked before any runs;
    --json holds ``{"bundle", "passed", "models": [one report per model]}``."""
    _check_min_agreement(options.min_agreement)
    bundle = load_bundle(folder)
    models = bundle_models(bundle, options.backend)
    facts = [_checked_facts(model, bundle) for model in models]
    verify_set = bundle.verify_set()
    reports = [_verify_one(model, fact, bundle, verify_set, options) for model, fact in zip(models, facts)]
    if len(reports) > 1:
        print("\n".join(f"{'PASSED' if r.passed else 'FAILED'}  {r.model} ({r.precision}): pixel agreement "
                        f"{100 * r.pixel_agreement:.3f} % (threshold {100 * r.min_agreement:.2f} %)" for r in reports))  # fmt: skip
    if options.json_path is not None:
        write_json(options.json_path, {"bundle": str(bundle.root), "passed": all(r.passed for r in reports),
                                       "models": [r.to_dict() for r in reports]})  # fmt: skip
    _write_report(options.report_path, reports, bundle)
    return reports


def _write_report(path: Optional[Path], reports: List[VerifyReport], bundle: Bundle) -> None:
    """``--report``: every verified model on one page."""
    if path is None:
        return
    from edgeseg.report import Legend, VerifiedModel, verify_page, write_report

    classes, palette = reports[0].legend or ((), ())  # set by _verify_one whenever a report is asked for
    models = [VerifiedModel(r.to_dict(), r.confusion, r.pictures) for r in reports]
    write_report(path, verify_page(models, bundle.manifest, Legend(classes, palette)))
    print(f"report: {path}")


def bundle_models(bundle: Bundle, backend: str = "auto") -> List[Path]:
    """The models ``verify BUNDLE`` checks: the ONNX models export.json lists, in its order, then the engines
    built in the folder; of those, the ones ``backend`` opens. Each backend's library must be installed."""
    from edgeseg.runtime.backends import backend_for, backend_names

    if backend != "auto" and backend not in backend_names():
        raise EdgesegError(f"--backend {backend}: unknown; choose one of {', '.join(('auto',) + backend_names())}")
    listed = [bundle.root / str(entry.get("name")) for entry in bundle.files.values() if isinstance(entry, dict)]
    engines = sorted(p for p in bundle.root.iterdir() if p.suffix.lower() in (".engine", ".plan"))
    models = [path for path in listed + engines if backend_for(path, backend) is not None]
    if not models:
        raise EdgesegError(f"{bundle.root}: holds no model that --backend {backend} runs; pass another --backend or a model file")
    by_library: Dict[str, List[str]] = {}
    for path in models:
        by_library.setdefault(str(backend_for(path, backend)), []).append(path.name)
    for library, names in by_library.items():
        if importlib.util.find_spec(library) is None:
            raise EdgesegError(f"{bundle.root}: {', '.join(names)} need {library}, which is not installed here; install "
                               "it, or pass --backend to verify only the models an installed backend runs "
                               "(e.g. --backend tensorrt for the engines), or name one model")  # fmt: skip
    return models


def _check_min_agreement(min_agreement: Optional[float]) -> None:
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise EdgesegError(f"--min-agreement {min_agreement}: give the share of pixels as a fraction, e.g. 0.999")


def _checked_facts(model: Path, bundle: Bundle) -> ModelFacts:
    """Every check of ``model`` against ``bundle`` that needs no inference; its facts."""
    _check_model_file(model, bundle)
    facts = model_facts(model)
    _check_compatible(model, bundle, facts.input_size, facts.num_classes)
    return facts


def _verify_one(model: Path, facts: ModelFacts, bundle: Bundle, verify_set: VerifySet, options: VerifyOptions) -> VerifyReport:
    """Run ``model`` over the verify set and print its table."""
    from edgeseg.runtime import Segmenter

    min_agreement = options.min_agreement
    threshold = bundle.threshold(facts.precision) if min_agreement is None else float(min_agreement)
    start = time.perf_counter()
    threads = {"threads": options.threads} if options.threads else {}
    with Segmenter.load(model, backend=options.backend, device=options.device, **threads) as segmenter:
        meta = segmenter.meta
        _check_compatible(model, bundle, tuple(meta.input_size), meta.num_classes)
        report = compare(segmenter, verify_set, model, facts.precision, threshold)
        report.backend, report.variant = segmenter.backend.name, segmenter.backend.variant
        if options.report_path is not None:
            report.pictures = _worst_pictures(segmenter, verify_set, report)
            report.legend = (tuple(meta.classes), tuple(meta.palette))
    report.seconds = time.perf_counter() - start
    report.threshold_from = "bundle" if min_agreement is None else "--min-agreement"
    report.extra = {"bundle": str(bundle.root), "model_sha256": file_sha256(model), "dataset": verify_set.dataset,
                    "split": verify_set.split, "reference": verify_set.reference}  # fmt: skip
    print(format_report(report, verify_set))
    return report


def _worst_pictures(segmenter, verify_set: VerifySet, report: VerifyReport) -> list:
    """The least agreeing verify images, run again, for the report (3 more inferences)."""
    from edgeseg.report import worst_image

    items = {item.image.name: item for item in verify_set.items}
    pictures = []
    for entry in report.worst_images():
        item = items[entry["image"]]
        picture = _read(item.image, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        title = f"{entry['image']}: {100 * entry['agreement']:.2f} % of pixels agree"
        pictures.append(worst_image(title, picture, _read(item.reference, cv2.IMREAD_UNCHANGED), segmenter.segment(picture),
                                    segmenter.lut_bgr))  # fmt: skip
    return pictures


def compare(segmenter, verify_set: VerifySet, model: Path, precision: str, threshold: float) -> VerifyReport:
    """The model's labels on each verify image against the stored reference labels."""
    classes = verify_set.classes
    confusion = ConfusionMatrix(len(classes), None)  # the reference is the ground truth: no ignored pixels
    images, agree, total = [], 0, 0
    for item in verify_set.items:
        image = _read(item.image, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)  # as edgeseg.data reads images
        reference = _read(item.reference, cv2.IMREAD_UNCHANGED)
        if reference.ndim != 2 or reference.shape != image.shape[:2] or int(reference.max()) >= len(classes):
            raise EdgesegError(f"{item.reference}: not a {len(classes)}-class label map of its image's size; re-export the bundle")
        labels = segmenter.segment(image)
        same = int(np.count_nonzero(labels == reference))
        agree, total = agree + same, total + reference.size
        confusion.update(labels, reference)
        images.append({"image": item.image.name, "agreement": same / reference.size})
    metrics = confusion.compute()
    return VerifyReport(
        model=model.name, precision=precision, min_agreement=threshold, threshold_from="bundle",
        pixel_agreement=agree / max(total, 1), miou_vs_reference=metrics.miou,
        class_iou={name: _finite(iou) for name, iou in zip(classes, metrics.iou)},
        reference_pixels={name: int(count) for name, count in zip(classes, metrics.gt_pixels)},
        images=images, backend="", seconds=0.0, confusion=confusion.matrix.copy(),
    )  # fmt: skip


def format_report(report: VerifyReport, verify_set: VerifySet) -> str:
    width = max(len("pixel agreement"), *(len(name) for name in report.class_iou))
    lines = [
        f"verify {report.model} ({report.precision}, {' '.join(filter(None, (report.backend, report.variant)))}) against the PyTorch reference "
        f"on {len(report.images)} {verify_set.dataset} {verify_set.split} images",
        f"{'class':<{width}}  {'IoU vs ref %':>12}  {'ref pixels':>10}",
        "-" * (width + 26),
    ]
    for name, iou in report.class_iou.items():
        cell = "-" if iou is None else f"{100 * iou:.2f}"
        lines.append(f"{name:<{width}}  {cell:>12}  {report.reference_pixels[name]:>10}")
    lines.append("-" * (width + 26))
    lines.append(f"{'mIoU vs ref':<{width}}  {_percent(report.miou_vs_reference):>12}")
    verdict = "PASSED" if report.passed else "FAILED"
    lines.append(f"{'pixel agreement':<{width}}  {100 * report.pixel_agreement:>12.3f}  "
                 f"(threshold {100 * report.min_agreement:.2f} %, {report.threshold_from}): {verdict}")  # fmt: skip
    worst = ", ".join(f"{item['image']} {100 * item['agreement']:.2f} %" for item in report.worst_images())
    lines.append(f"least agreement: {worst}")
    return "\n".join(lines)


def failure_line(report: VerifyReport) -> str:
    return (f"verify: FAILED {report.model} ({report.precision}): pixel agreement {100 * report.pixel_agreement:.3f} % "
            f"< {100 * report.min_agreement:.2f} % ({report.threshold_from})")  # fmt: skip


# --- checks before any inference --------------------------------------------------------
def model_facts(model: Path) -> ModelFacts:
    """Precision, input size and class count from the model's metadata (ONNX) or manifest (engine)."""
    suffix = model.suffix.lower()
    if suffix == ".onnx":
        return _onnx_facts(model)
    if suffix in (".engine", ".plan"):
        return _engine_facts(model)
    return ModelFacts("fp32", None, None)  # a PyTorch checkpoint; its size and classes are checked once loaded


def _onnx_facts(model: Path) -> ModelFacts:
    from edgeseg.core.onnx_meta import onnx_metadata, parse_meta

    meta, extras = parse_meta(onnx_metadata(model), model)  # one line for a damaged file
    return ModelFacts(str(extras.get("precision") or "fp32"), tuple(meta.input_size), meta.num_classes)


def _engine_facts(model: Path) -> ModelFacts:
    from edgeseg.runtime.trt.manifest import manifest_path
    from edgeseg.core.onnx_meta import parse_meta

    path = manifest_path(model)
    if not path.is_file():
        raise EdgesegError(f"{model}: no manifest {path.name} beside it; build the engine with `edgeseg build`")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise EdgesegError(f"{path}: unreadable engine manifest ({type(err).__name__}); rebuild with `edgeseg build`") from None
    meta, _ = parse_meta(manifest.get("onnx_metadata") or {}, model)
    return ModelFacts(str(manifest.get("precision") or "fp32"), tuple(meta.input_size), meta.num_classes)


def _bundle_for(model: Path, bundle_dir: Optional[Path]) -> Bundle:
    if bundle_dir is not None:
        return load_bundle(bundle_dir)
    if (model.parent / MANIFEST).is_file():
        return load_bundle(model.parent)
    raise EdgesegError(f"{model}: no {MANIFEST} beside it; pass --bundle DIR (the --out folder of `edgeseg export`)")


def _check_model_file(model: Path, bundle: Bundle) -> None:
    """A model the bundle lists must be the file it lists; an engine must come from the bundle's ONNX."""
    if bundle.holds(model):
        bundle.check_file(model.name)
        return
    if model.suffix.lower() not in (".engine", ".plan"):
        return
    from edgeseg.runtime.trt.manifest import manifest_path

    try:
        manifest = json.loads(manifest_path(model).read_text())
    except (OSError, ValueError):
        return  # loading the engine reports a missing or damaged manifest
    source = manifest.get("onnx")
    key = bundle.key_of(str(source)) if source else None
    if key is not None and manifest.get("onnx_sha256") not in (None, bundle.files[key].get("sha256")):
        raise EdgesegError(f"{model}: built from another {source} than this bundle's (sha256 differs); "
                           "rebuild it with `edgeseg build` from this bundle")  # fmt: skip


def _check_compatible(model: Path, bundle: Bundle, input_size: Optional[tuple], num_classes: Optional[int]) -> None:
    if input_size is not None and tuple(int(v) for v in input_size) != bundle.input_size:
        model_hw, bundle_hw = _hw(input_size), _hw(bundle.input_size)
        raise EdgesegError(f"{model}: input {model_hw} but the bundle {bundle.root} was exported at {bundle_hw}; "
                           f"verify with the bundle exported with this model (--bundle DIR), or re-export it at "
                           f"--img-size {bundle.input_size[0]} {bundle.input_size[1]}")  # fmt: skip
    if num_classes is not None and int(num_classes) != bundle.num_classes:
        raise EdgesegError(f"{model}: predicts {num_classes} classes but the bundle {bundle.root} has {bundle.num_classes}; "
                           "verify with the bundle exported with this model (--bundle DIR)")  # fmt: skip


def _read(path: Path, flags: int) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise EdgesegError(f"{path}: cannot be read as an image; re-copy the bundle or re-export")
    return image


def _hw(size) -> str:
    return f"{int(size[0])}x{int(size[1])}"


def _finite(value: float) -> Optional[float]:
    value = float(value)
    return None if math.isnan(value) else value


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"
