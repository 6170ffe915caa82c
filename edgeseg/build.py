"""The build stage: an ONNX model to a TensorRT engine, with a manifest of what it was built for.

One code path for TensorRT 8.5, 8.6 and 10.x: ``build_serialized_network``, memory-pool limits and
tensor names only (no ``build_engine``, ``max_workspace_size`` or binding indices, which 10.x removed).

INT8 comes from one of three sources:
* ``qdq``: explicit quantization, the ONNX given is edgeseg's symmetric int8 Q/DQ model;
* ``cache``: implicit INT8 from a TensorRT calibration cache, read by a calibrator that never calibrates;
* ``dynamic_ranges``: ``{tensor: amax}`` set on the network's tensors directly (no cache, no version tie).
FP16 is enabled with INT8 so the layers TensorRT keeps out of INT8 run in FP16 rather than FP32.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from edgeseg.engine_manifest import engine_manifest, manifest_path, system_facts
from edgeseg.errors import EdgesegError
from edgeseg.fileio import file_sha256, write_bytes, write_json
from edgeseg.onnx_meta import onnx_metadata

PRECISIONS = ("fp32", "fp16", "int8")
INT8_SOURCES = ("qdq", "cache")
MIN_TENSORRT = (8, 5)
DEFAULT_BATCH_RANGE = (1, 8, 16)  # for an ONNX with a dynamic batch axis and no range given
INSTALL_HINT = "pip install 'edgeseg[trt]' (on a Jetson: JetPack's python3-libnvinfer and pip install pycuda)"


# --- TensorRT and a GPU -----------------------------------------------------------------
def require_tensorrt(flag: str = "--engine"):
    """The ``tensorrt`` module, once TensorRT >= 8.5, pycuda and a CUDA GPU are all here; else a one-line error."""
    try:
        import tensorrt as trt
    except Exception as err:  # ImportError, or OSError when libnvinfer is missing behind the module
        raise EdgesegError(f"{flag}: TensorRT not found ({_first_line(err)}); {INSTALL_HINT}") from None
    if _version_tuple(trt.__version__) < MIN_TENSORRT:
        raise EdgesegError(f"{flag}: found TensorRT {trt.__version__}, older than 8.5; {INSTALL_HINT}")
    try:
        import pycuda.driver as cuda
    except Exception as err:
        raise EdgesegError(f"{flag}: pycuda not found ({_first_line(err)}); {INSTALL_HINT}") from None
    try:
        cuda.init()
        count = cuda.Device.count()
    except Exception as err:
        count, reason = 0, _first_line(err)
    else:
        reason = "no device"
    if count == 0:
        smi = "nvidia-smi present" if shutil.which("nvidia-smi") else "nvidia-smi absent"
        raise EdgesegError(f"{flag}: TensorRT {trt.__version__} found but no CUDA GPU (pycuda init: {reason}; {smi}); "
                           f"run on a machine with an NVIDIA GPU and driver, with {INSTALL_HINT}")  # fmt: skip
    return trt


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in str(version).split(".")[:2] if part.isdigit())


def _first_line(err: object) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


# --- the build --------------------------------------------------------------------------
def build_engine(
    onnx_path: Path,
    engine_path: Path,
    precision: str,
    *,
    int8_source: str | None = None,
    calib_cache: Path | None = None,
    dynamic_ranges: dict[str, float] | None = None,
    workspace_mib: int = 1024,
    timing_cache: Path | None = None,
    dla_core: int | None = None,
    batch_range: tuple[int, int, int] | None = None,
    manifest_extra: dict | None = None,
) -> Path:
    """Build ``engine_path`` from ``onnx_path``; writes the engine and ``<engine>.json`` atomically."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    _check_arguments(onnx_path, precision, int8_source, calib_cache, dynamic_ranges, dla_core, workspace_mib)
    trt = require_tensorrt("--engine")
    builder, network, parser = _network_from_onnx(trt, onnx_path)  # parser held: the network uses its weights
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    batch_range, profile = _add_batch_profile(trt, builder, network, config, batch_range, onnx_path)
    calibrator = _set_precision(trt, network, config, precision, int8_source, calib_cache, dynamic_ranges)
    if calibrator is not None and profile is not None:
        config.set_calibration_profile(profile)  # implicit INT8 with a dynamic batch asks for one, even from a cache
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache_loaded = _use_timing_cache(config, timing_cache)
    _attach_progress_monitor(trt, config)

    print(f"building {engine_path.name} ({precision}) ...", flush=True)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise EdgesegError(f"{onnx_path}: TensorRT could not build a {precision} engine (see TensorRT's messages above)")
    flags = {"workspace_mib": workspace_mib, "dla_core": dla_core,
             "timing_cache": str(timing_cache) if timing_cache else None, "timing_cache_loaded": cache_loaded}  # fmt: skip
    manifest = engine_manifest(
        facts=system_facts(), onnx_path=onnx_path, onnx_sha256=file_sha256(onnx_path), precision=precision,
        int8_source=_int8_label(precision, int8_source, dynamic_ranges), inputs=_io(network, "input"),
        outputs=_io(network, "output"), batch_range=batch_range, build_flags=flags, build_seconds=seconds,
        onnx_metadata=onnx_metadata(onnx_path), extra=manifest_extra,
    )  # fmt: skip
    write_bytes(engine_path, bytes(serialized))
    write_json(manifest_path(engine_path), manifest)
    if timing_cache is not None:
        write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    print(f"built {engine_path.name} in {seconds:.1f} s", flush=True)
    return engine_path


def _check_arguments(onnx_path: Path, precision: str, int8_source: str | None, calib_cache: Path | None,
                     dynamic_ranges: dict[str, float] | None, dla_core: int | None, workspace_mib: int) -> None:  # fmt: skip
    if not onnx_path.is_file():
        raise EdgesegError(f"{onnx_path}: no such ONNX model; export one with `edgeseg export`")
    if precision not in PRECISIONS:
        raise EdgesegError(f"--precision {precision}: a TensorRT engine is one of {', '.join(PRECISIONS)}")
    if precision == "int8" and int8_source not in INT8_SOURCES and not dynamic_ranges:
        raise EdgesegError(f"--int8-source {int8_source}: choose qdq (Q/DQ model) or cache (calibration cache)")
    if precision == "int8" and int8_source == "cache" and (calib_cache is None or not Path(calib_cache).is_file()):
        raise EdgesegError(f"--int8-source cache: no calibration cache {calib_cache}; export with --precision int8 first")
    if dla_core is not None and (dla_core < 0 or precision == "fp32"):
        raise EdgesegError(f"--dla-core {dla_core}: DLA runs fp16 or int8 engines on core 0 or 1; add --precision fp16")
    if workspace_mib < 1:
        raise EdgesegError(f"--workspace {workspace_mib}: give the builder's scratch memory in MiB, e.g. 1024")


def _network_flags(trt) -> int:
    """EXPLICIT_BATCH is required for ONNX before 10.x, deprecated in 10.x and gone after."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    if flag is None or _version_tuple(trt.__version__) >= (10,):
        return 0
    return 1 << int(flag)


def _network_from_onnx(trt, onnx_path: Path):
    """(builder, network, parser) with the ONNX model parsed; the parser owns weights the network uses."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return builder, network, parser
    reason = _parser_error(parser.get_error(0)) if parser.num_errors else "unknown error"
    raise EdgesegError(f"{onnx_path}: TensorRT's ONNX parser failed ({parser.num_errors} errors, first: {reason}); "
                       "re-export it with `edgeseg export` (opset 17)")  # fmt: skip


def _parser_error(error) -> str:
    description = error.desc() if hasattr(error, "desc") else error
    node = error.node() if hasattr(error, "node") else -1
    return f"node {node}: {_first_line(description)}" if isinstance(node, int) and node >= 0 else _first_line(description)


def _add_batch_profile(trt, builder, network, config, batch_range, onnx_path: Path):
    """(batch range, profile): an optimization profile (min, opt, max) on the batch axis, if the ONNX's is dynamic."""
    images = network.get_input(0)
    shape = tuple(images.shape)
    if any(dim < 0 for dim in shape[1:]):
        raise EdgesegError(f"{onnx_path}: input {images.name} has a dynamic size {shape}; export with a fixed --img-size")
    if shape[0] >= 0:
        if batch_range is not None and tuple(batch_range) != (shape[0],) * 3:
            raise EdgesegError(f"--dynamic-batch: {onnx_path.name} has a fixed batch of {shape[0]}; "
                               "re-export it with --dynamic-batch")  # fmt: skip
        return None, None
    low, opt, high = batch_range or DEFAULT_BATCH_RANGE
    if not 1 <= low <= opt <= high:
        raise EdgesegError(f"batch range {batch_range}: need 1 <= min <= opt <= max")
    profile = builder.create_optimization_profile()
    profile.set_shape(images.name, (low, *shape[1:]), (opt, *shape[1:]), (high, *shape[1:]))
    config.add_optimization_profile(profile)
    return (low, opt, high), profile


def _set_precision(trt, network, config, precision, int8_source, calib_cache, dynamic_ranges):
    """Builder flags for ``precision``; returns the calibrator, which must outlive the build."""
    if precision == "fp32":
        return None
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "fp16":
        return None
    config.set_flag(trt.BuilderFlag.INT8)
    if dynamic_ranges:
        _apply_dynamic_ranges(network, dynamic_ranges)
        return None
    if int8_source == "cache":
        _check_cache_version(trt, Path(calib_cache))
        calibrator = _cache_calibrator(trt, Path(calib_cache))
        config.int8_calibrator = calibrator
        return calibrator
    return None  # qdq: the scales are in the model


def _apply_dynamic_ranges(network, dynamic_ranges: dict[str, float]) -> None:
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
        raise EdgesegError("dynamic ranges: none of the tensor names match this network; use the ranges of this ONNX model")


def _check_cache_version(trt, calib_cache: Path) -> None:
    """TensorRT silently ignores a cache from another version and would then build without ranges."""
    from edgeseg.quantize import trt_version_code

    header = calib_cache.read_text().splitlines()[0] if calib_cache.stat().st_size else ""
    here = ".".join(str(trt.__version__).split(".")[:3])
    expected = f"TRT-{trt_version_code(here)}-"
    if not header.startswith(expected):
        raise EdgesegError(f"{calib_cache}: written for another TensorRT ({header or 'empty'}); this is TensorRT {here}: "
                           f"re-export with --trt-version {here}, or use --int8-source qdq")  # fmt: skip


def _cache_calibrator(trt, calib_cache: Path):
    """An entropy calibrator that only hands TensorRT an existing cache: it never sees an image."""

    class CacheOnlyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self, path: Path) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.cache = path.read_bytes()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            return None

        def read_calibration_cache(self):
            return self.cache

        def write_calibration_cache(self, cache) -> None:
            return None

    return CacheOnlyCalibrator(calib_cache)


def _use_timing_cache(config, timing_cache: Path | None) -> bool:
    """Start from the saved timing cache when there is one (a rebuild then skips most kernel timing)."""
    if timing_cache is None:
        return False
    timing_cache = Path(timing_cache)
    saved = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = config.create_timing_cache(saved)
    if config.set_timing_cache(cache, ignore_mismatch=False):
        return bool(saved)
    print(f"note: {timing_cache} is from another device or TensorRT; starting a new timing cache", flush=True)
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return False


def _attach_progress_monitor(trt, config) -> None:
    """Print the builder's top-level phases where TensorRT has a progress monitor (10.x)."""
    if not hasattr(trt, "IProgressMonitor") or not hasattr(config, "progress_monitor"):
        return

    class PhasePrinter(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.started: dict[str, float] = {}

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            if parent_phase is None:
                self.started[phase_name] = time.perf_counter()
                print(f"  {phase_name} ...", flush=True)

        def step_complete(self, phase_name, step) -> bool:
            return True  # False would cancel the build

        def phase_finish(self, phase_name) -> None:
            if phase_name in self.started:
                print(f"  {phase_name}: {time.perf_counter() - self.started.pop(phase_name):.1f} s", flush=True)

    config.progress_monitor = PhasePrinter()


def _int8_label(precision: str, int8_source: str | None, dynamic_ranges: dict[str, float] | None) -> str | None:
    if precision != "int8":
        return None
    return "dynamic_ranges" if dynamic_ranges else int8_source


def _io(network, kind: str) -> list[dict[str, Any]]:
    count = network.num_inputs if kind == "input" else network.num_outputs
    tensors = [network.get_input(i) if kind == "input" else network.get_output(i) for i in range(count)]
    return [{"name": t.name, "shape": [int(d) for d in t.shape], "dtype": _dtype_name(t.dtype)} for t in tensors]


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1].lower()
