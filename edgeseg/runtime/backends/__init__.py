"""Inference backends behind one small interface (load, infer, close), like Polygraphy's runners.

Each backend lives in its own module and is imported only when chosen, so a device
without torch (or without TensorRT) never imports it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.runtime.backends.base import Backend, TensorInfo

# backend name -> (module, class, file suffixes it opens)
_REGISTRY: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "torch": ("edgeseg.runtime.backends.torch_backend", "TorchBackend", (".pt", ".pth")),
    "onnxruntime": ("edgeseg.runtime.backends.onnxruntime_backend", "OnnxRuntimeBackend", (".onnx",)),
    "tensorrt": ("edgeseg.runtime.backends.tensorrt_backend", "TensorRTBackend", (".engine", ".plan")),
}


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def open_backend(path: str | Path, backend: str = "auto", device: str = "cpu", **options: object) -> Backend:
    path = Path(path)
    name = _choose(path, backend)
    module_name, class_name, _ = _REGISTRY[name]
    backend_cls = getattr(importlib.import_module(module_name), class_name)
    return backend_cls.load(path, device=device, **options)


def _choose(path: Path, backend: str) -> str:
    if backend != "auto":
        if backend not in _REGISTRY:
            raise EdgesegError(f"--backend {backend}: unknown; choose one of {', '.join(('auto',) + backend_names())}")
        return backend
    for name, (_, _, suffixes) in _REGISTRY.items():
        if path.suffix.lower() in suffixes:
            return name
    known = sorted({s for _, _, suffixes in _REGISTRY.values() for s in suffixes})
    raise EdgesegError(f"{path}: no backend opens {path.suffix or 'files without a suffix'}; pass one of {', '.join(known)}")


__all__ = ["Backend", "TensorInfo", "backend_names", "open_backend"]
