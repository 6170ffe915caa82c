"""The model without its last layer, the bilinear upsample of its logits, for ONNX Runtime on a CPU.

``edgeseg.runtime.labels.upsample_argmax`` turns the small logits into the same labels for a
fraction of the upsample's CPU time. ONNX Runtime runs every node of a graph whatever outputs a run
asks for, so the upsample is cut out of a copy of the graph, in memory; the file is unchanged.
"""

from __future__ import annotations


def without_last_upsample(model):
    """A copy of ``model`` (an onnx.ModelProto) that outputs the logits before its last Resize, or None
    unless the graph's one output comes from a bilinear Resize with align_corners, the only upsample
    that ``upsample_argmax`` reproduces."""
    from onnx import ModelProto, helper

    graph = model.graph
    if len(graph.output) != 1:
        return None
    output = graph.output[0]
    last = next((node for node in graph.node if output.name in node.output), None)
    if last is None or last.op_type != "Resize" or last.domain not in ("", "ai.onnx") or not last.input[0]:
        return None
    attributes = {attr.name: helper.get_attribute_value(attr) for attr in last.attribute}
    if attributes.get("mode") != b"linear" or attributes.get("coordinate_transformation_mode") != b"align_corners":
        return None
    if attributes.get("antialias", 0) or not set(attributes.get("axes", [])) <= {2, 3, -2, -1}:
        return None
    cut = ModelProto()
    cut.CopyFrom(model)
    del cut.graph.output[:]
    # a Resize keeps its input's element type
    cut.graph.output.append(helper.make_tensor_value_info(last.input[0], output.type.tensor_type.elem_type, None))
    _drop_unused_nodes(cut.graph)
    return cut


def _drop_unused_nodes(graph) -> None:
    """Remove the nodes that no graph output depends on (the Resize, and its size computation)."""
    needed = {output.name for output in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    used_initializers = [init for init in graph.initializer if init.name in needed]
    del graph.node[:]
    graph.node.extend(reversed(kept))
    del graph.initializer[:]
    graph.initializer.extend(used_initializers)
