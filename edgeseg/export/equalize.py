"""Cross-layer equalization and bias correction of an FP32 ONNX model, before INT8.

Nagel et al., ICCV 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction".

* Cross-layer equalization (CLE): in a chain Conv1 -> ReLU -> Conv2, output channel i of Conv1
  may be divided by s_i > 0 and input channel i of Conv2 multiplied by s_i without changing the
  function, because ReLU(x / s) = ReLU(x) / s. With r1 = max |W1[i]| and r2 = max |W2[:, i]|,
  s_i = sqrt(r1 / r2) makes both ranges sqrt(r1 r2). Passes over all chains repeat until the
  scales settle, as in the paper. A depthwise Conv2 (channel i in -> channel i out) and a regular
  one (group 1) are handled; any other chain (an activation feeding a Concat or two nodes, a
  Conv output used twice, grouped convolutions) is left alone and reported.
* ReLU6 (Clip(0, 6), all of MobileNetV2's backbone) is not positive homogeneous:
  s * Clip(x / s, 0, 6) = Clip(x, 0, 6 s). ``relu6="bounded"`` keeps the function the same on
  the calibration images: a channel whose pre-activation reached the clip there keeps s = 1,
  and every other channel gets s no smaller than (its calibration maximum x headroom) / 6, so
  the clip stays out of reach. ``relu6="skip"`` leaves those chains alone.
* Bias correction (the paper's empirical variant, weight error only): per-channel symmetric INT8
  weights (as quantize.py has ONNX Runtime make them) shift each convolution's expected output
  by (Q(W) - W) E[x]; the bias absorbs it, with E[x] the per-channel means of the conv's input
  on the calibration images.

Torch-free: numpy, onnx, and ONNX Runtime for the statistics over the calibration images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import write_bytes

MODES = ("off", "cle", "bias", "cle+bias")  # --equalize
RELU6_MODES = ("bounded", "skip")
DEFAULT_RELU6 = "bounded"
DEFAULT_HEADROOM = 1.1  # bounded ReLU6: a channel keeps its calibration maximum x 1.1 under the clip
MAX_PASSES = 20
SETTLED = 1e-4  # a pass whose largest |log s| is below this ends the iteration
WEIGHT_QMAX = 127  # symmetric per-channel int8 weights: [-127, 127], scale = max |W| / 127 (quantize.py's settings)


@dataclass
class Pair:
    conv1: str
    activation: str
    conv2: str
    kind: str  # "relu" or "relu6"
    clip_max: float | None  # the upper clip of a ReLU6-like activation
    depthwise: bool


@dataclass
class EqualizeReport:
    mode: str
    relu6: str
    headroom: float
    pairs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    passes: int = 0
    bias_corrected: list[str] = field(default_factory=list)
    images: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "relu6": self.relu6, "headroom": self.headroom, "passes": self.passes,
            "pairs": self.pairs, "skipped": self.skipped, "bias_corrected": len(self.bias_corrected),
            "calibration_images": self.images,
        }  # fmt: skip


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise EdgesegError(f"--equalize {mode}: choose one of {', '.join(MODES)}")
    return mode


def equalize_onnx(
    fp32_onnx: Path,
    out_path: Path,
    images: Callable[[], Iterable[np.ndarray]] | None,
    mode: str = "cle",
    relu6: str = DEFAULT_RELU6,
    headroom: float = DEFAULT_HEADROOM,
    keep_fp: Sequence[str] = (),
) -> EqualizeReport:
    """Write the equalized (and/or bias-corrected) copy of ``fp32_onnx`` to ``out_path``.

    ``images()``: a fresh iterable of pre-processed calibration batches (NCHW float32) each time it
    is called; bounded ReLU6 and bias correction each make one pass over them. ``keep_fp``: node
    names the quantizer leaves in float (no bias correction for them).
    """
    import onnx

    check_mode(mode)
    if relu6 not in RELU6_MODES:
        raise EdgesegError(f"relu6={relu6!r}: choose one of {', '.join(RELU6_MODES)}")
    model = onnx.load(str(fp32_onnx))
    graph = _Graph(model)
    report = EqualizeReport(mode, relu6, headroom)
    if mode in ("cle", "cle+bias"):
        pairs, report.skipped = find_pairs(graph)
        if relu6 == "skip":
            report.skipped += [_skip(p.conv1, f"{p.activation} is ReLU6 (relu6=skip)") for p in pairs if p.kind == "relu6"]
            pairs = [p for p in pairs if p.kind == "relu"]
        maxima = None
        if any(p.kind == "relu6" for p in pairs):
            if images is None:
                raise EdgesegError("equalize: bounded ReLU6 needs calibration images; pass --calib")
            stats = channel_statistics(model, [p.conv1 + ":out" for p in pairs if p.kind == "relu6"], images(), graph)
            report.images = stats.images
            maxima = {name.rpartition(":")[0]: values for name, values in stats.maxima.items()}
        report.passes, report.pairs = equalize_pairs(graph, pairs, maxima or {}, headroom)
    if mode in ("bias", "cle+bias"):
        if images is None:
            raise EdgesegError("equalize: bias correction needs calibration images; pass --calib")
        report.bias_corrected, count = correct_biases(graph, model, images(), set(keep_fp))
        report.images = max(report.images, count)
    graph.commit()
    write_bytes(out_path, model.SerializeToString())
    return report


# --- the graph ------------------------------------------------------------------------
class _Graph:
    """Nodes, producers, consumers and the Conv weights of an ONNX graph, edited in numpy."""

    def __init__(self, model) -> None:
        from onnx import numpy_helper

        self.model = model
        self.graph = model.graph
        self.inits: dict[str, Any] = {init.name: init for init in self.graph.initializer}
        self.nodes = {node.name: node for node in self.graph.node}
        self.consumers: dict[str, list] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {out.name for out in self.graph.output}
        self._uses = {name: len(nodes) for name, nodes in self.consumers.items()}
        self.arrays: dict[tuple[str, int], np.ndarray] = {}  # (conv name, input slot) -> array, float64
        self.dirty: set[tuple[str, int]] = set()  # the arrays edited since the last commit
        self._to_array = numpy_helper.to_array

    def conv_array(self, conv: str, slot: int) -> np.ndarray | None:
        """Weights (slot 1) or bias (slot 2) of a Conv, float64 for editing; None when absent or not constant."""
        key = (conv, slot)
        if key not in self.arrays:
            node = self.nodes[conv]
            if len(node.input) <= slot or node.input[slot] not in self.inits:
                return None
            self.arrays[key] = self._to_array(self.inits[node.input[slot]]).astype(np.float64)
        return self.arrays[key]

    def weights(self, conv: str) -> np.ndarray:
        """A Conv's weights, known to be constant (find_pairs and correct_biases checked)."""
        array = self.conv_array(conv, 1)
        if array is None:
            raise EdgesegError(f"{conv}: weights are not a constant; report this model")
        return array

    def set_bias(self, conv: str, bias: np.ndarray) -> None:
        node = self.nodes[conv]
        if len(node.input) < 3 or not node.input[2]:  # a Conv without bias gets one
            name = self._unique(f"{conv}.bias_corrected")
            if len(node.input) == 2:
                node.input.append(name)
            else:
                node.input[2] = name
            self._uses[name] = 1
        self.arrays[(conv, 2)] = bias
        self.dirty.add((conv, 2))

    def mark(self, conv: str, slot: int) -> None:
        self.dirty.add((conv, slot))

    def commit(self) -> None:
        """Write every edited array back: in place when only this Conv uses the tensor, else as a new initializer."""
        from onnx import numpy_helper

        for conv, slot in sorted(self.dirty):
            array = self.arrays[(conv, slot)]
            node = self.nodes[conv]
            name = node.input[slot]
            init = self.inits.get(name)
            dtype = np.float32 if init is None else numpy_helper.to_array(init).dtype
            if init is not None and self._uses.get(name, 0) > 1:
                self._uses[name] -= 1
                name = self._unique(f"{name}.{conv}")
                node.input[slot] = name
                init = None
            tensor = numpy_helper.from_array(array.astype(dtype), name)
            if init is None:
                self.graph.initializer.append(tensor)
                self.inits[name] = self.graph.initializer[-1]
                self._uses[name] = 1
            else:
                init.CopyFrom(tensor)
        self.arrays.clear()
        self.dirty.clear()

    def _unique(self, base: str) -> str:
        name, n = base, 1
        while name in self.inits or name in self.consumers:
            name, n = f"{base}.{n}", n + 1
        return name

    def attribute(self, node, name: str, default: Any = None) -> Any:
        import onnx

        for attr in node.attribute:
            if attr.name == name:
                return onnx.helper.get_attribute_value(attr)
        return default

    def constant(self, name: str) -> np.ndarray | None:
        return self._to_array(self.inits[name]) if name in self.inits else None


def _skip(conv: str, reason: str) -> dict[str, str]:
    return {"conv": conv, "reason": reason}


def find_pairs(graph: _Graph) -> tuple[list[Pair], list[dict[str, str]]]:
    """Every Conv1 -> ReLU/ReLU6 -> Conv2 chain CLE may scale, and every Conv -> activation chain it may not, with why."""
    pairs, skipped = [], []
    for node in graph.graph.node:
        if node.op_type != "Conv":
            continue
        users = graph.consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type not in ("Relu", "Clip"):
            if any(u.op_type in ("Relu", "Clip") for u in users):
                skipped.append(_skip(node.name, f"its output feeds {len(users)} nodes"))
            continue
        activation = users[0]
        kind, clip_max, why = _activation_kind(graph, activation)
        reason = why or _second_conv_problem(graph, node, activation)
        if reason:
            skipped.append(_skip(node.name, reason))
            continue
        conv2 = graph.consumers[activation.output[0]][0]
        pairs.append(Pair(node.name, activation.name, conv2.name, kind, clip_max, _is_depthwise(graph, conv2)))
    return pairs, skipped


def _activation_kind(graph: _Graph, activation) -> tuple[str, float | None, str | None]:
    if activation.op_type == "Relu":
        return "relu", None, None
    if len(activation.input) > 1:  # opset 11+: min and max are inputs
        bounds: list[float | None] = []
        for name in activation.input[1:3]:
            value = graph.constant(name) if name else None
            if name and value is None:
                return "", None, f"{activation.name}: Clip bounds are not constants"
            bounds.append(None if value is None else float(np.ravel(value)[0]))
        low, high = (bounds + [None, None])[:2]
    else:
        low, high = graph.attribute(activation, "min"), graph.attribute(activation, "max")
    if low != 0.0:
        return "", None, f"{activation.name}: Clip({low}, {high}) is not ReLU or ReLU6"
    return ("relu", None, None) if high is None else ("relu6", float(high), None)


def _second_conv_problem(graph: _Graph, conv1, activation) -> str | None:
    if conv1.output[0] in graph.outputs or activation.output[0] in graph.outputs:
        return "its output is a graph output"
    users = graph.consumers.get(activation.output[0], [])
    if len(users) != 1:
        return f"{activation.name} feeds {len(users)} nodes ({', '.join(sorted({u.op_type for u in users}))})"
    conv2 = users[0]
    if conv2.op_type != "Conv" or conv2.input[0] != activation.output[0]:
        return f"{activation.name} feeds a {conv2.op_type}, not a Conv's input"
    w1, w2 = graph.conv_array(conv1.name, 1), graph.conv_array(conv2.name, 1)
    if w1 is None or w2 is None:
        return "weights are not constants"
    if w1.ndim != 4 or w2.ndim != 4:
        return "not a 2-D convolution"
    if len(conv1.input) > 2 and conv1.input[2] and graph.conv_array(conv1.name, 2) is None:
        return "bias is not a constant"
    group = graph.attribute(conv2, "group", 1)
    if group != 1 and not _is_depthwise(graph, conv2):
        return f"{conv2.name} is a grouped convolution (group {group})"
    if w2.shape[1] * group != w1.shape[0]:
        return f"{conv2.name} takes {w2.shape[1] * group} channels, {conv1.name} gives {w1.shape[0]}"
    return None


def _is_depthwise(graph: _Graph, conv) -> bool:
    weights = graph.conv_array(conv.name, 1)
    group = graph.attribute(conv, "group", 1)
    return weights is not None and group > 1 and weights.shape[1] == 1 and weights.shape[0] == group


# --- cross-layer equalization ------------------------------------------------------------
def equalize_pairs(
    graph: _Graph, pairs: list[Pair], maxima: dict[str, np.ndarray], headroom: float
) -> tuple[int, list[dict[str, Any]]]:
    """Scale every pair, pass after pass, until the scales settle; the summary of each pair."""
    maxima = {name: values.astype(np.float64).copy() for name, values in maxima.items()}
    total = {p.conv1: np.ones(graph.weights(p.conv1).shape[0]) for p in pairs}
    passes = 0
    for passes in range(1, MAX_PASSES + 1):
        largest = 0.0
        for pair in pairs:
            scales = pair_scales(graph, pair, maxima.get(pair.conv1), headroom)
            apply_scales(graph, pair, scales)
            if pair.conv1 in maxima:
                maxima[pair.conv1] /= scales
            total[pair.conv1] *= scales
            largest = max(largest, float(np.max(np.abs(np.log(scales)))) if scales.size else 0.0)
        if largest < SETTLED:
            break
    return passes, [_summary(graph, pair, total[pair.conv1]) for pair in pairs]


def channel_ranges(graph: _Graph, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(r1, r2): max |W1[i]| over Conv1's output channel i, max |W2[:, i]| over Conv2's input channel i."""
    w1, w2 = graph.weights(pair.conv1), graph.weights(pair.conv2)
    r1 = np.abs(w1).reshape(w1.shape[0], -1).max(axis=1)
    r2 = np.abs(w2).reshape(w2.shape[0], -1).max(axis=1) if pair.depthwise else np.abs(w2).max(axis=(0, 2, 3))
    return r1, r2


def pair_scales(graph: _Graph, pair: Pair, maxima: np.ndarray | None, headroom: float) -> np.ndarray:
    r1, r2 = channel_ranges(graph, pair)
    alive = (r1 > 0) & (r2 > 0)
    scales = np.ones_like(r1)
    scales[alive] = np.sqrt(r1[alive] / r2[alive])
    if pair.kind == "relu6":
        if maxima is None:
            raise EdgesegError(f"{pair.conv1}: ReLU6 pair without calibration maxima; report this")
        peak = np.maximum(maxima, 0.0) * headroom
        clipped = peak > pair.clip_max  # the clip is reached: only s = 1 keeps the function
        scales = np.where(clipped, 1.0, np.maximum(scales, peak / pair.clip_max))
    return scales


def apply_scales(graph: _Graph, pair: Pair, scales: np.ndarray) -> None:
    """W1[i] /= s_i, b1[i] /= s_i, W2[:, i] *= s_i (in place on the graph's edited arrays)."""
    w1, w2 = graph.weights(pair.conv1), graph.weights(pair.conv2)
    w1 /= scales.reshape(-1, 1, 1, 1)
    bias = graph.conv_array(pair.conv1, 2)
    if bias is not None:
        bias /= scales
        graph.mark(pair.conv1, 2)
    graph.mark(pair.conv1, 1)
    graph.mark(pair.conv2, 1)
    w2 *= scales.reshape(-1, 1, 1, 1) if pair.depthwise else scales.reshape(1, -1, 1, 1)


def _summary(graph: _Graph, pair: Pair, scales: np.ndarray) -> dict[str, Any]:
    r1, r2 = channel_ranges(graph, pair)
    return {
        "conv1": pair.conv1, "activation": pair.kind, "conv2": pair.conv2, "depthwise": pair.depthwise,
        "channels": int(scales.size), "scaled": int(np.count_nonzero(np.abs(np.log(scales)) > 1e-6)),
        "scale_min": float(scales.min()), "scale_max": float(scales.max()),
        "range_ratio_max": float(np.max(np.maximum(r1, r2) / np.maximum(np.minimum(r1, r2), 1e-30))),
    }  # fmt: skip


# --- statistics over the calibration images ------------------------------------------------
@dataclass
class ChannelStatistics:
    maxima: dict[str, np.ndarray]
    means: dict[str, np.ndarray]
    images: int


def channel_statistics(
    model, tensors: Sequence[str], batches: Iterable[np.ndarray], graph: _Graph | None = None, means: bool = False
) -> ChannelStatistics:
    """Per-channel max (or mean) of tensors over the batches: "CONV:out" is a Conv's output, "CONV:in" its input.

    Reductions over (N, H, W) run inside the graph, so only C numbers per tensor come back.
    The graph's current edits (``graph``) are committed first so the statistics see them.
    """
    import onnx
    import onnxruntime as ort

    if graph is not None:
        graph.commit()
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    nodes = {node.name: node for node in augmented.graph.node}
    opset = next((o.version for o in augmented.opset_import if o.domain in ("", "ai.onnx")), 17)
    reduce_op = "ReduceMean" if means else "ReduceMax"
    axes_name = "edgeseg_stat_axes"
    if opset >= 18:
        augmented.graph.initializer.append(onnx.numpy_helper.from_array(np.array([0, 2, 3], np.int64), axes_name))
    del augmented.graph.output[:]
    names = []
    for index, key in enumerate(tensors):
        conv, _, where = key.partition(":")
        source = nodes[conv].output[0] if where == "out" else nodes[conv].input[0]
        out = f"edgeseg_stat_{index}"
        if opset >= 18:
            node = onnx.helper.make_node(reduce_op, [source, axes_name], [out], keepdims=0)
        else:
            node = onnx.helper.make_node(reduce_op, [source], [out], keepdims=0, axes=[0, 2, 3])
        augmented.graph.node.append(node)
        augmented.graph.output.append(onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
        names.append(out)
    session = ort.InferenceSession(augmented.SerializeToString(), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    totals = [np.zeros(0)] * len(names)
    images = 0
    for batch in batches:
        values = [v.astype(np.float64) for v in session.run(names, {input_name: batch})]
        if means:  # the mean of each batch, weighted by its images
            totals = [v * len(batch) if images == 0 else t + v * len(batch) for t, v in zip(totals, values)]
        else:
            totals = [v if images == 0 else np.maximum(t, v) for t, v in zip(totals, values)]
        images += len(batch)
    if images == 0:
        raise EdgesegError("equalize: no calibration images were read; check --calib")
    if means:
        return ChannelStatistics({}, {key: t / images for key, t in zip(tensors, totals)}, images)
    return ChannelStatistics(dict(zip(tensors, totals)), {}, images)


# --- bias correction ---------------------------------------------------------------------
def quantize_weights(weights: np.ndarray) -> np.ndarray:
    """Per-output-channel symmetric int8 weights, dequantized: what the INT8 models compute with."""
    flat = weights.reshape(weights.shape[0], -1)
    scale = np.abs(flat).max(axis=1) / WEIGHT_QMAX
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    quantized = np.clip(np.round(flat.astype(np.float32) / scale[:, None]), -WEIGHT_QMAX, WEIGHT_QMAX)
    return (quantized * scale[:, None]).reshape(weights.shape).astype(np.float64)


def correct_biases(
    graph: _Graph, model, batches: Iterable[np.ndarray], keep_fp: set[str]
) -> tuple[list[str], int]:
    """b += (W - Q(W)) E[x] for every constant-weight Conv the quantizer quantizes; the corrected convs."""
    convs = [n.name for n in graph.graph.node if n.op_type == "Conv" and n.name not in keep_fp
             and graph.conv_array(n.name, 1) is not None]  # fmt: skip
    stats = channel_statistics(model, [f"{c}:in" for c in convs], batches, graph, means=True)
    for conv in convs:
        weights = graph.weights(conv)
        groups = graph.attribute(graph.nodes[conv], "group", 1)
        error = (weights - quantize_weights(weights)).sum(axis=(2, 3))  # [out, in / groups]
        means = stats.means[f"{conv}:in"].reshape(groups, -1)  # [groups, in / groups]
        per_group = weights.shape[0] // groups
        shift = np.einsum("oi,oi->o", error, np.repeat(means, per_group, axis=0))
        bias = graph.conv_array(conv, 2)
        graph.set_bias(conv, (np.zeros(weights.shape[0]) if bias is None else bias) + shift)
    return convs, stats.images
