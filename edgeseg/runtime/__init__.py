"""Inference on any backend with the model's own pre/post-processing. Imports neither torch nor tensorrt."""

from edgeseg.runtime.backends import Backend, TensorInfo, backend_names, open_backend
from edgeseg.runtime.segmenter import Segmenter
from edgeseg.runtime.visualize import colorize, overlay, palette_lut_bgr

__all__ = ["Backend", "Segmenter", "TensorInfo", "backend_names", "colorize", "open_backend", "overlay", "palette_lut_bgr"]
