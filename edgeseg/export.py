"""``edgeseg export``: a checkpoint to the artefacts an edge device runs, each proven against PyTorch.

  <name>.fp32.onnx       opset 17, simplified (onnxslim), metadata inside; parity.json proves it
  <name>.fp16.onnx       float16 weights and compute, float32 input/output
  <name>.int8.qdq.onnx   TensorRT's explicit-quantization form (symmetric int8 Q/DQ)
  <name>.int8.onnx       ONNX Runtime's CPU form (uint8 activations)
  <name>.calib.cache     TensorRT calibration cache for implicit INT8; <name>.calib.json the ranges
  <name>.<p>.engine      TensorRT engines with a .json manifest (--engine)
  fidelity.json          FP16/INT8 against PyTorch on the evaluation split
  export.json            what was made, from what, with which settings, and how long it took

Everything is written into a hidden folder beside DIR and moved in only when every step
succeeded, so a failed or interrupted export leaves nothing partial in DIR.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from edgeseg import __version__
from edgeseg.checkpoint import load_model
from edgeseg.fileio import prepare_output_dir
from edgeseg.errors import EdgesegError
from edgeseg.fileio import file_sha256, write_json
from edgeseg.meta import ModelMeta
from edgeseg.onnx_meta import meta_properties, write_meta

PRECISIONS = ("fp32", "fp16", "int8")
INT8_SOURCES = ("qdq", "cache", "ranges")
DEFAULT_TRT_VERSION = "10.3.0"  # JetPack 6.1/6.2


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
    calib_method: str = "percentile"
    percentile: float = 99.99
    calib_images: int | None = 64
    keep_fp: tuple[str, ...] = ()
    max_miou_drop: float | None = None
    engine: bool = False
    int8_source: str = "qdq"
    trt_version: str | None = None  # the calibration cache header; default: TensorRT here with --engine, else 10.3.0
    workspace_mib: int = 1024
    dla_core: int | None = None
    timing_cache: str | None = None
    verify: bool = True
    data: str | None = None
    num_verify: int = 20
    fidelity_images: int | None = None
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
    _check_options(opts)
    model, meta = load_model(checkpoint)
    meta = replace(meta, input_size=_input_size(opts.img_size or meta.input_size))
    calib_set = _calibration_set(opts)
    if opts.engine:
        from edgeseg.build import require_tensorrt

        installed = ".".join(str(require_tensorrt("--engine").__version__).split(".")[:3])
        opts.trt_version = opts.trt_version or installed
    opts.trt_version = opts.trt_version or DEFAULT_TRT_VERSION
    prepare_output_dir(out_dir, opts.exist_ok, flag="--out")
    staging = out_dir.parent / f".{out_dir.name}.export-partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        run = _Export(checkpoint, model, meta, opts, staging, calib_set)
        result = run.all_steps()
        return _publish(staging, out_dir, result)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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

    def path(self, suffix: str) -> Path:
        return self.staging / f"{self.opts.name}.{suffix}"

    def all_steps(self) -> ExportResult:
        start = time.perf_counter()
        fp32 = self._timed("fp32", self.fp32)
        parity = self._timed("parity", self.parity, fp32) if self.opts.verify else None
        if "fp16" in self.opts.precisions:
            self._timed("fp16", self.fp16, fp32)
        if "int8" in self.opts.precisions:
            self._timed("int8", self.int8, fp32)
        fidelity = self._timed("fidelity", self.fidelity) if self.opts.verify and len(self.files) > 1 else None
        if self.opts.engine:
            self._timed("engines", self.engines)
        self.seconds["total"] = time.perf_counter() - start
        self.write_manifest(parity, fidelity)
        return ExportResult(fp32, self.staging / "parity.json" if parity else None, parity, dict(self.files), fidelity)

    def _timed(self, step: str, func, *args):
        begin = time.perf_counter()
        value = func(*args)
        self.seconds[step] = round(time.perf_counter() - begin, 2)
        return value

    # --- steps ---------------------------------------------------------------------
    def fp32(self) -> Path:
        path = self.path("fp32.onnx")
        opts = self.opts
        _torch_to_onnx(self.model, self.meta, path, opts.batch, opts.dynamic_batch > 0, opts.argmax, opts.opset)
        _finish_onnx(path, self._properties("fp32"))
        self.files["fp32"] = path
        print(f"fp32: {path.name}")
        return path

    def parity(self, fp32: Path) -> dict:
        from edgeseg.parity import check_parity

        return check_parity(self.model, self.meta, fp32, self.opts.data, self.opts.num_verify,
                            self.opts.allow_parity_failure, self.staging / "parity.json")  # fmt: skip

    def fp16(self, fp32: Path) -> None:
        from edgeseg.quantize import convert_fp16

        path = convert_fp16(fp32, self.path("fp16.onnx"))
        _set_precision(path, self._properties("fp16"))
        self.files["fp16"] = path
        print(f"fp16: {path.name}")

    def int8(self, fp32: Path) -> None:
        from edgeseg import quantize

        settings = quantize.CalibrationSettings(self.opts.calib_method, self.opts.percentile, self.opts.calib_images)
        ranges_path = self.path("calib.json")
        count = min(len(self.calib_set), settings.max_images or len(self.calib_set))
        print(f"int8: calibrating on {count} images of {self.calib_set.source} ({settings.method})")
        ranges = quantize.calibrate(fp32, calibration_batches(self.meta, self.calib_set, count, self._batch()),
                                    settings, ranges_path)  # fmt: skip
        keep_fp = list(self.opts.keep_fp)
        if self.opts.max_miou_drop is not None:
            keep_fp += self._sensitivity(fp32, ranges_path, keep_fp)
        qdq = quantize.quantize_int8(fp32, ranges_path, self.path("int8.qdq.onnx"), "tensorrt", keep_fp)
        cpu = quantize.quantize_int8(fp32, ranges_path, self.path("int8.onnx"), "cpu", keep_fp)
        for artefact in (qdq, cpu):
            _set_precision(artefact, self._properties("int8"))
        cache = quantize.write_calibration_cache(ranges, quantize.activation_scales(qdq), self.opts.trt_version,
                                                 self.path("calib.cache"))  # fmt: skip
        self.files.update({"int8_qdq": qdq, "int8": cpu, "calib_cache": cache, "calib_ranges": ranges_path})
        self.report["calibration"] = {
            "source": self.calib_set.source, "manifest_sha256": self.calib_set.manifest_sha256, "images": count,
            "method": settings.method, "percentile": settings.percentile if settings.method == "percentile" else None,
            "keep_fp": keep_fp, "trt_cache_header": cache.read_text().splitlines()[0],
        }  # fmt: skip
        print(f"int8: {qdq.name} (TensorRT Q/DQ), {cpu.name} (CPU), {cache.name} ({self.opts.trt_version})")

    def _sensitivity(self, fp32: Path, ranges_path: Path, keep_fp: list[str]) -> list[str]:
        from edgeseg.sensitivity import keep_sensitive_layers

        if self.opts.data is None:
            raise EdgesegError("--max-miou-drop needs labelled training images: pass --data DATA")
        report = keep_sensitive_layers(fp32, ranges_path, self.opts.data, self.opts.max_miou_drop, keep_fp, self.staging)
        self.report["sensitivity"] = report
        return report["kept_in_float"]

    def fidelity(self) -> list[dict]:
        from edgeseg.fidelity import compare_to_reference, format_fidelity, reference_predictions
        from edgeseg.runtime import Segmenter
        from edgeseg.runtime.backends.torch_backend import TorchBackend
        from edgeseg.data import SegmentationData, resolve_dataset

        data = SegmentationData(resolve_dataset(self.opts.data), "val")
        reference = reference_predictions(Segmenter(TorchBackend(self.model, self.meta, "cpu")), data,
                                          "PyTorch (checkpoint)", self.opts.fidelity_images)  # fmt: skip
        results = []
        for key in ("fp32", "fp16", "int8_qdq", "int8"):
            if key in self.files:
                with Segmenter.load(self.files[key]) as deployed:
                    results.append(compare_to_reference(deployed, reference, data, self.files[key].name))
        print(format_fidelity(results, tuple(data.spec.classes)))
        reports = [r.to_dict(tuple(data.spec.classes)) for r in results]
        write_json(self.staging / "fidelity.json", {"dataset": data.spec.name, "split": "val", "models": reports})
        self.files["fidelity"] = self.staging / "fidelity.json"
        return reports

    def engines(self) -> None:
        from edgeseg.build import build_engine

        extra = {"calibration_manifest_sha256": self.calib_set.manifest_sha256 if self.calib_set else None}
        timing_cache = Path(self.opts.timing_cache) if self.opts.timing_cache else None
        batch_range = (1, max(1, self.opts.dynamic_batch // 2), self.opts.dynamic_batch) if self.opts.dynamic_batch else None
        for precision in (p for p in self.opts.precisions if p in ("fp16", "int8")):
            source, int8_source, cache, ranges = self.files["fp32"], None, None, None
            if precision == "int8":
                int8_source = self.opts.int8_source
                source = self.files["int8_qdq"] if int8_source == "qdq" else self.files["fp32"]
                cache = self.files["calib_cache"] if int8_source == "cache" else None
                ranges = _amax_ranges(self.files["calib_ranges"]) if int8_source == "ranges" else None
            engine = build_engine(
                source, self.path(f"{precision}.engine"), precision, int8_source=int8_source, calib_cache=cache,
                dynamic_ranges=ranges, workspace_mib=self.opts.workspace_mib, timing_cache=timing_cache,
                dla_core=self.opts.dla_core, batch_range=batch_range, manifest_extra=extra,
            )  # fmt: skip
            self.files[f"{precision}_engine"] = engine

    def write_manifest(self, parity: dict | None, fidelity: list[dict] | None) -> None:
        opts = asdict(self.opts)
        manifest = {
            "edgeseg_version": __version__,
            "checkpoint": str(self.checkpoint), "checkpoint_sha256": self.source_sha256,
            "options": {k: v for k, v in opts.items() if k not in ("exist_ok",)},
            "files": {key: {"name": p.name, "sha256": file_sha256(p)} for key, p in self.files.items()},
            "parity_passed": parity["passed"] if parity else None,
            "seconds": self.seconds, **self.report,
        }  # fmt: skip
        write_json(self.staging / "export.json", manifest)

    def _properties(self, precision: str) -> dict[str, str]:
        return meta_properties(self.meta, self.output_kind, precision, self.source_sha256)

    def _batch(self) -> int:
        return 1 if self.opts.dynamic_batch else self.opts.batch


def _check_options(opts: ExportOptions) -> None:
    unknown = [p for p in opts.precisions if p not in PRECISIONS]
    if unknown or not opts.precisions:
        raise EdgesegError(f"--precision {','.join(opts.precisions)}: choose any of {', '.join(PRECISIONS)}")
    if "fp32" not in opts.precisions:
        opts.precisions = ("fp32", *opts.precisions)  # every other precision is made from, and checked against, FP32
    if opts.verify and opts.data is None:
        raise EdgesegError("--verify needs real images: pass --data DATA (its val split is used) or --no-verify")
    if "int8" in opts.precisions and opts.calib is None:
        raise EdgesegError("--precision int8 needs calibration images: pass --calib calib_data/NAME (see `edgeseg calib-data`)")
    if opts.int8_source not in INT8_SOURCES:
        raise EdgesegError(
            f"--int8-source {opts.int8_source}: choose qdq (explicit Q/DQ), cache (calibration cache) "
            "or ranges (the calibrated ranges set on the network, no cache version to match)"
        )
    if opts.batch < 1 or opts.dynamic_batch < 0:
        raise EdgesegError(f"--batch {opts.batch} / --dynamic-batch {opts.dynamic_batch}: batch sizes must be at least 1")
    if opts.max_miou_drop is not None and opts.max_miou_drop < 0:
        raise EdgesegError(f"--max-miou-drop {opts.max_miou_drop}: give the allowed drop in mIoU points, e.g. 0.5")


def _amax_ranges(ranges_path: Path) -> dict[str, float]:
    """{tensor: amax} from the saved calibration ranges, for ITensor.set_dynamic_range."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    import numpy as np

    ranges = load_tensors_data(ranges_path)
    return {name: float(np.abs(np.concatenate([np.ravel(d.lowest), np.ravel(d.highest)])).max()) for name, d in ranges.items()}


def _calibration_set(opts: ExportOptions):
    if "int8" not in opts.precisions:
        return None
    from edgeseg.calibration import load_calibration_set

    return load_calibration_set(opts.calib)


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


def _publish(staging: Path, out_dir: Path, result: ExportResult) -> ExportResult:
    for item in staging.iterdir():
        item.replace(out_dir / item.name)
    moved = {key: out_dir / path.name for key, path in result.files.items()}
    parity_path = out_dir / "parity.json" if result.parity is not None else None
    return ExportResult(moved["fp32"], parity_path, result.parity, moved, result.fidelity)
