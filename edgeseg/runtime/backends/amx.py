"""Send ONNX Runtime's large int8 convolutions to its AMX kernels on CPUs that have AMX-INT8.

ONNX Runtime (MLAS) runs a quantized convolution whose int8 weights have zero-point 0 through
its "symmetric" convolution kernels, which use AVX-512 VNNI even where the CPU has AMX; only its
general quantized GEMM (im2col, then GEMM) dispatches to AMX. Storing the same weights with
zero-point -1 (every stored value minus one) changes no dequantized value, so no output changes
by a single bit, and moves the convolution onto the AMX GEMM. The file on disk keeps the
standard symmetric form; this rewrite happens in memory, only on a CPU with AMX-INT8, and only
when asked for (``amx=True``, or ``EDGESEG_ORT_AMX=1`` for the CLI): the backend keeps its name
``onnxruntime`` and reports ``variant`` "amx".

Why opt-in: the measurements disagree. `python benchmarks/export_int8.py` on one 2-core AMX Xeon
(2 threads, 360x480) gave the reference model's CPU-form INT8 0.33x of FP32 without the rewrite
and 0.27x with it; a later check on an AMX-INT8 Xeon (issue 23: 12 interleaved rounds, 2 threads,
360x480) found no gain, median 74.8 ms with it against 74.1 ms without. Until it is measured on
more CPUs (`python benchmarks/export_int8.py` times it on and off, interleaved) it stays off.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeseg.core.sysinfo import read_text

# Reduction depth (input channels x kernel height x kernel width) from which the AMX GEMM beats
# the symmetric VNNI kernel: below it the im2col copy costs more than AMX saves. Sweep on the
# reference model (INT8 / FP32 latency): every conv 0.28, depth >= 256: 0.265, >= 576: 0.26,
# >= 2000: 0.27; 256 keeps the pick away from the edges of that plateau.
MIN_DEPTH = 256


def has_amx_int8(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU reports AMX tiles with int8 support (Linux; False where unknown)."""
    text = read_text(cpuinfo) or ""
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "amx_tile" in flags and "amx_int8" in flags


def route_convs_to_amx(model, min_depth: int = MIN_DEPTH) -> int:
    """Rewrite ``model`` (an onnx.ModelProto) in place; returns how many convolutions moved."""
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    uses: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    moved = 0
    for node in graph.node:
        weight_and_zero = _conv_weight_inputs(node, uses)
        if weight_and_zero is None:
            continue
        weight, zero = (initializers.get(name) for name in weight_and_zero)
        if weight is not None and zero is not None and all(len(uses[name]) == 1 for name in weight_and_zero):
            moved += _shift_zero_point(weight, zero, min_depth)
    return moved


def _conv_weight_inputs(node, uses: dict[str, list]) -> tuple[str, str] | None:
    """(weight, weight zero-point) input names of a dense (group 1) int8 convolution, else None."""
    if node.op_type == "QLinearConv" and len(node.input) >= 6 and _group(node) == 1:
        return node.input[3], node.input[5]
    if node.op_type == "DequantizeLinear" and len(node.input) == 3:
        consumers = uses.get(node.output[0], [])
        if consumers and all(c.op_type == "Conv" and c.input[1] == node.output[0] and _group(c) == 1 for c in consumers):
            return node.input[0], node.input[2]
    return None


def _group(node) -> int:
    return next((attr.i for attr in node.attribute if attr.name == "group"), 1)


def _shift_zero_point(weight, zero, min_depth: int) -> int:
    from onnx import numpy_helper

    values, zeros = numpy_helper.to_array(weight), numpy_helper.to_array(zero)
    if values.dtype != np.int8 or values.ndim != 4 or zeros.any() or int(np.prod(values.shape[1:])) < min_depth:
        return 0
    if values.min() < -127:  # -128 - 1 would not fit; symmetric quantizers never write -128
        return 0
    weight.CopyFrom(numpy_helper.from_array((values.astype(np.int16) - 1).astype(np.int8), weight.name))
    zero.CopyFrom(numpy_helper.from_array(np.full_like(zeros, -1), zero.name))
    return 1
