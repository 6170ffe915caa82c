"""Inference backends behind one small interface (load, infer, close), like Polygraphy's runners.

Each backend lives in its own module and is imported only when chosen, so a device
without torch (or without TensorRT) never imports it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edgeseg.core.errors import EdgesegError
from edgeseg.runtime.backends.base import Backend, TensorInfo

# backend name -> (module, class, file suffixes it opens, the options its ``load`` takes besides path and device)
_REGISTRY: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    "torch": ("edgeseg.model.torch_backend", "TorchBackend", (".pt", ".pth"), ("threads",)),
    "onnxruntime": ("edgeseg.runtime.backends.onnxruntime_backend", "OnnxRuntimeBackend", (".onnx",),
                    ("threads", "amx", "spin", "early_exit")),
    "tensorrt": ("edgeseg.runtime.backends.tensorrt_backend", "TensorRTBackend", (".engine", ".plan"), ()),
    # after onnxruntime, so that auto keeps .onnx on ONNX Runtime: openvino only with --backend openvino
    "openvino": ("edgeseg.runtime.backends.openvino_backend", "OpenVinoBackend", (".onnx",), ("threads", "precision", "early_exit")),
}


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def backend_options(name: str) -> tuple[str, ...]:
    """The options backend ``name`` declares (what its ``load`` takes besides path and device)."""
    return _REGISTRY[name][3]


def open_backend(path: str | Path, backend: str = "auto", device: str | None = None, **options: object) -> Backend:
    """Open ``path`` with the chosen backend; ``device`` None is the backend's own default (cpu; cuda:0 for engines).

    An option no backend declares is an error. One that only other backends take (``threads``
    for a TensorRT engine, say, when one bench compares ONNX and engine files) does not apply to
    this one and is left out.
    """
    path = Path(path)
    name = _choose(path, backend)
    known = {option for entry in _REGISTRY.values() for option in entry[3]}
    unknown = sorted(set(options) - known)
    if unknown:
        raise EdgesegError(f"backend option {', '.join(unknown)}: no backend takes it; known: {', '.join(sorted(known))}")
    module_name, class_name, _, accepted = _REGISTRY[name]
    backend_cls = getattr(importlib.import_module(module_name), class_name)
    return backend_cls.load(path, device=device, **{k: v for k, v in options.items() if k in accepted})


def runs_on_cpu(path: str | Path, backend: str = "auto", device: str | None = None) -> bool:
    """Whether ``open_backend`` with these arguments would run the model on the CPU, known before it opens:
    the backends that take ``threads`` are the CPU-capable ones, and each defaults to the CPU."""
    return "threads" in _REGISTRY[_choose(Path(path), backend)][3] and (device or "cpu").split(":")[0] == "cpu"


def backend_for(path: str | Path, backend: str = "auto") -> str | None:
    """The backend that ``backend`` (a name or auto) would open ``path`` with, by its suffix; None when it opens none such."""
    suffix = Path(path).suffix.lower()
    names = backend_names() if backend == "auto" else (backend,)
    return next((name for name in names if name in _REGISTRY and suffix in _REGISTRY[name][2]), None)


def _choose(path: Path, backend: str) -> str:
    if backend != "auto":
        if backend not in _REGISTRY:
            raise EdgesegError(f"--backend {backend}: unknown; choose one of {', '.join(('auto',) + backend_names())}")
        return backend
    for name, (_, _, suffixes, _) in _REGISTRY.items():
        if path.suffix.lower() in suffixes:
            return name
    known = sorted({s for _, _, suffixes, _ in _REGISTRY.values() for s in suffixes})
    raise EdgesegError(f"{path}: no backend opens {path.suffix or 'files without a suffix'}; pass one of {', '.join(known)}")


__all__ = ["Backend", "TensorInfo", "backend_for", "backend_names", "backend_options", "open_backend", "runs_on_cpu"]
