"""TensorRT and CUDA helpers shared by the runtime (``backends/tensorrt_backend.py``) and the build stage
(``edgeseg/deploy/build.py``). The build stage imports these; nothing here imports the build stage.

``support``: the version window (8.5 <= TensorRT < 12), typing mode per version, the numpy dtype map, DLA checks.
``cuda``: pycuda on the device's primary context (why pycuda, and why no CUDA graphs: see its docstring).
"""

from __future__ import annotations

from edgeseg.runtime.trt.support import (
    INSTALL_HINT,
    WINDOW,
    dla_problem,
    has_strongly_typed_flag,
    is_strongly_typed_only,
    numpy_dtype,
    require_tensorrt,
    tensorrt_version,
    version_tuple,
    window_problem,
)

__all__ = [
    "INSTALL_HINT",
    "WINDOW",
    "dla_problem",
    "has_strongly_typed_flag",
    "is_strongly_typed_only",
    "numpy_dtype",
    "require_tensorrt",
    "tensorrt_version",
    "version_tuple",
    "window_problem",
]
