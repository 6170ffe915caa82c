"""The CUDA binding of the TensorRT runtime: pycuda, on the device's primary context.

Why pycuda and not cuda-python: one binding is enough, and pycuda is the one Jetson users already
have; it builds on JetPack 5.1 (CUDA 11.4, Python 3.8) and JetPack 6 (CUDA 12.x, Python 3.10) against
JetPack's own CUDA, while cuda-python's wheels follow the desktop CUDA releases. It must be built against
the numpy it runs with (``pip install --no-build-isolation``, as scripts/setup.sh does): pip's isolated
build compiles it against numpy 1.24 on Python 3.8, which JetPack 5.1's numpy 1.17.4 refuses to import.

Why the primary context: ``Device.make_context()`` creates a new context per backend, each with its own
memory reservations (tens to hundreds of MB); on an 8 GB board the GPU shares that memory with the CPU.
``Device.retain_primary_context()`` (pycuda >= 2020.1) hands out the context the CUDA runtime uses,
which TensorRT itself works in. It is retained once per device and process, made current with
``push()`` only around CUDA work and ``pop()``-ed after, so any thread can call a backend.

CUDA graphs: pycuda offers no stream capture or graph API (checked in its sources up to 2026.1), so
edgeseg does not capture TensorRT's work into CUDA graphs.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from edgeseg.core.errors import EdgesegError
from edgeseg.runtime.trt.support import first_line

_contexts: Dict[int, Any] = {}
_lock = threading.Lock()


def primary_context(device_index: int) -> Any:
    """The primary CUDA context of GPU ``device_index`` (retained once, not current); one line when there is no such GPU."""
    import pycuda.driver as cuda

    with _lock:
        if device_index not in _contexts:
            cuda.init()
            count = cuda.Device.count()
            if not 0 <= device_index < count:
                raise EdgesegError(f"--device cuda:{device_index}: this machine has {count} CUDA GPU(s), "
                                   f"cuda:0 to cuda:{max(count - 1, 0)}; pick one of them")  # fmt: skip
            try:
                _contexts[device_index] = cuda.Device(device_index).retain_primary_context()
            except Exception as err:
                raise EdgesegError(f"--device cuda:{device_index}: CUDA could not open the GPU ({first_line(err)})") from None
        return _contexts[device_index]


@contextmanager
def current(context: Any) -> Iterator[None]:
    """``context`` current on this thread for the block."""
    context.push()
    try:
        yield
    finally:
        context.pop()


def gpu_facts(device_index: int) -> Dict[str, Any]:
    """Name and compute capability of GPU ``device_index``, and the CUDA version its driver supports, read through pycuda.

    ``cuda_driver`` is cuDriverGetVersion (pycuda's ``get_driver_version()``), the same number nvidia-smi prints
    as "CUDA Version"; pycuda's ``get_version()`` is the CUDA it was compiled against, which is neither."""
    import pycuda.driver as cuda

    cuda.init()
    device = cuda.Device(device_index)
    major, minor = device.compute_capability()
    return {"gpu_name": device.name(), "compute_capability": f"{major}.{minor}",
            "cuda_driver": cuda_version_text(cuda.get_driver_version())}  # fmt: skip


def cuda_runtime_version(maps: Path = Path("/proc/self/maps")) -> Optional[str]:
    """cudaRuntimeGetVersion of the CUDA runtime (libcudart) loaded in this process, else of the one the loader finds
    (JetPack's, on a Jetson); None without one. It needs no GPU."""
    import ctypes

    for name in [*_loaded_cudart(maps), "libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]:
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int()
        if library.cudaRuntimeGetVersion(ctypes.byref(version)) == 0:
            return cuda_version_text(version.value)
    return None


def _loaded_cudart(maps: Path) -> List[str]:
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return []
    return sorted({line.split()[-1] for line in lines if "/libcudart.so" in line})


def cuda_version_text(version: int) -> str:
    """'12.6' from CUDA's encoding 12060 (1000 * major + 10 * minor)."""
    return f"{version // 1000}.{version % 1000 // 10}"
