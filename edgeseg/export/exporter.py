"""``edgeseg export``: a checkpoint to the artefacts an edge device runs, each proven against PyTorch.

  <name>.fp32.onnx       opset 17, simplified (onnxslim), metadata inside; parity.json proves it
  <name>.fp16.onnx       float16 weights and compute, float32 input/output
  <name>.int8.qdq.onnx   TensorRT's explicit-quantization form (symmetric int8 Q/DQ)
  <name>.int8.qdq.fp16.onnx  the same with FP16 float layers, for strongly typed engines (edgeseg/export/qdq_fp16.py)
  <name>.int8.onnx       ONNX Runtime's CPU form (uint8 activations)
  <name>.calib.cache     TensorRT calibration cache for implicit INT8; <name>.calib.json the ranges
  <name>.<p>.engine      TensorRT engines with a .json manifest (--engine)
  fidelity.json          FP16/INT8 against PyTorch on the evaluation split
  verify/                val images and the PyTorch reference's labels, for `edgeseg verify` (edgeseg/deploy/bundle.py)
  export.json            the bundle manifest: what was made, from what, sha256s, what runs each file,
                         verify thresholds, build defaults, settings and timings
  report.html            all of the above on one page, with the worst images (edgeseg/report/)

Everything is written into a hidden folder beside DIR and moved in only when every step
succeeded, so a failed or interrupted export leaves nothing partial in DIR.
"""

from __future__ import annotations

import fcntl
import glob
import os
import secrets
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from edgeseg import __version__
from edgeseg.deploy.build import INT8_SOURCES
from edgeseg.deploy.bundle import BUNDLE_FORMAT, default_thresholds, file_requirements
from edgeseg.model.checkpoint import load_model
from edgeseg.export.equalize import MODES as EQUALIZE_MODES
from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import file_sha256, out_of_room, write_json
from edgeseg.core.meta import ModelMeta
from edgeseg.core.onnx_meta import PRECISIONS, meta_properties, write_meta
from edgeseg.export.quantize import DEFAULT_METHOD, DEFAULT_PERCENTILE

DEFAULT_TRT_VERSION = "10.3.0"  # JetPack 6.1/6.2
REPORT_WORST = 2  # most different images per deployed model in report.html


@dataclass
class ExportOptions:
    name: str = "model"
    img_size: tuple[int, int] | None = None
    batch: int = 1
    dynamic_batch: int = 0  # max batch of a dynamic batch axis; 0 = fixed --batch
    argmax: bool = False
    opset: int = 17
    precisions: tuple[str, ...] = ("fp32",)
    calib: str | None = None
    calib_method: str = DEFAULT_METHOD
    percentile: float = DEFAULT_PERCENTILE
    calib_images: int | None = 64
    keep_fp: tuple[str, ...] = ()
    max_miou_drop: float | None = None
    equalize: str = "off"  # before INT8 (edgeseg/export/equalize.py): off, cle, bias (bias correction) or cle+bias
    engine: bool = False
    int8_source: str = "qdq"
    trt_version: str | None = None  # the calibration cache header; default: TensorRT here with --engine, else 10.3.0
    workspace_mib: int = 1024
    dla_core: int | None = None
    timing_cache: str | None = None
    verify: bool = True
    data: str | None = None
    split: str = "val"  # the split of --data whose images the parity, fidelity and verify steps use
    num_verify: int = 20
    fidelity_images: int | None = None
    verify_images: int = 16  # the bundle's verify/ set: val images with the PyTorch reference's labels
    verify_thresholds: tuple[str, ...] = ()  # PRECISION=FRACTION: minimum agreement `edgeseg verify` applies
    allow_parity_failure: bool = False
    exist_ok: bool = False


@dataclass
class ExportResult:
    onnx_path: Path
    parity_path: Path | None
    parity: dict | None
    files: dict[str, Path] = field(default_factory=dict)
    fidelity: list[dict] | None = None


class _ArgmaxHead(torch.nn.Module):
    """Logits -> uint8 class ids inside the graph: C times less to copy off the device."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).argmax(dim=1).to(torch.uint8)


def export_onnx(checkpoint: Path, out_dir: Path, **options: Any) -> ExportResult:
    """Export ``checkpoint`` into ``out_dir``; keyword options are the fields of ExportOptions."""
    opts = ExportOptions(**options)
    if isinstance(opts.dynamic_batch, bool):  # the Python API also takes dynamic_batch=True
        opts.dynamic_batch = 16 if opts.dynamic_batch else 0
    return export_model(Path(checkpoint), Path(out_dir), opts)


def export_model(checkpoint: Path, out_dir: Path, opts: ExportOptions) -> ExportResult:
    """Build everything in a staging folder of this process beside ``out_dir``, then move it in whole.

    A lock beside ``out_dir`` lets one export at a time write there. With ``exist_ok`` an
    earlier export in ``out_dir`` is swapped out in one rename (never mixed with the new files).
    """
    _check_options(opts)
    out_dir = Path(os.path.abspath(out_dir))  # "out/." or "a/../b": the lock and staging go beside the real name
    _check_out(out_dir, opts.exist_ok)
    model, meta = load_model(checkpoint)
    meta = replace(meta, input_size=_input_size(opts.img_size or meta.input_size))
    calib_set = _calibration_set(opts)
    if opts.engine:  # TensorRT here and every engine buildable by it, before the long export
        from edgeseg.deploy.build import plan_build, require_tensorrt

        installed = require_tensorrt("--engine")
        for precision in _engine_precisions(opts):
            plan_build(installed, precision, opts.int8_source)
        opts.trt_version = opts.trt_version or ".".join(installed.split(".")[:3])
    opts.trt_version = opts.trt_version or DEFAULT_TRT_VERSION
    created = _make_parents(out_dir)
    try:
        with _ExportLock(out_dir):
            _remove_stale(out_dir)
            _check_out(out_dir, opts.exist_ok)  # again: the folder may have changed while we waited
            staging = out_dir.parent / f".{out_dir.name}{_STAGING}{os.getpid()}-{secrets.token_hex(4)}"
            staging.mkdir()
            try:
                result = _Export(checkpoint, model, meta, opts, staging, calib_set).all_steps()
                published = _publish(staging, out_dir, result)
            except OSError as err:  # a full disk or ``ulimit -f``: one line, and the staging folder goes
                raise out_of_room(err, "--out", out_dir) or err from None
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            if opts.engine:  # export --engine = export, then `edgeseg build` on the bundle just published
                published.files.update(_build_engines(out_dir, opts))
            return published
    except BaseException:
        for folder in created:  # deepest first; only the ones this export made, and only if still empty
            _rmdir_if_empty(folder)
        raise


class _Export:
    """The steps of one export, sharing the staging folder and the timings."""

    def __init__(self, checkpoint: Path, model, meta: ModelMeta, opts: ExportOptions, staging: Path, calib_set) -> None:
        self.checkpoint, self.model, self.meta, self.opts = checkpoint, model, meta, opts
        self.staging, self.calib_set = staging, calib_set
        self.source_sha256 = file_sha256(checkpoint)
        self.output_kind = "labels" if opts.argmax else "logits"
        self.files: dict[str, Path] = {}
        self.seconds: dict[str, float] = {}
        self.report: dict[str, Any] = {}
        self.reference = None  # the fidelity step's PyTorch predictions, reused for the verify set
        self.verify_entry: dict[str, Any] | None = None
        self.worst_pictures: list = []  # for report.html: the most different images of each model but FP32

    def path(self, suffix: str) -> Path:
        return self.staging / f"{self.opts.name}.{suffix}"

    def all_steps(self) -> ExportResult:
        start = time.perf_counter()
        self._timed("complexity", self.complexity)
        fp32 = self._timed("fp32", self.fp32)
        if "int8" in self.opts.precisions:  # --keep-fp names need the graph: check them now, not after calibrating
            from edgeseg.export.quantize import resolve_nodes

            resolve_nodes(fp32, self.opts.keep_fp)
        parity = self._timed("parity", self.parity, fp32) if self.opts.verify else None
        if "fp16" in self.opts.precisions:
            self._timed("fp16", self.fp16, fp32)
        if "int8" in self.opts.precisions:
            self._timed("int8", self.int8, fp32)
        fidelity = self._timed("fidelity", self.fidelity) if self.opts.verify and len(self.files) > 1 else None
        if self.opts.verify:
            self._timed("verify_set", self.verify_set)
        self.seconds["total"] = time.perf_counter() - start
        self.write_manifest(parity, fidelity)
        self.write_report()
        return ExportResult(fp32, self.staging / "parity.json" if parity else None, parity, dict(self.files), fidelity)

    def _timed(self, step: str, func, *args):
        begin = time.perf_counter()
        value = func(*args)
        self.seconds[step] = round(time.perf_counter() - begin, 2)
        return value

    # --- steps ---------------------------------------------------------------------
    def complexity(self) -> None:
        """MACs and parameters at the export's input size, into the metadata of every model file and export.json."""
        from edgeseg.model.complexity import measure

        counted = measure(self.model, self.meta.input_size)
        self.meta = replace(self.meta, macs=counted.macs, params=counted.params)
        self.report["complexity"] = {"head": self.meta.head, **counted.to_dict()}
        print(f"model: {self.meta.head} head, {counted.macs / 1e9:.2f} GMACs at {counted.input_size[0]}x"
              f"{counted.input_size[1]}, {counted.params / 1e6:.2f} M parameters")  # fmt: skip

    def fp32(self) -> Path:
        path = self.path("fp32.onnx")
        opts = self.opts
        _torch_to_onnx(self.model, self.meta, path, opts.batch, opts.dynamic_batch > 0, opts.argmax, opts.opset)
        _finish_onnx(path, self._properties("fp32"))
        self.files["fp32"] = path
        print(f"fp32: {path.name}")
        return path

    def parity(self, fp32: Path) -> dict:
        from edgeseg.export.parity import check_parity

        return check_parity(self.model, self.meta, fp32, self.opts.data, self.opts.num_verify,
                            self.opts.allow_parity_failure, self.staging / "parity.json", self.opts.split)  # fmt: skip

    def fp16(self, fp32: Path) -> None:
        from edgeseg.export.quantize import convert_fp16

        path = convert_fp16(fp32, self.path("fp16.onnx"))
        _set_precision(path, self._properties("fp16"))
        self.files["fp16"] = path
        print(f"fp16: {path.name}")

    def int8(self, fp32: Path) -> None:
        from edgeseg.export import quantize

        settings = quantize.CalibrationSettings(self.opts.calib_method, self.opts.percentile, self.opts.calib_images)
        ranges_path = self.path("calib.json")
        count = min(len(self.calib_set), settings.max_images or len(self.calib_set))
        print(f"int8: calibrating on {count} images of {self.calib_set.source} ({settings.method})")
        plain = fp32
        if self.opts.equalize != "off":  # INT8 starts from an equalized copy; model.fp32.onnx stays the plain export
            fp32 = self._equalize(plain, count)
        ranges = quantize.calibrate(fp32, calibration_batches(self.meta, self.calib_set, count, self._batch()),
                                    settings, ranges_path)  # fmt: skip
        keep_fp = list(self.opts.keep_fp)
        if self.opts.max_miou_drop is not None:
            keep_fp += self._sensitivity(fp32, ranges_path, keep_fp)
        qdq = quantize.quantize_int8(fp32, ranges_path, self.path("int8.qdq.onnx"), "tensorrt", keep_fp)
        cpu = quantize.quantize_int8(fp32, ranges_path, self.path("int8.onnx"), "cpu", keep_fp)
        for artefact in (qdq, cpu):
            _set_precision(artefact, self._properties("int8"))
        self.files["int8_qdq"] = qdq
        half = self._timed("int8_qdq_fp16", self.int8_qdq_fp16)  # part of this step's seconds too
        self.files["int8"] = cpu
        header = None
        if fp32 == plain:  # the cache and ranges fit model.fp32.onnx only when INT8 was calibrated on it
            cache = quantize.write_calibration_cache(ranges, quantize.activation_scales(qdq), self.opts.trt_version,
                                                     self.path("calib.cache"))  # fmt: skip
            self.files.update({"calib_cache": cache, "calib_ranges": ranges_path})
            header = cache.read_text().splitlines()[0]
        else:
            fp32.unlink()
            ranges_path.unlink()
        self.report["calibration"] = {
            "source": self.calib_set.source, "manifest_sha256": self.calib_set.manifest_sha256, "images": count,
            "method": settings.method, "percentile": settings.percentile if settings.method == "percentile" else None,
            "keep_fp": keep_fp, "trt_cache_header": header,
        }  # fmt: skip
        made = f", calib.cache ({self.opts.trt_version})" if header else " (equalized: no calibration cache)"
        print(f"int8: {qdq.name} (TensorRT Q/DQ), {half.name} (the same, FP16 float layers), {cpu.name} (CPU){made}")

    def int8_qdq_fp16(self) -> Path:
        """The Q/DQ model with FP16 float parts, which strongly typed INT8 engines (TensorRT 10.x, 11.x) are built from."""
        from edgeseg.export.qdq_fp16 import fp16_float_parts

        path = self.path("int8.qdq.fp16.onnx")
        self.report["int8_qdq_fp16"] = fp16_float_parts(self.files["int8_qdq"], path)
        self.files["int8_qdq_fp16"] = path
        return path

    def _equalize(self, fp32: Path, count: int) -> Path:
        """The equalized (--equalize) copy of the FP32 model that calibration and INT8 start from; what was done into export.json."""
        from edgeseg.export.equalize import equalize_onnx
        from edgeseg.export.quantize import resolve_nodes

        path = self.path("fp32.equalized.onnx")
        report = equalize_onnx(fp32, path, lambda: calibration_batches(self.meta, self.calib_set, count, self._batch()),
                               self.opts.equalize, keep_fp=resolve_nodes(fp32, self.opts.keep_fp))  # fmt: skip
        self.report["equalization"] = report.to_dict()
        print(f"int8: --equalize {self.opts.equalize}: {len(report.pairs)} conv pairs equalized in {report.passes} passes, "
              f"{len(report.skipped)} left alone, {len(report.bias_corrected)} biases corrected")  # fmt: skip
        return path

    def _sensitivity(self, fp32: Path, ranges_path: Path, keep_fp: list[str]) -> list[str]:
        from edgeseg.export.sensitivity import keep_sensitive_layers

        if self.opts.data is None:
            raise EdgesegError("--max-miou-drop needs labelled training images: pass --data DATA")
        report = keep_sensitive_layers(fp32, ranges_path, self.opts.data, self.opts.max_miou_drop, keep_fp, self.staging)
        self.report["sensitivity"] = report
        return report["kept_in_float"]

    def fidelity(self) -> list[dict]:
        from edgeseg.evaluate.fidelity import compare_to_reference, format_fidelity, reference_predictions, worst_pictures
        from edgeseg.runtime import Segmenter
        from edgeseg.model.torch_backend import TorchBackend
        from edgeseg.data import SegmentationData, resolve_dataset

        data = SegmentationData(resolve_dataset(self.opts.data), self.opts.split)
        reference = reference_predictions(Segmenter(TorchBackend(self.model, self.meta, "cpu")), data,
                                          "PyTorch (checkpoint)", self.opts.fidelity_images)  # fmt: skip
        self.reference = reference
        results = []
        for key in ("fp32", "fp16", "int8_qdq", "int8_qdq_fp16", "int8"):
            if key in self.files:
                with Segmenter.load(self.files[key]) as deployed:
                    results.append(compare_to_reference(deployed, reference, data, self.files[key].name))
                    if key != "fp32":
                        self.worst_pictures += worst_pictures(results[-1], deployed, reference, data, REPORT_WORST)
        print(format_fidelity(results, tuple(data.spec.classes)))
        reports = [r.to_dict(tuple(data.spec.classes)) for r in results]
        write_json(self.staging / "fidelity.json", {"dataset": data.spec.name, "split": data.split, "models": reports})
        self.files["fidelity"] = self.staging / "fidelity.json"
        return reports

    def verify_set(self) -> None:
        """verify/: images evenly spaced over --split, with the PyTorch reference's labels at their size."""
        import cv2

        from edgeseg.deploy.bundle import VERIFY_FOLDER, evenly_spaced, write_verify_set
        from edgeseg.data import SegmentationData, resolve_dataset
        from edgeseg.runtime import Segmenter
        from edgeseg.model.torch_backend import TorchBackend

        data = SegmentationData(resolve_dataset(self.opts.data), self.opts.split)
        reference = Segmenter(TorchBackend(self.model, self.meta, "cpu"))
        known = self.reference.labels if self.reference is not None else []

        def samples():
            for index in evenly_spaced(self.opts.verify_images, len(data)):
                image_bgr = cv2.cvtColor(data.read_image(index), cv2.COLOR_RGB2BGR)
                reused = index < len(known) and known[index].shape == image_bgr.shape[:2]
                yield data.pairs[index][0], known[index] if reused else reference.segment(image_bgr)

        self.verify_entry = write_verify_set(
            self.staging / VERIFY_FOLDER, samples(), dataset=data.spec.name, split=data.split,
            checkpoint=self.checkpoint.name, checkpoint_sha256=self.source_sha256,
            input_size=self.meta.input_size, classes=self.meta.classes,
        )  # fmt: skip
        print(f"verify set: {self.verify_entry['images']} {data.spec.name} {data.split} images with the PyTorch reference's labels")

    def write_manifest(self, parity: dict | None, fidelity: list[dict] | None) -> None:
        opts = asdict(self.opts)
        manifest = {
            "edgeseg_version": __version__,
            "checkpoint": str(self.checkpoint), "checkpoint_sha256": self.source_sha256,
            "options": {k: v for k, v in opts.items() if k not in ("exist_ok",)},
            "files": {key: {"name": p.name, "sha256": file_sha256(p),
                            "requires": file_requirements(key, self.opts.trt_version)} for key, p in self.files.items()},
            "parity_passed": parity["passed"] if parity else None,
            "seconds": self.seconds, **self.report, **self._bundle_keys(),
        }  # fmt: skip
        write_json(self.staging / "export.json", manifest)

    def write_report(self) -> None:
        """report.html: the bundle's JSON proofs on one page, read back from the staging folder."""
        from edgeseg.report import Legend, export_page, write_report

        page = export_page(self.staging, Legend(self.meta.classes, self.meta.palette), self.worst_pictures)
        write_report(self.staging / "report.html", page)
        print("report: report.html (open it in a browser)")

    def _bundle_keys(self) -> dict[str, Any]:
        """What makes the export folder a deployment bundle (edgeseg/deploy/bundle.py reads it)."""
        opts = self.opts
        build = {"precisions": [p for p in opts.precisions if p in ("fp16", "int8")], "int8_source": opts.int8_source,
                 "workspace_mib": opts.workspace_mib, "dla_core": opts.dla_core, "batch": opts.batch,
                 "dynamic_batch": opts.dynamic_batch}  # fmt: skip
        return {
            "bundle_format": BUNDLE_FORMAT, "input_size": list(self.meta.input_size), "output_kind": self.output_kind,
            "num_classes": self.meta.num_classes, "classes": list(self.meta.classes),
            "thresholds": default_thresholds(opts.verify_thresholds), "build": build, "verify": self.verify_entry,
        }  # fmt: skip

    def _properties(self, precision: str) -> dict[str, str]:
        return meta_properties(self.meta, self.output_kind, precision, self.source_sha256)

    def _batch(self) -> int:
        return 1 if self.opts.dynamic_batch else self.opts.batch


def _check_options(opts: ExportOptions) -> None:
    _check_types(opts)
    unknown = [p for p in opts.precisions if p not in PRECISIONS]
    if unknown or not opts.precisions:
        raise EdgesegError(f"--precision {','.join(opts.precisions)}: choose any of {', '.join(PRECISIONS)}")
    if "fp32" not in opts.precisions:
        opts.precisions = ("fp32", *opts.precisions)  # every other precision is made from, and checked against, FP32
    if opts.verify and opts.data is None:
        raise EdgesegError("--verify needs real images: pass --data DATA (its --split, val by default, is used) or --no-verify")
    if "int8" in opts.precisions and opts.calib is None:
        raise EdgesegError("--precision int8 needs calibration images: pass --calib calib_data/NAME (see `edgeseg calib-data`)")
    if opts.int8_source not in INT8_SOURCES:
        raise EdgesegError(
            f"--int8-source {opts.int8_source}: choose qdq (explicit Q/DQ), cache (calibration cache) "
            "or ranges (the calibrated ranges set on the network, no cache version to match)"
        )
    if "int8" in opts.precisions and opts.equalize != "off" and opts.int8_source != "qdq":
        raise EdgesegError(f"--equalize {opts.equalize} with --int8-source {opts.int8_source}: the calibration cache and "
                           "ranges would not fit the plain model.fp32.onnx; use --int8-source qdq or --equalize off")  # fmt: skip
    if opts.batch < 1 or opts.dynamic_batch < 0:
        raise EdgesegError(f"--batch {opts.batch} / --dynamic-batch {opts.dynamic_batch}: batch sizes must be at least 1")
    if opts.max_miou_drop is not None and opts.max_miou_drop < 0:
        raise EdgesegError(f"--max-miou-drop {opts.max_miou_drop}: give the allowed drop in mIoU points, e.g. 0.5")
    default_thresholds(opts.verify_thresholds)  # a bad --verify-threshold fails before any work
    if opts.verify and opts.verify_images < 1:
        raise EdgesegError(f"--verify-images {opts.verify_images}: the bundle's verify set needs at least 1 image")
    from edgeseg.export.quantize import CalibrationSettings

    CalibrationSettings(opts.calib_method, opts.percentile, opts.calib_images)  # refuses a bad method now, not after the FP32 step
    if "int8" in opts.precisions and opts.opset < MIN_INT8_OPSET:
        raise EdgesegError(f"--opset {opts.opset}: INT8 per-channel Q/DQ needs opset {MIN_INT8_OPSET} or later")
    if opts.verify:
        _check_split(opts.data, opts.split)  # last: it reads the data set, after every check of the flags alone


OPSETS = (11, 20)  # align_corners Resize needs 11; 20 is the last opset torch's TorchScript exporter writes
MIN_INT8_OPSET = 13  # QuantizeLinear's per-channel axis
_FLAGS = {"precisions": "--precision", "workspace_mib": "--workspace", "argmax": "--argmax/--logits",
          "engine": "--engine/--no-engine"}  # fmt: skip


def _whole(low: int, high: int | None = None, optional: bool = False):
    def check(value: Any) -> bool:
        if value is None:
            return optional
        return isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)

    return check


def _number(check) -> Any:
    return lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and check(v)


def _text(optional: bool = False):
    return lambda v: isinstance(v, str) or (optional and v is None)


def _texts(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, str) for v in value)


def _size(value: Any) -> bool:
    return value is None or (isinstance(value, tuple) and len(value) == 2 and all(_whole(32, 4096)(v) for v in value))


# option -> (test, what it must be): the settings a profile or the Python API may give in any type
_TYPES = {
    "name": (lambda v: isinstance(v, str) and bool(v) and not v.startswith(".") and not set(v) & set("/\\\0"),
             "a file name stem (no /, not starting with .)"),
    "img_size": (_size, "two whole numbers H W from 32 to 4096, e.g. [360, 480]"),
    "batch": (_whole(1, 1024), "a whole number from 1 to 1024"),
    "dynamic_batch": (_whole(0, 1024), "a whole number from 0 (a fixed batch) to 1024"),
    "argmax": (lambda v: isinstance(v, bool), "true or false"),
    "opset": (_whole(*OPSETS), f"a whole number from {OPSETS[0]} to {OPSETS[1]}"),
    "precisions": (_texts, "a list of fp32, fp16, int8"),
    "calib": (_text(optional=True), "a manifest, folder or glob of images"),
    "calib_method": (_text(), "entropy, percentile or minmax"),
    "percentile": (_number(lambda v: 50 < v <= 100), "a number in (50, 100], e.g. 99.99"),
    "calib_images": (_whole(1, optional=True), "a whole number of images, at least 1"),
    "keep_fp": (_texts, "a list of node names or op types"),
    "max_miou_drop": (lambda v: v is None or _number(lambda x: 0 <= x <= 100)(v), "mIoU points from 0 to 100, e.g. 0.5"),
    "equalize": (lambda v: v in EQUALIZE_MODES, ", ".join(EQUALIZE_MODES[:-1]) + " or " + EQUALIZE_MODES[-1]),
    "engine": (lambda v: isinstance(v, bool), "true or false"),
    "int8_source": (_text(), "qdq, cache or ranges"),
    "trt_version": (_text(optional=True), "a version such as 10.3.0"),
    "workspace_mib": (_whole(1), "a whole number of MiB, at least 1"),
    "dla_core": (_whole(0, optional=True), "a DLA core number, 0 or more"),
    "timing_cache": (_text(optional=True), "a file path"),
    "num_verify": (_whole(1), "a whole number of images, at least 1"),
    "fidelity_images": (_whole(1, optional=True), "a whole number of images, at least 1"),
}


def _check_split(data: str, split: str) -> None:
    """An unknown or empty --split is a one-line error before any model is written."""
    from edgeseg.data import SegmentationData, resolve_dataset

    SegmentationData(resolve_dataset(data), split, check=False)


def _check_types(opts: ExportOptions) -> None:
    """One line naming the flag and the profile key for a value of the wrong type or out of range."""
    for option, (test, what) in _TYPES.items():
        value = getattr(opts, option)
        if not test(value):
            shown = value if isinstance(value, str) or not isinstance(value, tuple) else list(value)
            raise EdgesegError(f"{_setting_name(option)} = {shown!r}: must be {what}")


def _setting_name(option: str) -> str:
    """The flag, and the profile key where a profile can set the option."""
    from edgeseg.export import profiles

    flag = _FLAGS.get(option, "--" + option.replace("_", "-"))
    keys = [key for key, name in getattr(profiles, "_TOP", {}).items() if name == option]
    keys += [f"[{section}] {key}" for section, names in getattr(profiles, "_SECTIONS", {}).items()
             for key, name in names.items() if name == option]  # fmt: skip
    return f"{flag} (profile key {keys[0]})" if keys else flag


def _engine_precisions(opts: ExportOptions) -> list[str]:
    return [p for p in opts.precisions if p in ("fp16", "int8")]


def _build_engines(out_dir: Path, opts: ExportOptions) -> dict[str, Path]:
    """The engines of ``--engine``, built by the same function as `edgeseg build OUT` (beside the bundle's ONNX)."""
    from edgeseg.deploy.build import BuildOptions, build_bundle

    options = BuildOptions(precisions=_engine_precisions(opts), int8_source=opts.int8_source,
                           workspace_mib=opts.workspace_mib, dla_core=opts.dla_core,
                           timing_cache=Path(opts.timing_cache) if opts.timing_cache else None,
                           dynamic_batch=opts.dynamic_batch or None)  # fmt: skip
    engines = build_bundle(out_dir, options)
    return {f"{engine.name.split('.')[-2]}_engine": engine for engine in engines}


def _calibration_set(opts: ExportOptions):
    """The --calib images, checked even when no INT8 model needs them (a wrong path is never passed over)."""
    if opts.calib is None:
        return None
    from edgeseg.export.calibration import load_calibration_set

    calib_set = load_calibration_set(opts.calib)
    if "int8" not in opts.precisions:
        print(f"note: --calib {opts.calib} is not used: only --precision int8 calibrates")
        return None
    return calib_set


def calibration_batches(meta: ModelMeta, calib_set, count: int, batch: int):
    """The calibration images through the model's own pre-processing, ``batch`` at a time."""
    from edgeseg.runtime.preprocess import Preprocessor

    preprocessor = Preprocessor(meta.preprocess, meta.input_size, max_batch=batch)
    filled = 0
    for image in calib_set.read(count):
        preprocessor(image, filled)
        filled += 1
        if filled == batch:
            yield preprocessor.buffer.copy()
            filled = 0


def _input_size(size: tuple[int, int]) -> tuple[int, int]:
    height, width = int(size[0]), int(size[1])
    if height < 32 or width < 32 or height % 8 or width % 8:
        raise EdgesegError(f"--img-size {height} {width}: use multiples of 8, at least 32 (e.g. 360 480)")
    return height, width


def _torch_to_onnx(
    model: torch.nn.Module, meta: ModelMeta, path: Path, batch: int, dynamic: bool, argmax: bool, opset: int
) -> None:
    network = _ArgmaxHead(model).eval() if argmax else model.eval()
    output = "labels" if argmax else "logits"
    dummy = torch.rand(1 if dynamic else batch, 3, *meta.input_size)
    axes = {"images": {0: "batch"}, output: {0: "batch"}} if dynamic else None
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deliberate: torch's dynamo exporter cannot emit opset 17.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            network, (dummy,), str(path), input_names=["images"], output_names=[output],
            opset_version=opset, dynamic_axes=axes, do_constant_folding=True, dynamo=False,
        )  # fmt: skip


def _finish_onnx(path: Path, properties: dict[str, str]) -> None:
    """Simplify, check that Resize kept align_corners, add the metadata, validate."""
    import onnx
    import onnxslim

    model = onnxslim.slim(onnx.load(str(path)))
    modes = [
        attr.s.decode()
        for node in model.graph.node
        if node.op_type == "Resize"
        for attr in node.attribute
        if attr.name == "coordinate_transformation_mode"
    ]
    if any(mode != "align_corners" for mode in modes):
        raise EdgesegError(f"{path.name}: a Resize node lost align_corners ({sorted(set(modes))}); report this export")
    write_meta(model, properties)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _set_precision(path: Path, properties: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    write_meta(model, properties)
    onnx.save(model, str(path))


# --- the output folder: checks, lock, staging, publishing -----------------------------------
# Beside DIR (the --out folder), all hidden: .DIR.lock, .DIR.export-<pid>-<random> (one staging
# folder per export) and, for the instant of a swap, .DIR.replaced-<pid>-<random>.
_STAGING = ".export-"
_REPLACED = ".replaced-"


def _check_out(out_dir: Path, exist_ok: bool) -> None:
    if not out_dir.name:
        raise EdgesegError(f"--out {out_dir}: the file system root cannot hold an export; pass a folder below it")
    cwd = Path(os.getcwd())
    if out_dir.is_dir() and (cwd == out_dir or out_dir in cwd.parents):
        raise EdgesegError(f"--out {out_dir}: is the current folder or holds it, and the export replaces the folder "
                           "whole; run from elsewhere or pass another --out")  # fmt: skip
    if out_dir.exists() and not out_dir.is_dir():
        raise EdgesegError(f"--out {out_dir}: is a file; pass a folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not exist_ok:
        raise EdgesegError(f"--out {out_dir}: folder exists and is not empty; choose another or pass --exist-ok "
                           "(which replaces the earlier export in it)")  # fmt: skip
    if not (out_dir / "export.json").is_file():
        raise EdgesegError(f"--out {out_dir}: --exist-ok replaces the whole folder, and this one is not an edgeseg "
                           "export (no export.json); choose another folder")  # fmt: skip


def _make_parents(out_dir: Path) -> list[Path]:
    """Create the folders above ``out_dir``; return those that did not exist, deepest first."""
    missing = [p for p in out_dir.absolute().parents if not p.exists()]
    try:
        out_dir.absolute().parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise EdgesegError(f"--out {out_dir}: cannot create its parent folder ({err.strerror}); choose a writable path") from None
    return missing


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


class _ExportLock:
    """``flock`` on ``.DIR.lock`` beside DIR: a second export into DIR is refused at once.

    The kernel drops the lock when its holder dies (even by SIGKILL), so a crash never
    leaves DIR locked. The file is removed on release; a waiter that opened the removed file
    notices (another inode at the path) and locks the new one instead.
    """

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir.parent / f".{out_dir.name}.lock"
        self.fd = -1

    def __enter__(self) -> "_ExportLock":
        while self.fd < 0:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise EdgesegError(f"--out {self.out_dir}: cannot write beside it ({err.strerror}); "
                                   "choose a folder in a writable place") from None  # fmt: skip
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise EdgesegError(f"--out {self.out_dir}: another export is writing {self.out_dir} (pid {holder}); "
                                   "wait for it or choose another --out") from None  # fmt: skip
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
            else:
                os.close(fd)
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)  # while still holding the lock (see the class docstring)
        os.close(self.fd)
        self.fd = -1


def _remove_stale(out_dir: Path) -> None:
    """Under the lock, every staging folder of DIR is a dead export's: remove them. A swap cut
    short between its two renames left DIR missing and the earlier export aside: put it back."""
    parent, name = out_dir.parent, out_dir.name
    for stale in parent.glob(f".{glob.escape(name)}{_STAGING}*"):
        shutil.rmtree(stale, ignore_errors=True)
    replaced = sorted(parent.glob(f".{glob.escape(name)}{_REPLACED}*"), key=lambda p: p.stat().st_mtime)
    if replaced and not out_dir.exists():
        os.rename(replaced.pop(), out_dir)
        print(f"restored {out_dir}: an earlier export was stopped while replacing it")
    for stale in replaced:
        shutil.rmtree(stale, ignore_errors=True)


def _publish(staging: Path, out_dir: Path, result: ExportResult) -> ExportResult:
    """Move the finished staging folder to ``out_dir`` in one rename; an earlier export there
    (--exist-ok, checked under the lock) is renamed aside first and then deleted whole."""
    if out_dir.is_dir() and any(out_dir.iterdir()):
        aside = out_dir.parent / f".{out_dir.name}{_REPLACED}{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(out_dir, aside)
        os.rename(staging, out_dir)  # dying between these two renames: the next export puts `aside` back
        shutil.rmtree(aside, ignore_errors=True)
    else:
        if out_dir.is_dir():
            out_dir.rmdir()
        os.rename(staging, out_dir)
    moved = {key: out_dir / path.relative_to(staging) for key, path in result.files.items()}
    parity_path = out_dir / "parity.json" if result.parity is not None else None
    return ExportResult(moved["fp32"], parity_path, result.parity, moved, result.fidelity)
