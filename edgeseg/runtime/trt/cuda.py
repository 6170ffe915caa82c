"""The CUDA binding of the TensorRT runtime: pycuda, on the device's primary context.

Why pycuda and not cuda-python: one binding is enough, and pycuda is the one Jetson users already
have; ``pip install pycuda`` builds on JetPack 5.1 (CUDA 11.4, Python 3.8) and JetPack 6 (CUDA 12.x,
Python 3.10) against JetPack's own CUDA, while cuda-python's wheels follow the desktop CUDA releases.

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
from typing import Any, Dict, Iterator

from edgeseg.errors import EdgesegError
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
    """Name, compute capability and CUDA driver version of GPU ``device_index``, read through pycuda."""
    import pycuda.driver as cuda

    cuda.init()
    device = cuda.Device(device_index)
    major, minor = device.compute_capability()
    cuda_version = ".".join(str(part) for part in cuda.get_version()[:2])
    return {"gpu_name": device.name(), "compute_capability": f"{major}.{minor}", "cuda_version": cuda_version}
