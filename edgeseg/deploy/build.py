"""The build stage, on the device: a bundle's ONNX model to a TensorRT engine, with a manifest of what it was built for.

``edgeseg build BUNDLE_OR_ONNX`` (and ``export --engine``, which is an export followed by this build).
Imports TensorRT, pycuda and numpy only: no torch, onnx or onnxruntime, so it runs on a Jetson as
JetPack installs it. One code path for TensorRT 8.5, 8.6, 10.x and 11.x (``build_serialized_network``,
memory-pool limits, tensor names); what differs between versions is decided by ``plan_build``:

* typing: TensorRT 11 builds strongly typed networks only; 10.x has the STRONGLY_TYPED flag, used when the
  ONNX already carries the precision (the FP16 engine from ``model.fp16.onnx``, INT8 from the Q/DQ model
  with FP16 float layers, ``model.int8.qdq.fp16.onnx``: a strongly typed layer runs in its ONNX type, see
  edgeseg/export/qdq_fp16.py); 8.5/8.6 and the ``cache``/``ranges`` sources are weakly typed (BuilderFlag.FP16/INT8
  on the FP32 model, or on ``model.int8.qdq.onnx`` for ``qdq``: INT8 where the Q/DQ pairs say, FP16 elsewhere).
* DLA: before TensorRT 11.4.1 DLA takes INT8 only by implicit quantization (calibration cache or ranges),
  not Q/DQ (NVIDIA/TensorRT#2222; NVIDIA/Model-Optimizer#1661, 2026: "DLA still only supports IQ"), so a
  DLA build stays weakly typed before 11 and its INT8 source is ``cache`` or ``ranges``; 11.4.1 builds
  strongly typed DLA networks on Jetson AGX Orin with JetPack 7.2.2 (TensorRT 11.4.1 release notes).
* INT8 sources: ``qdq`` (explicit Q/DQ), ``cache`` (a TensorRT calibration cache read by a calibrator that
  never calibrates; tied to one TensorRT version), ``ranges`` (``{tensor: amax}`` from model.calib.json set
  with ``ITensor.set_dynamic_range``). ``cache`` and ``ranges`` need weak typing: not on TensorRT 11.
* the ``--argmax`` output (ArgMax then Cast to UINT8): TensorRT documents uint8 conversions for float and
  half only, never from int32 (DataType.UINT8 in 8.5 to 11.0), and the 8.5 ONNX parser rejects such a Cast
  outright. So the build hands TensorRT a copy of the ONNX whose final Cast and output say INT32 (one byte
  each, same length) and the engine outputs int32 class ids, which the runtime casts to uint8 on the host.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple

from edgeseg.runtime.trt.manifest import BuiltEngine, engine_manifest, manifest_path, system_facts
from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import check_outputs, file_sha256, write_bytes, write_json
from edgeseg.core.onnx_meta import PRECISIONS as ENGINE_PRECISIONS, parse_meta, proto_spans, read_metadata_props
from edgeseg.runtime.trt.support import (
    dla_problem,
    dtype_name,
    first_line,
    has_progress_monitor,
    has_strongly_typed_flag,
    is_strongly_typed_only,
    needs_explicit_batch,
    require_tensorrt,
)

if TYPE_CHECKING:
    import tensorrt as trt

    from edgeseg.deploy.bundle import Bundle

INT8_SOURCES = ("qdq", "cache", "ranges")  # the one list: export.py and the CLI import it
SOURCE_KEYS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8_qdq"}  # bundle file holding a model of that precision
STRONG_INT8_KEY = "int8_qdq_fp16"  # the Q/DQ model with FP16 float layers, for strongly typed INT8 engines
DEFAULT_BATCH_RANGE = (1, 8, 16)  # for an ONNX with a dynamic batch axis and no range given
TICK_SECONDS = 15.0


# --- what to build, per TensorRT version (pure: tested without TensorRT) -----------------------
@dataclass(frozen=True)
class BuildPlan:
    precision: str
    int8_source: Optional[str]
    source_precision: str  # the precision the ONNX built from carries
    strongly_typed: bool
    builder_flags: Tuple[str, ...]  # BuilderFlag names; empty for a strongly typed network
    source_key: str  # the bundle file built from: fp32, fp16, int8_qdq, or int8_qdq_fp16 (strongly typed INT8)


# --- what the caller asks for -----------------------------------------------------------------
@dataclass(frozen=True)
class BuildOptions:
    """``edgeseg build``'s options; None takes the bundle's (its export.json's build defaults), then the built-in one."""

    precisions: Optional[Sequence[str]] = None  # fp16 by default
    int8_source: Optional[str] = None  # qdq by default; cache and ranges need the bundle
    workspace_mib: Optional[int] = None  # 1024 by default
    dla_core: Optional[int] = None
    timing_cache: Optional[Path] = None  # read and updated
    batch: Optional[int] = None  # a fixed batch
    dynamic_batch: Optional[int] = None  # the largest batch of a dynamic one
    out: Optional[Path] = None  # folder for the engines (default: beside the ONNX)
    device_index: int = 0  # the GPU built on (cuda:N)
    exist_ok: bool = False  # replace engines built before (else they are refused before TensorRT is looked for)


@dataclass(frozen=True)
class EngineOptions:
    """How TensorRT builds an engine, whatever its precision: every engine of one ``edgeseg build`` shares them."""

    workspace_mib: int = 1024
    timing_cache: Optional[Path] = None
    dla_core: Optional[int] = None
    batch_range: Optional[Tuple[int, int, int]] = None  # (min, opt, max) for an ONNX with a dynamic batch axis
    device_index: int = 0


@dataclass(frozen=True)
class Int8Scales:
    """Where an INT8 engine's scales come from: ``source`` qdq (the ONNX's Q/DQ nodes), cache (``calib_cache``, a
    TensorRT calibration cache) or ranges (``dynamic_ranges``, {tensor: amax}); ranges alone mean ``ranges``."""

    source: Optional[str] = None
    calib_cache: Optional[Path] = None
    dynamic_ranges: Optional[Dict[str, float]] = None


def plan_build(version: str, precision: str, int8_source: Optional[str] = None, onnx_precision: Optional[str] = None,
               onnx_name: str = "the ONNX", dla: bool = False) -> BuildPlan:  # fmt: skip
    """How TensorRT ``version`` builds a ``precision`` engine; ``onnx_precision`` when the ONNX is given, else pick one.

    ``dla``: on 8.x/10.x a DLA build stays weakly typed (BuilderFlag.FP16/INT8 with GPU fallback), the path
    NVIDIA documents for DLA before 11, and takes INT8 from calibration (``cache``/``ranges``), not from Q/DQ
    nodes (see the module docstring); strongly typed DLA networks are documented from 11.4.1 on."""
    if precision not in ENGINE_PRECISIONS:
        raise EdgesegError(f"--precision {precision}: a TensorRT engine is one of {', '.join(ENGINE_PRECISIONS)}")
    source = _int8_source(precision, int8_source)
    only_strong = is_strongly_typed_only(version)
    if only_strong and source in ("cache", "ranges"):
        raise EdgesegError(f"--int8-source {source}: TensorRT {version} builds strongly typed networks only, which "
                           "take no calibration cache or set ranges; use --int8-source qdq (the Q/DQ model)")  # fmt: skip
    if dla and source == "qdq" and not only_strong:
        raise EdgesegError(f"--dla-core with --int8-source qdq: DLA under TensorRT {version} runs INT8 only from "
                           "calibration scales, not Q/DQ nodes; use --int8-source cache (or ranges)")  # fmt: skip
    carried = "int8" if source == "qdq" else precision if precision == "fp16" else "fp32"  # what a typed ONNX holds
    may_type = has_strongly_typed_flag(version) and not dla
    if onnx_precision is None:
        strong = only_strong or (may_type and carried != "fp32")
        onnx_precision = carried if strong else ("int8" if source == "qdq" else "fp32")
    else:
        if source == "qdq" and onnx_precision != "int8":
            raise EdgesegError(f"{onnx_name}: an {onnx_precision} model, no Q/DQ scales for --int8-source qdq; pass the "
                               "bundle folder or its model.int8.qdq.onnx")  # fmt: skip
        if only_strong and onnx_precision != carried:
            raise EdgesegError(f"{onnx_name}: an {onnx_precision} model; TensorRT {version} builds a {precision} "
                               f"engine only from a {carried} ONNX (strongly typed): pass the bundle folder or "
                               f"its {SOURCE_KEYS[carried]} model")  # fmt: skip
        strong = only_strong or (may_type and onnx_precision == carried != "fp32")
    flags: Tuple[str, ...] = () if strong else {"fp32": (), "fp16": ("FP16",), "int8": ("FP16", "INT8")}[precision]
    key = SOURCE_KEYS[onnx_precision] if onnx_precision in SOURCE_KEYS else "fp32"
    if key == "int8_qdq" and strong:
        key = STRONG_INT8_KEY  # FP16 outside the Q/DQ pairs, as the weakly typed build's FP16 flag gives
    return BuildPlan(precision, source, onnx_precision, strong, flags, key)


def _int8_source(precision: str, int8_source: Optional[str]) -> Optional[str]:
    if precision != "int8":
        return None
    source = int8_source or "qdq"
    if source not in INT8_SOURCES:
        raise EdgesegError(f"--int8-source {source}: choose qdq (the Q/DQ model), cache (the calibration cache) "
                           "or ranges (the calibrated ranges in model.calib.json)")  # fmt: skip
    return source


# --- calibrated ranges, without onnxruntime -----------------------------------------------
def read_amax_ranges(path: Path) -> Dict[str, float]:
    """{tensor: amax} from model.calib.json (ONNX Runtime's save_tensors_data JSON, or a plain {tensor: amax})."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise EdgesegError(f"{path}: unreadable calibration ranges ({first_line(err)}); re-copy the bundle") from None
    tensors = data.get("data") if isinstance(data, dict) and "data" in data else data
    if not isinstance(tensors, dict) or not tensors:
        raise EdgesegError(f"{path}: holds no calibrated ranges; re-export with --precision int8")
    ranges = {}
    for name, entry in tensors.items():
        values = [entry] if isinstance(entry, (int, float)) else _range_values(entry)
        if not values:
            raise EdgesegError(f"{path}: tensor {name} has no lowest/highest range; re-export with --precision int8")
        ranges[str(name)] = max(abs(float(v)) for v in values)
    return ranges


def _range_values(entry: Any) -> List[float]:
    """The numbers of a TensorData's lowest and highest (a float, or {"data": ..., "CLS": "numpy.array"})."""
    values: List[float] = []
    for key in ("lowest", "highest"):
        value = entry.get(key) if isinstance(entry, dict) else None
        value = value.get("data") if isinstance(value, dict) else value
        values.extend(_flatten(value))
    return values


def _flatten(value: Any) -> Iterator[float]:
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _flatten(item)
    elif isinstance(value, (int, float)):
        yield float(value)


# --- the --argmax output: Cast(UINT8) -> Cast(INT32), read and patched without the onnx package ------
_UINT8, _INT32 = 2, 6  # onnx.TensorProto.DataType


def int32_labels_model(payload: bytes) -> Optional[bytes]:
    """A copy of the ONNX whose graph output made by Cast(to=UINT8) is Cast(to=INT32); None when there is none."""
    model = bytearray(payload)
    graph = _field(model, 0, len(model), 7, 2)  # ModelProto.graph
    if graph is None:
        return None
    patched = False
    for start, end in _fields(model, *graph, 12, 2):  # GraphProto.output (ValueInfoProto)
        name, elem_type = _output_name_and_type(model, start, end)
        if elem_type is None or model[elem_type] != _UINT8:
            continue
        cast_to = _cast_to_uint8(model, graph, name)
        if cast_to is not None:
            model[cast_to] = model[elem_type] = _INT32  # both varints stay one byte long
            patched = True
    return bytes(model) if patched else None


def _output_name_and_type(model: bytearray, start: int, end: int) -> Tuple[bytes, Optional[int]]:
    name = _field(model, start, end, 1, 2)
    type_proto = _field(model, start, end, 2, 2)
    tensor = _field(model, *type_proto, 1, 2) if type_proto else None  # TypeProto.tensor_type
    elem = _field(model, *tensor, 1, 0) if tensor else None  # Tensor.elem_type
    elem_at = elem[0] if elem and elem[1] - elem[0] == 1 else None
    return (bytes(model[name[0] : name[1]]) if name else b""), elem_at


def _cast_to_uint8(model: bytearray, graph: Tuple[int, int], output: bytes) -> Optional[int]:
    """Offset of the ``to`` value of the Cast node producing ``output``, when it casts to UINT8."""
    for start, end in _fields(model, *graph, 1, 2):  # GraphProto.node
        outputs = [bytes(model[a:b]) for a, b in _fields(model, start, end, 2, 2)]
        op_type = _field(model, start, end, 4, 2)
        if output not in outputs or not op_type or bytes(model[op_type[0] : op_type[1]]) != b"Cast":
            continue
        for a, b in _fields(model, start, end, 5, 2):  # NodeProto.attribute
            name = _field(model, a, b, 1, 2)
            value = _field(model, a, b, 3, 0)  # AttributeProto.i
            if name and bytes(model[name[0] : name[1]]) == b"to" and value and value[1] - value[0] == 1:
                return value[0] if model[value[0]] == _UINT8 else None
    return None


def _field(data: bytearray, start: int, end: int, number: int, wire: int) -> Optional[Tuple[int, int]]:
    return next(iter(_fields(data, start, end, number, wire)), None)


def _fields(data: bytearray, start: int, end: int, number: int, wire: int) -> List[Tuple[int, int]]:
    """(start, end) of every value of field ``number`` in the message at data[start:end]."""
    return [(a, b) for n, w, a, b in proto_spans(data, start, end) if n == number and w == wire]


# --- the build ------------------------------------------------------------------------------
def build_engine(onnx_path: Path, engine_path: Path, precision: str, options: EngineOptions = EngineOptions(),
                 int8: Int8Scales = Int8Scales(), manifest_extra: Optional[Dict[str, Any]] = None) -> Path:  # fmt: skip
    """Build ``engine_path`` from ``onnx_path`` on GPU ``options.device_index``; writes the engine and ``<engine>.json``
    atomically. ``manifest_extra`` (from a bundle) is merged into the manifest last."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if int8.dynamic_ranges and precision == "int8" and int8.source is None:
        int8 = replace(int8, source="ranges")
    _check_arguments(onnx_path, precision, options, int8)
    version = require_tensorrt("edgeseg build")
    payload = onnx_path.read_bytes()
    onnx_sha256 = file_sha256(onnx_path)
    properties = read_metadata_props(payload, onnx_path)
    _, exported = parse_meta(properties, onnx_path)
    plan = plan_build(version, precision, int8.source, str(exported["precision"]), onnx_path.name,
                      options.dla_core is not None)  # fmt: skip
    if plan.int8_source == "ranges" and not int8.dynamic_ranges:
        raise EdgesegError("--int8-source ranges: no calibrated ranges given; build from the bundle (model.calib.json)")

    from edgeseg.runtime.trt.cuda import current, primary_context

    with current(primary_context(options.device_index)):
        serialized, details, seconds = _build(onnx_path, payload, plan, version, options, int8)
    manifest = engine_manifest(facts=system_facts(device_index=options.device_index), onnx_path=onnx_path,
                               onnx_sha256=onnx_sha256, onnx_metadata=properties,
                               engine=_built_engine(plan, options, details, seconds), extra=manifest_extra)  # fmt: skip
    write_bytes(engine_path, serialized)
    write_json(manifest_path(engine_path), manifest)
    if options.timing_cache is not None:
        write_bytes(options.timing_cache, details["timing_cache_bytes"])
    print(f"built {engine_path} in {seconds:.1f} s", flush=True)
    return engine_path


def _built_engine(plan: BuildPlan, options: EngineOptions, details: Dict[str, Any], seconds: float) -> BuiltEngine:
    """What the manifest records of the build: the engine's tensors, and the flags and options it was built with."""
    flags = {"workspace_mib": options.workspace_mib, "dla_core": options.dla_core, "strongly_typed": plan.strongly_typed,
             "builder_flags": list(plan.builder_flags), "labels_int32": details["labels_int32"],
             "timing_cache": str(options.timing_cache) if options.timing_cache else None,
             "timing_cache_loaded": details["timing_cache_loaded"]}  # fmt: skip
    return BuiltEngine(precision=plan.precision, int8_source=plan.int8_source, inputs=details["inputs"],
                       outputs=details["outputs"], batch_range=details["batch_range"], build_flags=flags,
                       build_seconds=seconds)  # fmt: skip


def _build(onnx_path: Path, payload: bytes, plan: BuildPlan, version: str, options: EngineOptions,
           int8: Int8Scales) -> Tuple[bytes, Dict[str, Any], float]:  # fmt: skip
    """(serialized engine, what the manifest records, build seconds); the primary context is current."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    problem = dla_problem(options.dla_core, int(builder.num_DLA_cores))
    if problem:
        raise EdgesegError(problem)
    network = builder.create_network(_network_flags(version, plan.strongly_typed))
    parser = trt.OnnxParser(network, logger)  # held until the build ends: the network uses its weights
    patched = int32_labels_model(payload)
    if not parser.parse(patched or payload, str(onnx_path)):
        reason = _parser_error(parser.get_error(0)) if parser.num_errors else "unknown error"
        raise EdgesegError(f"{onnx_path}: TensorRT {version}'s ONNX parser failed ({parser.num_errors} errors, "
                           f"first: {reason}); re-export it with `edgeseg export` (opset 17)")  # fmt: skip
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    batch_range, profile = _add_batch_profile(builder, network, config, options.batch_range, onnx_path)
    calibrator = _set_precision(network, config, plan, version, int8)
    if calibrator is not None and profile is not None:
        config.set_calibration_profile(profile)  # implicit INT8 with a dynamic batch asks for one, even from a cache
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache_loaded = _use_timing_cache(config, options.timing_cache)
    monitor = _attach_progress_monitor(config, version)
    print(f"building a {plan.precision} engine from {onnx_path.name} (TensorRT {version}, "
          f"{'strongly' if plan.strongly_typed else 'weakly'} typed) ...", flush=True)  # fmt: skip
    start = time.perf_counter()
    with _ticking(start, quiet=monitor is not None):
        serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EdgesegError(f"{onnx_path}: TensorRT could not build a {plan.precision} engine (see TensorRT's "
                           "messages above)")  # fmt: skip
    details = {
        "inputs": _io(network, "input"), "outputs": _io(network, "output"), "batch_range": batch_range,
        "labels_int32": patched is not None, "timing_cache_loaded": cache_loaded,
        "timing_cache_bytes": _timing_cache_bytes(config) if options.timing_cache is not None else b"",
    }  # fmt: skip
    return bytes(serialized), details, seconds


def _check_arguments(onnx_path: Path, precision: str, options: EngineOptions, int8: Int8Scales) -> None:
    if not onnx_path.is_file():
        raise EdgesegError(f"{onnx_path}: no such ONNX model; export one with `edgeseg export`")
    _check_precisions([precision], int8.source)
    source = _int8_source(precision, int8.source)
    if source == "cache" and (int8.calib_cache is None or not Path(int8.calib_cache).is_file()):
        raise EdgesegError(f"--int8-source cache: no calibration cache {int8.calib_cache}; export with --precision int8 first")
    dla_core = options.dla_core
    if dla_core is not None and (dla_core < 0 or precision == "fp32"):
        raise EdgesegError(f"--dla-core {dla_core}: DLA runs fp16 or int8 engines on core 0 or 1; add --precision fp16")
    if options.workspace_mib < 1:
        raise EdgesegError(f"--workspace {options.workspace_mib}: give the builder's scratch memory in MiB, e.g. 1024")


def _network_flags(version: str, strongly_typed: bool) -> int:
    import tensorrt as trt

    if is_strongly_typed_only(version):
        return 0  # 11.x: every network is strongly typed (the flag is deprecated there)
    if strongly_typed:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # 10.x
    if needs_explicit_batch(version):
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # 8.5/8.6: required for ONNX
    return 0


def _parser_error(error: "trt.ParserError") -> str:
    node = error.node()
    description = first_line(error.desc())
    return f"node {node}: {description}" if node >= 0 else description


def _add_batch_profile(builder: "trt.Builder", network: "trt.INetworkDefinition", config: "trt.IBuilderConfig",
                       batch_range: Optional[Tuple[int, int, int]], onnx_path: Path,
                       ) -> Tuple[Optional[Tuple[int, int, int]], Optional["trt.IOptimizationProfile"]]:  # fmt: skip
    """(batch range, profile): an optimization profile (min, opt, max) on the batch axis, if the ONNX's is dynamic."""
    images = network.get_input(0)
    shape = tuple(images.shape)
    if any(dim < 0 for dim in shape[1:]):
        raise EdgesegError(f"{onnx_path}: input {images.name} has a dynamic size {shape}; export with a fixed --img-size")
    if shape[0] >= 0:
        if batch_range is not None and tuple(batch_range) != (shape[0],) * 3:
            raise EdgesegError(f"--batch/--dynamic-batch: {onnx_path.name} has a fixed batch of {shape[0]}; "
                               "re-export it with --dynamic-batch")  # fmt: skip
        return None, None
    low, opt, high = batch_range or DEFAULT_BATCH_RANGE
    if not 1 <= low <= opt <= high:
        raise EdgesegError(f"batch range {batch_range}: need 1 <= min <= opt <= max")
    import tensorrt as trt

    profile = builder.create_optimization_profile()
    rest = list(shape[1:])
    profile.set_shape(images.name, trt.Dims([low, *rest]), trt.Dims([opt, *rest]), trt.Dims([high, *rest]))
    config.add_optimization_profile(profile)
    return (low, opt, high), profile


def _set_precision(network: "trt.INetworkDefinition", config: "trt.IBuilderConfig", plan: BuildPlan, version: str,
                   int8: Int8Scales) -> Optional["trt.IInt8EntropyCalibrator2"]:  # fmt: skip
    """Weak typing's builder flags (strongly typed networks take none); returns the calibrator, which must outlive the build."""
    import tensorrt as trt

    if plan.strongly_typed:
        return None  # the ONNX carries the precision; 11.x has no precision flags at all
    if "FP16" in plan.builder_flags:
        config.set_flag(trt.BuilderFlag.FP16)  # 8.5 to 10.x (removed in 11, which never gets here)
    if "INT8" not in plan.builder_flags:
        return None
    config.set_flag(trt.BuilderFlag.INT8)
    if plan.int8_source == "ranges" and int8.dynamic_ranges:
        _apply_dynamic_ranges(network, int8.dynamic_ranges)
    elif plan.int8_source == "cache" and int8.calib_cache is not None:
        _check_cache_version(Path(int8.calib_cache), version)
        calibrator = _cache_calibrator(Path(int8.calib_cache))
        config.int8_calibrator = calibrator
        return calibrator
    return None  # qdq: the scales are in the model


def _apply_dynamic_ranges(network: "trt.INetworkDefinition", dynamic_ranges: Dict[str, float]) -> None:
    """``set_dynamic_range(-amax, amax)`` on every network input and layer output named in ``dynamic_ranges``."""
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        tensors += [layer.get_output(i) for i in range(layer.num_outputs)]
    applied = 0
    for tensor in tensors:
        amax = dynamic_ranges.get(tensor.name)
        if amax is not None:
            tensor.set_dynamic_range(-float(amax), float(amax))
            applied += 1
    if applied == 0:
        raise EdgesegError("--int8-source ranges: none of the calibrated tensor names match this network; "
                           "use the model.calib.json exported with this ONNX")  # fmt: skip


def _check_cache_version(calib_cache: Path, version: str) -> None:
    """TensorRT silently ignores a cache from another version and would then build without ranges."""
    header = calib_cache.read_text().splitlines()[0] if calib_cache.stat().st_size else ""
    here = ".".join(version.split(".")[:3])
    expected = f"TRT-{cache_version_code(here)}-"
    if not header.startswith(expected):
        raise EdgesegError(f"{calib_cache}: written for another TensorRT ({header or 'empty'}); this is TensorRT "
                           f"{here}: re-export with --trt-version {here}, or use --int8-source qdq")  # fmt: skip


def cache_version_code(version: str) -> str:
    """'8.5.2' -> '8502', '10.3.0' -> '100300': getInferLibVersion() as a calibration cache header writes it."""
    major, minor, patch = ([int(p) for p in version.split(".")[:3] if p.isdigit()] + [0, 0, 0])[:3]
    return str(major * (10000 if major >= 10 else 1000) + minor * 100 + patch)


def _cache_calibrator(calib_cache: Path) -> "trt.IInt8EntropyCalibrator2":
    """An entropy calibrator that only hands TensorRT an existing cache: it never sees an image (8.5 to 10.x)."""
    import tensorrt as trt

    class CacheOnlyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self, path: Path) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.cache = path.read_bytes()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: List[str]) -> List[int]:
            return []  # no batches: the cache is all TensorRT gets (an empty list ends calibration, like None)

        def read_calibration_cache(self) -> bytes:
            return self.cache

        def write_calibration_cache(self, cache: Any) -> None:
            return None

    return CacheOnlyCalibrator(calib_cache)


def _use_timing_cache(config: "trt.IBuilderConfig", timing_cache: Optional[Path]) -> bool:
    """Start from the saved timing cache when there is one (a rebuild then skips most kernel timing).

    ``create_timing_cache`` returns None for bytes TensorRT cannot read (NVIDIA's own samples check for that:
    samples/common/sampleEngines.cpp in 8.5.2, samples/utils/timingCache.cpp in 10.3), and ``set_timing_cache``
    returns False for a cache of another device or TensorRT: both start a new cache."""
    if timing_cache is None:
        return False
    timing_cache = Path(timing_cache)
    saved = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(saved)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return bool(saved)
    print(f"note: {timing_cache} is from another device or TensorRT, or damaged; starting a new timing cache", flush=True)
    fresh = config.create_timing_cache(b"")
    if fresh is None or not config.set_timing_cache(fresh, ignore_mismatch=False):
        raise EdgesegError(f"--timing-cache {timing_cache}: TensorRT could not make a timing cache (see its messages "
                           "above); build without --timing-cache")  # fmt: skip
    return False


def _timing_cache_bytes(config: "trt.IBuilderConfig") -> bytes:
    """The builder's timing cache after the build, serialized (``get_timing_cache`` is None when none is set)."""
    cache = config.get_timing_cache()
    if cache is None:
        raise EdgesegError("--timing-cache: TensorRT kept no timing cache through the build; build without --timing-cache")
    return bytes(cache.serialize())


def _attach_progress_monitor(config: "trt.IBuilderConfig", version: str) -> Optional["trt.IProgressMonitor"]:
    """Print the builder's top-level phases with their seconds where TensorRT has a progress monitor (10.0 on)."""
    if not has_progress_monitor(version):
        return None
    import tensorrt as trt

    class PhasePrinter(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.started: Dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: Optional[str], num_steps: int) -> None:
            if parent_phase is None:
                self.started[phase_name] = time.perf_counter()
                print(f"  {phase_name} ...", flush=True)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            if phase_name in self.started:
                print(f"  {phase_name}: {time.perf_counter() - self.started.pop(phase_name):.1f} s", flush=True)

    monitor = PhasePrinter()
    config.progress_monitor = monitor
    return monitor


class _ticking:
    """While the block runs, print the elapsed seconds every TICK_SECONDS (where no progress monitor talks)."""

    def __init__(self, start: float, quiet: bool) -> None:
        self.start, self.quiet, self.done = start, quiet, threading.Event()
        self.thread = threading.Thread(target=self._tick, daemon=True)

    def _tick(self) -> None:
        while not self.done.wait(TICK_SECONDS):
            print(f"  ... {time.perf_counter() - self.start:.0f} s", flush=True)

    def __enter__(self) -> None:
        if not self.quiet:
            self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()


def _io(network: "trt.INetworkDefinition", kind: str) -> List[Dict[str, Any]]:
    count = network.num_inputs if kind == "input" else network.num_outputs
    tensors = [network.get_input(i) if kind == "input" else network.get_output(i) for i in range(count)]
    return [{"name": t.name, "shape": [int(d) for d in t.shape], "dtype": dtype_name(t.dtype).lower()} for t in tensors]


# --- a bundle (or one ONNX) to engines -----------------------------------------------------------
def build_bundle(bundle_or_onnx: Path, options: BuildOptions = BuildOptions()) -> List[Path]:
    """``edgeseg build``: engines for ``options.precisions`` from a bundle folder (defaults from its export.json) or one ONNX."""
    path = Path(bundle_or_onnx)
    if path.is_file():
        return _build_onnx(path, options)
    from edgeseg.deploy.bundle import load_bundle

    bundle = load_bundle(path)
    defaults = bundle.build_defaults
    wanted = list(options.precisions or defaults.get("precisions") or ["fp16"])
    source = options.int8_source or defaults.get("int8_source") or "qdq"
    settings = _engine_options(options, defaults)
    _check_precisions(wanted, source)
    _check_sources(bundle, wanted, source)  # an altered or missing file is found before TensorRT is even looked for
    folder = Path(options.out) if options.out is not None else bundle.root
    targets = _engine_targets(folder, bundle.path("fp32"), wanted, options)
    version = require_tensorrt("edgeseg build")
    plans = [plan_build(version, p, source, dla=settings.dla_core is not None) for p in wanted]  # every one-line error first
    engines = []
    for plan, engine in zip(plans, targets):
        onnx = _source_onnx(bundle, plan)  # sha256-checked
        int8 = _bundle_int8_scales(bundle, plan)
        extra = {"bundle_checkpoint_sha256": bundle.manifest.get("checkpoint_sha256"),
                 "calibration_manifest_sha256": _calibration_sha256(bundle) if plan.precision == "int8" else None}  # fmt: skip
        engines.append(build_engine(onnx, engine, plan.precision, settings, int8, manifest_extra=extra))
    return engines


def _build_onnx(onnx: Path, options: BuildOptions) -> List[Path]:
    """One ONNX model (sha256-checked when it lies in a bundle); cache and ranges come only with a bundle."""
    if onnx.suffix.lower() != ".onnx":
        raise EdgesegError(f"{onnx}: not an ONNX model; pass a bundle folder (the --out of `edgeseg export`) or a .onnx")
    _check_in_bundle(onnx)
    if options.int8_source in ("cache", "ranges"):
        raise EdgesegError(f"--int8-source {options.int8_source}: needs the bundle's calibration files; pass the bundle folder")
    folder = Path(options.out) if options.out is not None else onnx.parent
    wanted = list(options.precisions or ["fp16"])
    targets = _engine_targets(folder, onnx, wanted, options)
    settings, int8 = _engine_options(options, {}), Int8Scales(options.int8_source)
    return [build_engine(onnx, engine, precision, settings, int8) for precision, engine in zip(wanted, targets)]


def _engine_options(options: BuildOptions, defaults: Dict[str, Any]) -> EngineOptions:
    """The builder's settings: each option given, else the bundle's build default, else the built-in one."""
    return EngineOptions(
        workspace_mib=int(options.workspace_mib or defaults.get("workspace_mib") or 1024),
        timing_cache=options.timing_cache,
        dla_core=options.dla_core if options.dla_core is not None else defaults.get("dla_core"),
        batch_range=_batch_range(options.batch, options.dynamic_batch, defaults),
        device_index=options.device_index,
    )


def _bundle_int8_scales(bundle: "Bundle", plan: BuildPlan) -> Int8Scales:
    """The bundle's calibration cache or ranges when ``plan`` takes INT8 from them (sha256-checked)."""
    cache = bundle.check_file("calib_cache") if plan.int8_source == "cache" else None
    ranges = read_amax_ranges(bundle.check_file("calib_ranges")) if plan.int8_source == "ranges" else None
    return Int8Scales(plan.int8_source, cache, ranges)


def _engine_targets(folder: Path, onnx: Path, precisions: Sequence[str], options: BuildOptions) -> List[Path]:
    """The engine of each precision, ``<stem>.<precision>.engine`` in ``folder``, with its manifest refused
    (before any work) when it exists and ``options.exist_ok`` is not given."""
    engines = [folder / f"{_stem(onnx)}.{precision}.engine" for precision in precisions]
    written = [path for engine in engines for path in (engine, manifest_path(engine))]
    check_outputs({"--out" if options.out is not None else "engine": written}, options.exist_ok,
                  inputs={"ONNX": onnx, "--timing-cache": options.timing_cache})  # fmt: skip
    return engines


def _source_onnx(bundle: "Bundle", plan: BuildPlan) -> Path:
    """The bundle's ONNX for ``plan``; a bundle exported before the FP16-float Q/DQ model existed gives the plain one."""
    if plan.source_key == STRONG_INT8_KEY and bundle.key_of(STRONG_INT8_KEY) is None:
        print(f"note: {bundle.manifest_path} lists no model.int8.qdq.fp16.onnx (an earlier edgeseg's export): the "
              "INT8 engine is built from model.int8.qdq.onnx, whose float layers then run in FP32; re-export the "
              "bundle for FP16 ones", flush=True)  # fmt: skip
        return bundle.onnx_for("int8_qdq", plan.precision)
    return bundle.onnx_for(plan.source_key, plan.precision)


def _check_precisions(precisions: Sequence[str], int8_source: Optional[str]) -> None:
    unknown = [p for p in precisions if p not in ENGINE_PRECISIONS]
    if unknown or not precisions:
        raise EdgesegError(f"--precision {','.join(precisions)}: a TensorRT engine is any of {', '.join(ENGINE_PRECISIONS)}")
    if "int8" in precisions:
        _int8_source("int8", int8_source)


def _check_sources(bundle: "Bundle", precisions: Sequence[str], int8_source: str) -> None:
    """sha256 of every bundle file these engines may be built from, whichever typing TensorRT here takes."""
    keys = ["fp32"]
    if "fp16" in precisions:
        keys.append("fp16")
    if "int8" in precisions:
        keys += {"cache": ["calib_cache"], "ranges": ["calib_ranges"]}.get(int8_source, ["int8_qdq", STRONG_INT8_KEY])
    for key in keys:
        if bundle.key_of(key) is not None:
            bundle.check_file(key)


def _check_in_bundle(onnx: Path) -> None:
    """An ONNX inside a bundle (export.json beside it, listing it) is sha256-checked like the bundle itself."""
    if not (onnx.parent / "export.json").is_file():
        return
    from edgeseg.deploy.bundle import load_bundle

    bundle = load_bundle(onnx)
    if bundle.key_of(onnx.name) is not None:
        bundle.check_file(onnx.name)


def _batch_range(batch: Optional[int], dynamic_batch: Optional[int], defaults: Dict[str, Any]) -> Optional[Tuple[int, int, int]]:
    if batch is not None and dynamic_batch:
        raise EdgesegError("--batch and --dynamic-batch: give one (a fixed batch, or the largest of a dynamic one)")
    if batch is not None:
        if batch < 1:
            raise EdgesegError(f"--batch {batch}: a batch is at least 1")
        return (batch, batch, batch)
    high = dynamic_batch if dynamic_batch is not None else int(defaults.get("dynamic_batch") or 0)
    if high < 0:
        raise EdgesegError(f"--dynamic-batch {high}: give the largest batch, e.g. 8")
    return (1, max(1, high // 2), high) if high else None


def _calibration_sha256(bundle: "Bundle") -> Optional[str]:
    calibration = bundle.manifest.get("calibration") or {}
    return calibration.get("manifest_sha256") if isinstance(calibration, dict) else None


def _stem(onnx: Path) -> str:
    """'model' of model.fp32.onnx, model.fp16.onnx, model.int8.qdq(.fp16).onnx; the name without .onnx otherwise."""
    name = onnx.name[: -len(".onnx")] if onnx.name.lower().endswith(".onnx") else onnx.stem
    for suffix in (".int8.qdq.fp16", ".int8.qdq", ".fp32", ".fp16", ".int8"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
