"""Inference on any backend with the model's own pre/post-processing. Imports neither torch nor tensorrt.

The names below load on first use (PEP 562), so that importing a subpackage alone (``edgeseg.runtime.trt``,
which the build stage uses) brings in no image library: ``Segmenter`` and the drawing helpers need OpenCV,
building an engine does not.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeseg.runtime.backends import Backend, TensorInfo, backend_names, open_backend
    from edgeseg.runtime.segmenter import Segmenter
    from edgeseg.runtime.visualize import colorize, overlay, palette_lut_bgr

_HOMES = {
    "Backend": "edgeseg.runtime.backends", "TensorInfo": "edgeseg.runtime.backends",
    "backend_names": "edgeseg.runtime.backends", "open_backend": "edgeseg.runtime.backends",
    "Segmenter": "edgeseg.runtime.segmenter",
    "colorize": "edgeseg.runtime.visualize", "overlay": "edgeseg.runtime.visualize",
    "palette_lut_bgr": "edgeseg.runtime.visualize",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


__all__ = ["Backend", "Segmenter", "TensorInfo", "backend_names", "colorize", "open_backend", "overlay", "palette_lut_bgr"]
