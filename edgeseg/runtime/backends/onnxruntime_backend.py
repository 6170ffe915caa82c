"""ONNX Runtime backend: CPU, CUDA or TensorRT execution provider, chosen by ``device``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.onnx_meta import QDQ_FLOAT_KEY, check_graph_io, parse_meta, read_metadata_props
from edgeseg.runtime.backends.amx import has_amx_int8, route_convs_to_amx
from edgeseg.runtime.backends.base import Backend, fit_fixed_batch
from edgeseg.runtime.backends.early_exit import without_last_upsample

PROVIDERS = {
    "cpu": ("CPUExecutionProvider", "pip install 'edgeseg[cpu]'"),
    "cuda": ("CUDAExecutionProvider", "pip install 'edgeseg[gpu]' (onnxruntime-gpu) on a machine with an NVIDIA GPU"),
    "tensorrt": ("TensorrtExecutionProvider", "onnxruntime-gpu built with TensorRT, and TensorRT itself"),
}
AMX_ENV = "EDGESEG_ORT_AMX"  # "1" turns the AMX rewrite on for every command (amx=None)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, session, meta, output_kind: str, fixed_batch: int | None, early_session=None) -> None:
        self.session = session
        self.early_session = early_session  # the graph without its last upsample, where that can be had
        self.meta = meta
        self.output_kind = output_kind
        self.fixed_batch = fixed_batch
        self.max_batch = fixed_batch or 1 << 16
        self.input_name = session.get_inputs()[0].name
        self.on_gpu = session.get_providers()[0] != "CPUExecutionProvider"
        self.device = "cuda" if self.on_gpu else "cpu"

    @classmethod
    def load(
        cls,
        path: Path,
        device: str | None = None,
        threads: int | None = None,
        amx: bool | None = None,
        spin: bool = True,
        early_exit: bool = True,
    ) -> "OnnxRuntimeBackend":
        """``amx``: on a CPU with AMX-INT8, move large int8 convolutions onto AMX (bit-identical; see amx.py); the
        backend's ``variant`` is then "amx". Off unless asked for (True, or None and EDGESEG_ORT_AMX=1): the one
        measurement on an AMX CPU found no gain (see amx.py), and one CPU is not enough to turn it on for all.
        ``spin=False``: idle intra-op threads sleep rather than spin, for loops that share the CPU.
        ``early_exit``: on the CPU, ``infer_for_labels`` runs a second session, of the graph without its
        last upsample (see early_exit.py); it needs the onnx package, and without it labels come from the
        file's own output."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise EdgesegError(f"{path}: ONNX Runtime is not installed; {PROVIDERS['cpu'][1]}") from None
        wanted = amx if amx is not None else os.environ.get(AMX_ENV, "").strip() == "1"
        session, on_amx, early_session = _open_sessions(ort, Path(path), device or "cpu", threads, wanted, spin, early_exit)
        meta, extras = parse_meta(session.get_modelmeta().custom_metadata_map, path)
        check_graph_io(_io(session.get_inputs()), _io(session.get_outputs()), meta, extras["output_kind"], path)
        batch_dim = session.get_inputs()[0].shape[0]
        fixed_batch = batch_dim if isinstance(batch_dim, int) else None
        backend = cls(session, meta, extras["output_kind"], fixed_batch, early_session)
        if on_amx:
            backend.variant = "amx"  # bench tables and verify reports show which sessions were rewritten
        return backend

    def infer(self, batch: np.ndarray) -> np.ndarray:
        count = batch.shape[0]
        batch = fit_fixed_batch(batch, self.fixed_batch)
        if self.on_gpu:
            return self._run_bound(batch)[:count]
        return self.session.run(None, {self.input_name: batch})[0][:count]

    def infer_for_labels(self, batch: np.ndarray) -> np.ndarray:
        if self.early_session is None:
            return self.infer(batch)
        count = batch.shape[0]
        return self.early_session.run(None, {self.input_name: fit_fixed_batch(batch, self.fixed_batch)})[0][:count]

    def _run_bound(self, batch: np.ndarray) -> np.ndarray:
        """On CUDA, IO binding lets ONNX Runtime copy the input once and skip its own output staging."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch))
        binding.bind_output(self.session.get_outputs()[0].name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def close(self) -> None:
        self.session = self.early_session = None


def _io(args) -> list[tuple[list, str]]:
    """(shape, element type) of ONNX Runtime's NodeArgs; a dynamic size is a name or None."""
    return [(list(arg.shape or []), arg.type) for arg in args]


def _open_sessions(ort, path: Path, device: str, threads: int | None, amx: bool, spin: bool, early_exit: bool):
    """The file's session; whether it runs on AMX; the session without the last upsample, or None."""
    kind = device.split(":")[0]
    if kind not in PROVIDERS:
        raise EdgesegError(f"--device {device}: choose one of {', '.join(PROVIDERS)} for an .onnx model")
    provider, install = PROVIDERS[kind]
    if provider not in ort.get_available_providers():
        raise EdgesegError(f"--device {device}: ONNX Runtime here has no {provider}; install {install}")
    if not path.is_file():
        raise EdgesegError(f"{path}: no such model file; check the path")
    half_qdq = _has_fp16_qdq(path)
    options = ort.SessionOptions()
    # ONNX Runtime's graph rewrites mishandle FP16 Q/DQ scales (1.32: ENABLE_ALL refuses such a model, a QLinearConcat
    # with an FP16 scale; ENABLE_BASIC changed 7 % of the held-out labels): a model with them runs as written
    levels = ort.GraphOptimizationLevel
    options.graph_optimization_level = levels.ORT_DISABLE_ALL if half_qdq else levels.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    cpu = kind == "cpu"
    model, on_amx, early_model = _edited_models(path, amx and cpu and not half_qdq, early_exit and cpu)
    try:
        session = ort.InferenceSession(model or str(path), options, providers=[provider])
        early = ort.InferenceSession(early_model, options, providers=[provider]) if early_model else None
        return session, on_amx, early
    except Exception as err:  # ORT raises its own exception types for corrupt or truncated files
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise EdgesegError(f"{path}: cannot be loaded by ONNX Runtime ({reason}); re-export it with `edgeseg export`") from None


def _has_fp16_qdq(path: Path) -> bool:
    """Whether ``path`` is a Q/DQ model with FP16 scales (its metadata says so); False for a damaged file, which
    ONNX Runtime then reports in its own words."""
    try:
        return read_metadata_props(path.read_bytes()).get(QDQ_FLOAT_KEY) == "float16"
    except (EdgesegError, OSError):
        return False


def _edited_models(path: Path, amx: bool, early_exit: bool) -> tuple[bytes | None, bool, bytes | None]:
    """The model as ONNX Runtime should open it, edited in memory: (its bytes, or None for the file as it
    is; whether its convolutions moved to AMX; the bytes of the graph without its last upsample, or None)."""
    amx = amx and has_amx_int8()
    if not (amx or early_exit):
        return None, False, None
    stat = path.stat()
    return _edit(str(path.resolve()), stat.st_mtime_ns, stat.st_size, amx, early_exit)


@lru_cache(maxsize=1)  # the streams of one run open the same file, one after another
def _edit(path: str, mtime_ns: int, size: int, amx: bool, early_exit: bool) -> tuple[bytes | None, bool, bytes | None]:
    try:
        import onnx

        model = onnx.load(path)
    except Exception:  # no onnx package, a file ONNX Runtime will report on in its own words, or over 2 GB
        return None, False, None
    on_amx = amx and route_convs_to_amx(model) > 0
    cut = without_last_upsample(model) if early_exit else None
    return model.SerializeToString() if on_amx else None, on_amx, cut.SerializeToString() if cut else None
