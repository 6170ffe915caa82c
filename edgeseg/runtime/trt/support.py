"""TensorRT's version window, the typing mode per version, edgeseg's own dtype map, and DLA cores.

The pure functions here take a version string, so they are tested on machines without TensorRT.
Names that exist only in some versions are looked up by ``getattr`` with the version named beside it;
everything else is typed against ``tensorrt-stubs`` (10.x) by ``tests/test_typecheck_trt.py``.
"""

from __future__ import annotations

import shutil
from typing import Any, Dict, Optional, Tuple

import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.sysinfo import JETSON_SETUP, import_pycuda_driver

MIN_VERSION = (8, 5)  # the tensor-name runtime API (set_tensor_address, execute_async_v3) starts at 8.5
MAX_VERSION = (12, 0)  # exclusive: 11.x is the newest major this code path knows
WINDOW = ">=8.5,<12"
INSTALL_HINT = f"pip install 'edgeseg[trt]' (TensorRT 8.5 to 11.x and pycuda); on a Jetson: {JETSON_SETUP}"

# TensorRT DataType member name -> numpy dtype; edgeseg's own (trt.nptype of 8.5.2 uses np.bool, gone in numpy 1.24)
NUMPY_DTYPES: Dict[str, Any] = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "BOOL": np.bool_,
}


# --- versions ---------------------------------------------------------------------------
def version_tuple(version: str) -> Tuple[int, ...]:
    """(major, minor) of '8.5.2.2' or '10.3.0'; () for a string that is not a version."""
    parts = []
    for part in str(version).split(".")[:2]:
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def window_problem(version: str) -> Optional[str]:
    """Why TensorRT ``version`` is outside edgeseg's window, with the fix; None inside it."""
    found = version_tuple(version)
    if len(found) < 2:
        return f"TensorRT reports an unreadable version {version!r}; reinstall TensorRT ({INSTALL_HINT})"
    if found < MIN_VERSION:
        return (f"TensorRT {version} is older than 8.5, which edgeseg's runtime needs (tensor-name API); "
                "upgrade to JetPack 5.1 or later, or pip install 'tensorrt>=8.5,<12'")  # fmt: skip
    if found >= MAX_VERSION:
        return f"TensorRT {version} is newer than edgeseg knows ({WINDOW}); pip install 'tensorrt>=8.5,<12'"
    return None


def is_strongly_typed_only(version: str) -> bool:
    """TensorRT 11 builds strongly typed networks only: no FP16/INT8 builder flags, calibrators or set ranges."""
    return version_tuple(version)[:1] >= (11,)


def has_strongly_typed_flag(version: str) -> bool:
    """NetworkDefinitionCreationFlag.STRONGLY_TYPED exists from TensorRT 10.0 (and is always on in 11)."""
    return version_tuple(version)[:1] >= (10,)


def needs_explicit_batch(version: str) -> bool:
    """NetworkDefinitionCreationFlag.EXPLICIT_BATCH is required for ONNX before 10.0, ignored in 10.x, gone in 11."""
    return version_tuple(version)[:1] < (10,)


def has_progress_monitor(version: str) -> bool:
    """IProgressMonitor and IBuilderConfig.progress_monitor exist from TensorRT 10.0."""
    return version_tuple(version)[:1] >= (10,)


# --- dtypes -----------------------------------------------------------------------------
def dtype_name(dtype: object) -> str:
    """'FLOAT' for trt.DataType.FLOAT (pybind11 enums print as 'DataType.FLOAT')."""
    name = getattr(dtype, "name", None)
    return str(name if isinstance(name, str) else str(dtype).rsplit(".", 1)[-1]).upper()


def numpy_dtype(dtype: object) -> Any:
    """The numpy dtype of a TensorRT DataType; a one-line error for one numpy cannot hold (BF16, FP8, INT4)."""
    name = dtype_name(dtype)
    if name not in NUMPY_DTYPES:
        raise EdgesegError(f"TensorRT tensor of type {name}: numpy has no such dtype; rebuild the engine with "
                           "float32 input and output (`edgeseg build`)")  # fmt: skip
    return np.dtype(NUMPY_DTYPES[name])


# --- TensorRT, pycuda and a GPU --------------------------------------------------------
def tensorrt_version() -> Optional[str]:
    """The importable TensorRT's version, or None (a broken install raises OSError, not ImportError)."""
    try:
        import tensorrt as trt
    except Exception:
        return None
    return str(trt.__version__)


def require_tensorrt(flag: str = "--engine") -> str:
    """TensorRT's version, once TensorRT inside the window, pycuda and a CUDA GPU are all here; else one line."""
    try:
        import tensorrt as trt
    except Exception as err:  # ImportError, or OSError when libnvinfer is missing behind the module
        raise EdgesegError(f"{flag}: TensorRT not found ({first_line(err)}); {INSTALL_HINT}") from None
    version = str(trt.__version__)
    problem = window_problem(version)
    if problem:
        raise EdgesegError(f"{flag}: {problem}")
    cuda, error = import_pycuda_driver()
    if cuda is None:
        raise EdgesegError(f"{flag}: TensorRT {version} found but not pycuda.driver ({error}); {INSTALL_HINT}")
    try:
        cuda.init()
        count, reason = cuda.Device.count(), "no device"
    except Exception as err:
        count, reason = 0, first_line(err)
    if count == 0:
        smi = "nvidia-smi present" if shutil.which("nvidia-smi") else "nvidia-smi absent"
        raise EdgesegError(f"{flag}: TensorRT {version} found but no CUDA GPU (pycuda: {reason}; {smi}); "
                           "run on a machine with an NVIDIA GPU and its driver")  # fmt: skip
    return version


def first_line(err: object) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else type(err).__name__


# --- DLA --------------------------------------------------------------------------------
def dla_problem(dla_core: Optional[int], cores: int, flag: str = "--dla-core") -> Optional[str]:
    """Why ``dla_core`` cannot be used on a device with ``cores`` DLA cores; None when it can (or is not asked)."""
    if dla_core is None:
        return None
    if cores <= 0:
        return (f"{flag} {dla_core}: this device has no DLA (an Orin Nano or a desktop GPU has none); "
                "build without --dla-core to run on the GPU")  # fmt: skip
    if not 0 <= dla_core < cores:
        return f"{flag} {dla_core}: this device has {cores} DLA core(s), numbered 0 to {cores - 1}; pick one of them"
    return None
