"""ONNX Runtime backend: CPU, CUDA or TensorRT execution provider, chosen by ``device``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.onnx_meta import check_graph_io, parse_meta
from edgeseg.runtime.backends.amx import amx_model_bytes
from edgeseg.runtime.backends.base import Backend, fit_fixed_batch

PROVIDERS = {
    "cpu": ("CPUExecutionProvider", "pip install 'edgeseg[cpu]'"),
    "cuda": ("CUDAExecutionProvider", "pip install 'edgeseg[gpu]' (onnxruntime-gpu) on a machine with an NVIDIA GPU"),
    "tensorrt": ("TensorrtExecutionProvider", "onnxruntime-gpu built with TensorRT, and TensorRT itself"),
}


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, session, meta, output_kind: str, fixed_batch: int | None) -> None:
        self.session = session
        self.meta = meta
        self.output_kind = output_kind
        self.fixed_batch = fixed_batch
        self.max_batch = fixed_batch or 1 << 16
        self.input_name = session.get_inputs()[0].name
        self.on_gpu = session.get_providers()[0] != "CPUExecutionProvider"
        self.device = "cuda" if self.on_gpu else "cpu"

    @classmethod
    def load(
        cls, path: Path, device: str | None = None, threads: int | None = None, amx: bool = True, spin: bool = True
    ) -> "OnnxRuntimeBackend":
        """``amx``: on a CPU with AMX-INT8, move large int8 convolutions onto AMX (bit-identical; see amx.py).
        ``spin=False``: idle intra-op threads sleep rather than spin, for loops that share the CPU."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise EdgesegError(f"{path}: ONNX Runtime is not installed; {PROVIDERS['cpu'][1]}") from None
        session, on_amx = _open_session(ort, Path(path), device or "cpu", threads, amx, spin)
        meta, extras = parse_meta(session.get_modelmeta().custom_metadata_map, path)
        check_graph_io(_io(session.get_inputs()), _io(session.get_outputs()), meta, extras["output_kind"], path)
        batch_dim = session.get_inputs()[0].shape[0]
        backend = cls(session, meta, extras["output_kind"], batch_dim if isinstance(batch_dim, int) else None)
        if on_amx:
            backend.name = "onnxruntime+amx"  # shows in bench tables which sessions were rewritten
        return backend

    def infer(self, batch: np.ndarray) -> np.ndarray:
        count = batch.shape[0]
        batch = fit_fixed_batch(batch, self.fixed_batch)
        if self.on_gpu:
            return self._run_bound(batch)[:count]
        return self.session.run(None, {self.input_name: batch})[0][:count]

    def _run_bound(self, batch: np.ndarray) -> np.ndarray:
        """On CUDA, IO binding lets ONNX Runtime copy the input once and skip its own output staging."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch))
        binding.bind_output(self.session.get_outputs()[0].name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def close(self) -> None:
        self.session = None


def _io(args) -> list[tuple[list, str]]:
    """(shape, element type) of ONNX Runtime's NodeArgs; a dynamic size is a name or None."""
    return [(list(arg.shape or []), arg.type) for arg in args]


def _open_session(ort, path: Path, device: str, threads: int | None, amx: bool, spin: bool):
    kind = device.split(":")[0]
    if kind not in PROVIDERS:
        raise EdgesegError(f"--device {device}: choose one of {', '.join(PROVIDERS)} for an .onnx model")
    provider, install = PROVIDERS[kind]
    if provider not in ort.get_available_providers():
        raise EdgesegError(f"--device {device}: ONNX Runtime here has no {provider}; install {install}")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not path.is_file():
        raise EdgesegError(f"{path}: no such model file; check the path")
    model = amx_model_bytes(path) if amx and kind == "cpu" else None
    try:
        return ort.InferenceSession(model or str(path), options, providers=[provider]), model is not None
    except Exception as err:  # ORT raises its own exception types for corrupt or truncated files
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise EdgesegError(f"{path}: cannot be loaded by ONNX Runtime ({reason}); re-export it with `edgeseg export`") from None
