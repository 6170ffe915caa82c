"""The TensorRT Q/DQ model with its float parts in FP16, for strongly typed INT8 engines (TensorRT 10.x and 11.x).

A strongly typed network runs every layer in the type its ONNX tensors have. In ``model.int8.qdq.onnx``
the float tensors are FP32, and TensorRT's ONNX parser gives a DequantizeLinear the type of its scale
(onnx-tensorrt ``QuantDequantLinearHelper``: ``addDequantize(input, scale, scaleType)``), so everything
outside the INT8 convolutions (the ASPP pooling branch, the Resizes, Concat, the classifier, the final
upsample) would run in FP32. ``model.int8.qdq.fp16.onnx`` is the same graph, made from the same calibration,
with every float tensor in FP16:

* opset 19 at least: QuantizeLinear-13 and DequantizeLinear-13 take ``tensor(float)`` scales only;
  from opset 19 ``x`` and ``y_scale`` of QuantizeLinear share one type (float, float16 or bfloat16) and
  DequantizeLinear's output has its scale's type (ONNX operator spec, ``onnx/defs/quantization/old.cc``).
  NVIDIA ModelOpt writes FP16 Q/DQ models at opset 19 for the same reason (``BASE_MIN_OPSET = 19``,
  "the first to support fp16 scales in Q/DQ nodes", ``modelopt/onnx/utils.py``).
* the scales are ``model.int8.qdq.onnx``'s, rounded to the nearest FP16 number (subnormal below 6.1e-05, as
  ModelOpt writes them; see ``_half_scales``). A trained model's are far above that: the reference's smallest
  is 9.3e-05 (a weight channel), its activations' 7.9e-03.
* inputs that the operator spec keeps in float32 whatever the data type (Resize's ``scales``) stay float32.
* the graph input and output stay float32, with a Cast at each end, like ``model.fp16.onnx``.

ONNX Runtime's graph optimizations mishandle FP16 Q/DQ scales (its QDQ fusions refuse the model, or at
the basic level give wrong labels), so its backend opens such a model with them off (``QDQ_FLOAT_KEY``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import write_bytes
from edgeseg.core.onnx_meta import QDQ_FLOAT_KEY

MIN_OPSET = 19
HALF_TINY = float(np.finfo(np.float16).tiny)  # smallest normal FP16 number, 6.1e-05
HALF_SMALLEST = float(np.finfo(np.float16).smallest_subnormal)  # 6.0e-08
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def fp16_float_parts(qdq_onnx: Path, out_path: Path) -> dict[str, Any]:
    """Write the FP16-float copy of the Q/DQ model ``qdq_onnx`` to ``out_path``; what was done, for export.json."""
    import onnx
    from onnx import shape_inference, version_converter

    model = onnx.load(str(qdq_onnx))
    opset = max(MIN_OPSET, _default_opset(model))
    model = shape_inference.infer_shapes(version_converter.convert_version(model, opset), strict_mode=True)
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    kept = _float32_inputs(graph, initializers, opset, Path(qdq_onnx).name)
    scales = _half_scales(graph, initializers, kept)
    halved = _half_initializers(graph, kept) + _half_constants(graph, kept)
    _cast_at_the_ends(graph)
    del graph.value_info[:]
    model = shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)  # every tensor's type agrees with its operators
    _mark(model)
    write_bytes(out_path, model.SerializeToString())
    return {"opset": opset, "float16_initializers": halved, "float32_kept": sorted(kept), **scales}


def _mark(model: Any) -> None:
    """The metadata entry that tells edgeseg's ONNX Runtime backend what this model is (the rest is the Q/DQ model's)."""
    for entry in model.metadata_props:
        if entry.key == QDQ_FLOAT_KEY:
            entry.value = "float16"
            return
    entry = model.metadata_props.add()
    entry.key, entry.value = QDQ_FLOAT_KEY, "float16"


def _default_opset(model: Any) -> int:
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def _float32_inputs(graph: Any, initializers: dict[str, Any], opset: int, name: str) -> set[str]:
    """Initializers that feed an operator input that takes float32 only (Resize's scales); an activation there is refused."""
    from onnx import defs

    float32 = {v.name for v in [*graph.value_info, *graph.input] if v.type.tensor_type.elem_type == 1}
    float32 |= {init.name for init in initializers.values() if init.data_type == 1}
    kept = set()
    for node in graph.node:
        schema = defs.get_schema(node.op_type, opset, node.domain)
        for index, tensor in enumerate(node.input):
            if tensor not in float32 or "tensor(float16)" in _allowed_types(schema, index):
                continue
            if tensor not in initializers:
                raise EdgesegError(f"{name}: node {node.name} ({node.op_type}) takes only float32 at input {index}, "
                                   "computed in the graph; export without --precision int8 or report this model")  # fmt: skip
            kept.add(tensor)
    return kept


def _allowed_types(schema: Any, index: int) -> set[str]:
    formal = schema.inputs[min(index, len(schema.inputs) - 1)]
    for constraint in schema.type_constraints:
        if constraint.type_param_str == formal.type_str:
            return set(constraint.allowed_type_strs)
    return {formal.type_str}  # a fixed type, such as Resize's tensor(float) scales


def _half_scales(graph: Any, initializers: dict[str, Any], kept: set[str]) -> dict[str, Any]:
    """Every Q/DQ scale rounded to the nearest FP16 number: below FP16's smallest normal one it keeps a subnormal
    value, and only one that would round to zero is raised to the smallest subnormal, as NVIDIA ModelOpt's FP16
    conversion writes initializers (``PrecisionConverter``: ``np.finfo(float16).smallest_subnormal``). The int8
    weights of a channel whose scale so lost precision are re-rounded to its FP16 scale."""
    from onnx import numpy_helper

    subnormal, raised, change = 0, 0, 0.0
    for node in graph.node:
        scale = initializers.get(node.input[1]) if node.op_type in QDQ_OPS and len(node.input) > 1 else None
        if scale is None or scale.name in kept or scale.data_type != 1:  # 1: already converted, or not float32
            continue
        values = numpy_helper.to_array(scale).astype(np.float32)
        half = np.maximum(values, HALF_SMALLEST).astype(np.float16)
        normal = values >= HALF_TINY
        if normal.any():  # a normal FP16 number is within 2**-11 of the value
            change = max(change, float(np.max(np.abs(half[normal].astype(np.float32) / values[normal] - 1))))
        if not normal.all():
            subnormal += int(np.count_nonzero(~normal & (values >= HALF_SMALLEST)))
            raised += int(np.count_nonzero(values < HALF_SMALLEST))
            _requantize_weights(node, initializers, values, half.astype(np.float32))
        scale.CopyFrom(numpy_helper.from_array(half, scale.name))
    return {"scales_subnormal": subnormal, "scales_raised": raised, "max_normal_scale_change": change}


def _requantize_weights(node: Any, initializers: dict[str, Any], old: np.ndarray, new: np.ndarray) -> None:
    """A DequantizeLinear of int8 weights whose scale changed: the weights, re-rounded to the new scale."""
    from onnx import helper, numpy_helper

    weights = initializers.get(node.input[0])
    if node.op_type != "DequantizeLinear" or weights is None:
        return  # an activation's scale
    values = numpy_helper.to_array(weights)
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
    shape = [1] * values.ndim
    if old.size > 1:
        shape[axis] = old.size
    ratio = (old / new).reshape(shape)
    rounded = np.clip(np.rint(values * ratio), -127, 127).astype(values.dtype)
    weights.CopyFrom(numpy_helper.from_array(rounded, weights.name))


def _half_initializers(graph: Any, kept: set[str]) -> int:
    from onnx import numpy_helper

    count = 0
    for init in graph.initializer:
        if init.data_type == 1 and init.name not in kept:  # FLOAT
            init.CopyFrom(numpy_helper.from_array(_to_half(numpy_helper.to_array(init), init.name), init.name))
            count += 1
    return count


def _half_constants(graph: Any, kept: set[str]) -> int:
    from onnx import numpy_helper

    count = 0
    for node in graph.node:
        if node.op_type != "Constant" or node.output[0] in kept:
            continue
        for attribute in node.attribute:
            if attribute.name == "value" and attribute.t.data_type == 1:
                tensor = attribute.t
                tensor.CopyFrom(numpy_helper.from_array(_to_half(numpy_helper.to_array(tensor), tensor.name), tensor.name))
                count += 1
    return count


def _to_half(values: np.ndarray, name: str) -> np.ndarray:
    if np.any(np.abs(values) > np.finfo(np.float16).max):
        raise EdgesegError(f"{name}: values beyond FP16's range ({np.abs(values).max():.3g}); this model has no FP16 form")
    return values.astype(np.float16)


def _cast_at_the_ends(graph: Any) -> None:
    """float32 graph inputs and outputs: a Cast to FP16 after each input, from FP16 before each output."""
    from onnx import TensorProto, helper

    first, last = [], []
    for value in graph.input:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            half = f"{value.name}_fp16"
            for node in graph.node:
                node.input[:] = [half if name == value.name else name for name in node.input]
            first.append(helper.make_node("Cast", [value.name], [half], name=f"{value.name}_to_fp16", to=TensorProto.FLOAT16))
    for value in graph.output:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            half = f"{value.name}_fp16"
            for node in graph.node:
                node.output[:] = [half if name == value.name else name for name in node.output]
            last.append(helper.make_node("Cast", [half], [value.name], name=f"{value.name}_to_fp32", to=TensorProto.FLOAT))
    nodes = [*first, *graph.node, *last]
    del graph.node[:]
    graph.node.extend(nodes)
