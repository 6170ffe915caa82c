"""OpenVINO backend: the same ONNX files as ONNX Runtime, on OpenVINO's CPU plugin (Intel and AMD x86 boxes).

Only chosen with ``--backend openvino``; ``.onnx`` files stay ONNX Runtime's by default. The
model's metadata is read from the ONNX file itself (OpenVINO does not carry ``metadata_props``)
and checked against the graph's input and output, as the ONNX Runtime backend does.

``precision``: f32 (default) or bf16. OpenVINO's own default on a CPU with bf16 is bf16, which
changes the labels slightly; edgeseg asks for f32 unless told, so results match ONNX Runtime's.

``early_exit`` (default): ``infer_for_labels`` runs the graph without its last upsample, as the ONNX
Runtime backend does (see early_exit.py); the whole graph is compiled only when ``infer`` needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.onnx_meta import check_graph_io, onnx_metadata, parse_meta
from edgeseg.runtime.backends.base import Backend, fit_fixed_batch

INSTALL = "pip install 'edgeseg[openvino]'"
PRECISIONS = {"f32": "f32", "bf16": "bf16"}  # edgeseg's name -> OpenVINO's INFERENCE_PRECISION_HINT


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(
        self, compile_whole: Any, meta, output_kind: str, fixed_batch: int | None, precision: str, early: Any = None
    ) -> None:
        """``compile_whole()``: the whole graph, compiled (called when ``infer`` first needs it, or now
        without ``early``); ``early``: the graph without its last upsample, compiled, or None."""
        self._compile_whole = compile_whole
        self.request = None if early is not None else compile_whole().create_infer_request()
        self.early_request = early.create_infer_request() if early is not None else None
        self.meta = meta
        self.output_kind = output_kind
        self.fixed_batch = fixed_batch
        self.max_batch = fixed_batch or 1 << 16
        self.precision = precision
        if precision != "f32":
            self.variant = precision  # bench tables and verify reports show it beside the backend's name

    @classmethod
    def load(
        cls,
        path: Path,
        device: str | None = None,
        threads: int | None = None,
        precision: str = "f32",
        early_exit: bool = True,
    ) -> "OpenVinoBackend":
        """``threads``: INFERENCE_NUM_THREADS (default: OpenVINO's). ``precision``: f32 or bf16 (CPUs with bf16 only)."""
        path = Path(path)
        if path.suffix.lower() != ".onnx":
            raise EdgesegError(f"{path}: the openvino backend opens .onnx models; export one with `edgeseg export`")
        if (device or "cpu").split(":")[0] != "cpu":
            raise EdgesegError(f"--device {device}: the openvino backend runs on the CPU; use --device cpu")
        if precision not in PRECISIONS:
            raise EdgesegError(f"precision {precision!r}: the openvino backend takes {' or '.join(PRECISIONS)}")
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise EdgesegError(f"--threads {threads}: give a whole number of at least 1")
        try:
            import openvino as ov
        except ImportError:
            raise EdgesegError(f"{path}: OpenVINO is not installed; {INSTALL}") from None
        meta, extras = parse_meta(onnx_metadata(path), path)  # also: a missing file is one line
        core = ov.Core()
        if precision == "bf16":
            _require_bf16(core)
        model = _read_model(core, path)
        check_graph_io(_io(model.inputs), _io(model.outputs), meta, extras["output_kind"], path)
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": PRECISIONS[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        cut = _without_last_upsample(model) if early_exit else None
        early = _compile(core, cut, config, path) if cut is not None else None
        batch_dim = model.inputs[0].get_partial_shape()[0]
        fixed_batch = batch_dim.get_length() if batch_dim.is_static else None
        return cls(lambda: _compile(core, model, config, path), meta, extras["output_kind"], fixed_batch, precision, early)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.request is None:
            self.request = self._compile_whole().create_infer_request()
        return self._run(self.request, batch)

    def infer_for_labels(self, batch: np.ndarray) -> np.ndarray:
        return self.infer(batch) if self.early_request is None else self._run(self.early_request, batch)

    def _run(self, request: Any, batch: np.ndarray) -> np.ndarray:
        count = batch.shape[0]
        batch = fit_fixed_batch(batch, self.fixed_batch)
        # share_inputs: the call is synchronous, so OpenVINO may read the caller's buffer in place;
        # share_outputs=False: a fresh array, which the next call does not overwrite (as ONNX Runtime's)
        result = request.infer({0: np.ascontiguousarray(batch)}, share_inputs=True, share_outputs=False)
        return result[0][:count]

    def close(self) -> None:
        self.request = self.early_request = None


def cpu_has_bf16(core: Any) -> bool:
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _require_bf16(core: Any) -> None:
    if not cpu_has_bf16(core):
        capabilities = ", ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        raise EdgesegError(f"precision bf16: this CPU has no bf16 (OpenVINO's CPU capabilities: {capabilities}); "
                           "use precision f32, or a CPU with AVX512_BF16 or AMX")  # fmt: skip


def _read_model(core: Any, path: Path) -> Any:
    try:
        return core.read_model(str(path))
    except Exception as err:  # OpenVINO raises RuntimeError subclasses with multi-line texts
        raise EdgesegError(f"{path}: cannot be read by OpenVINO ({_reason(err)}); re-export it with `edgeseg export`") from None


def _without_last_upsample(model: Any) -> Any:
    """The graph up to the input of its last node when that is a bilinear align_corners upsample of the
    spatial axes (OpenVINO's form of the ONNX Resize that ``upsample_argmax`` reproduces), else None."""
    import openvino as ov

    results = model.get_results()
    if len(results) != 1:
        return None
    last = results[0].input_value(0).get_node()
    if last.get_type_name() != "Interpolate":
        return None
    attributes = last.get_attributes()
    if attributes.get("mode") != "linear_onnx" or attributes.get("coordinate_transformation_mode") != "align_corners":
        return None
    if attributes.get("antialias") or any(attributes.get("pads_begin", [])) or any(attributes.get("pads_end", [])):
        return None
    return ov.Model([last.input_value(0)], model.get_parameters(), "without_last_upsample")


def _compile(core: Any, model: Any, config: dict, path: Path) -> Any:
    try:
        return core.compile_model(model, "CPU", config)
    except Exception as err:
        raise EdgesegError(f"{path}: OpenVINO's CPU plugin cannot compile it ({_reason(err)}); "
                           "try --backend onnxruntime") from None  # fmt: skip


def _reason(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0][:160] if lines else type(err).__name__


def _io(ports: Any) -> list[tuple[list, str]]:
    """(shape, element type) of OpenVINO's ports; a dynamic size is None, an unknown rank an empty shape."""
    return [(_dims(port.get_partial_shape()), _type_name(port)) for port in ports]


def _dims(shape: Any) -> list:
    if shape.rank.is_dynamic:
        return []
    return [d.get_length() if d.is_static else None for d in shape]


def _type_name(port: Any) -> str:
    element = port.get_element_type()
    try:
        return str(np.dtype(element.to_dtype()))
    except (TypeError, RuntimeError, ValueError):  # bf16 and other types numpy lacks
        return element.get_type_name()
