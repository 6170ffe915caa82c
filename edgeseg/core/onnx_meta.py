"""edgeseg's metadata inside an ONNX model (``metadata_props``), so the runtime needs no other file.

The key ``edgeseg`` holds the whole ``ModelMeta`` as JSON plus export facts (output kind,
precision, source checkpoint sha256, edgeseg version); a few readable keys repeat the basics
for people inspecting the model in Netron or ``onnx``. Parsing works on a plain ``dict`` so the
ONNX Runtime backend can read ``custom_metadata_map`` without the ``onnx`` package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from edgeseg import __version__
from edgeseg.core.errors import EdgesegError
from edgeseg.core.meta import ModelMeta, json_type_name, meta_from_dict, short_json

META_KEY = "edgeseg"
OUTPUT_KINDS = ("logits", "labels")
PRECISIONS = ("fp32", "fp16", "int8")  # every int8 form (Q/DQ for TensorRT, the CPU form) says int8
EXPORT_FACTS = ("output_kind", "precision", "source_sha256", "edgeseg_version")
QDQ_FLOAT_KEY = "qdq_float_type"  # "float16" in a Q/DQ model with FP16 scales and float layers (edgeseg/export/qdq_fp16.py)
REEXPORT = "re-export it with `edgeseg export`"
INTEGER_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64")
FLOAT_TYPES = ("float32", "float16", "float64")
GRAPH_FIELD, METADATA_FIELD = 7, 14  # of ModelProto


def meta_properties(meta: ModelMeta, output_kind: str, precision: str, source_sha256: str) -> dict[str, str]:
    if output_kind not in OUTPUT_KINDS:
        raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {output_kind!r}")
    data = meta.to_dict()
    extras = {"output_kind": output_kind, "precision": precision, "source_sha256": source_sha256,
              "edgeseg_version": __version__}  # fmt: skip
    return {
        META_KEY: json.dumps({**data, **extras}),
        "classes": json.dumps(data["classes"]),
        "palette": json.dumps(data["palette"]),
        "ignore_index": str(meta.ignore_index),
        "input_size": json.dumps(data["input_size"]),
        "preprocess": json.dumps(data["preprocess"]),
        "output_kind": output_kind,
    }


def write_meta(model_proto: Any, properties: dict[str, str]) -> None:
    """Replace the model's metadata_props with ``properties``."""
    del model_proto.metadata_props[:]
    for key, value in properties.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def parse_meta(properties: Any, source: str | Path, fix: str = REEXPORT) -> tuple[ModelMeta, dict[str, Any]]:
    """(ModelMeta, export facts) from a metadata mapping, checked against the schema; one-line errors."""
    if not isinstance(properties, Mapping) or META_KEY not in properties:
        raise EdgesegError(f"{source}: not exported by edgeseg (no edgeseg metadata); export it with `edgeseg export`")
    text = properties[META_KEY]
    try:
        data = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError) as err:  # RecursionError: JSON nested thousands deep
        reason = str(err).splitlines()[0][:80] if str(err) else type(err).__name__
        raise EdgesegError(f"{source}: the edgeseg metadata is not JSON ({reason}); {fix}") from None
    if not isinstance(data, dict):
        shown = "not a string" if not isinstance(text, str) else f"a JSON {json_type_name(data)}"
        raise EdgesegError(f"{source}: the edgeseg metadata is {shown}, not a JSON object; {fix}")
    extras = _export_facts(data, source, fix)
    meta = meta_from_dict({k: v for k, v in data.items() if k not in EXPORT_FACTS}, source, fix)
    return meta, extras


def _export_facts(data: dict[str, Any], source: str | Path, fix: str) -> dict[str, Any]:
    missing = [key for key in EXPORT_FACTS if key not in data]
    if missing:
        raise EdgesegError(f"{source}: model metadata has no {', '.join(missing)}; {fix}")
    rules = {"output_kind": OUTPUT_KINDS, "precision": PRECISIONS}
    for key, choices in rules.items():
        if not isinstance(data[key], str) or data[key] not in choices:
            raise EdgesegError(
                f"{source}: model metadata {key} {short_json(data[key])} must be one of {', '.join(choices)}; {fix}"
            )
    for key in ("source_sha256", "edgeseg_version"):
        if not isinstance(data[key], str):
            raise EdgesegError(f"{source}: model metadata {key} {short_json(data[key])} must be a string; {fix}")
    return {key: data[key] for key in EXPORT_FACTS}


def check_graph_io(
    inputs: Sequence[tuple[Sequence[Any], str]], outputs: Sequence[tuple[Sequence[Any], str]], meta: ModelMeta,
    output_kind: str, source: str | Path, fix: str = REEXPORT,
) -> None:
    """The graph's own inputs and outputs against its metadata: (shape, element type) of each.

    A shape holds ints for static sizes and anything else (a name, None, -1) for a dynamic one;
    the element type is a name such as ``tensor(float)``, ``float32``, ``uint8``. Only the batch
    axis of the input may be dynamic, and the sizes must be the metadata's: the pre-processing
    fills an input of exactly ``input_size``, and ``classes``/``palette`` index the output channels.
    """
    if len(inputs) != 1 or not outputs:
        raise EdgesegError(f"{source}: the graph has {len(inputs)} inputs and {len(outputs)} outputs; "
                           f"an edgeseg model has one image input and an output; {fix}")  # fmt: skip
    _check_input(*inputs[0], meta, source, fix)
    _check_output(*outputs[0], meta, output_kind, source, fix)


def _check_input(shape: Sequence[Any], type_name: str, meta: ModelMeta, source: str | Path, fix: str) -> None:
    height, width = meta.input_size
    if len(shape) != 4 or list(shape[1:]) != [3, height, width] or not _batch_axis_ok(shape[0]):
        raise EdgesegError(f"{source}: the graph's input has shape {_dims(shape)}, but its metadata "
                           f"(input_size {height}x{width}) needs [N, 3, {height}, {width}]; {fix}")  # fmt: skip
    if _element(type_name) != "float32":
        raise EdgesegError(f"{source}: the graph's input is {type_name}, not float32; {fix}")


def _check_output(
    shape: Sequence[Any], type_name: str, meta: ModelMeta, output_kind: str, source: str | Path, fix: str
) -> None:
    found = f"the output is {_element(type_name)} of shape {_dims(shape)}"
    if output_kind == "labels" and (len(shape) != 3 or _element(type_name) not in INTEGER_TYPES):
        raise EdgesegError(f"{source}: the metadata says output_kind labels, but {found}, "
                           f"not integer class ids [N, H, W]; {fix}")  # fmt: skip
    if output_kind == "logits" and (len(shape) != 4 or _element(type_name) not in FLOAT_TYPES):
        raise EdgesegError(f"{source}: the metadata says output_kind logits, but {found}, "
                           f"not scores [N, C, H, W]; {fix}")  # fmt: skip
    channels = shape[1] if output_kind == "logits" else meta.num_classes
    if isinstance(channels, int) and channels != meta.num_classes:
        raise EdgesegError(f"{source}: the graph outputs {channels} class scores but its metadata names "
                           f"{meta.num_classes} classes (num_classes, classes, palette); {fix}")  # fmt: skip
    spatial = shape[-2:]
    if any(isinstance(d, int) and d != want for d, want in zip(spatial, meta.input_size)):
        raise EdgesegError(f"{source}: {found}, not at the input size {meta.input_size[0]}x{meta.input_size[1]} "
                           f"of its metadata; {fix}")  # fmt: skip


def _batch_axis_ok(dim: Any) -> bool:
    return not isinstance(dim, int) or dim >= 1 or dim == -1  # a name, None or -1 means dynamic


def _element(type_name: str) -> str:
    """ONNX Runtime's "tensor(float)" or a numpy name, as a numpy name."""
    name = str(type_name)
    if name.startswith("tensor(") and name.endswith(")"):
        name = name[len("tensor(") : -1]
    return {"float": "float32", "double": "float64"}.get(name, name)


def _dims(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, (int, str)) and str(d) else "?" for d in shape) + "]"


def read_meta(path: str | Path) -> tuple[ModelMeta, dict[str, Any]]:
    return parse_meta(onnx_metadata(Path(path)), path)


def onnx_metadata(onnx_path: Path) -> dict[str, str]:
    """The model's ``metadata_props``: with ``onnx`` when installed, else read straight from the protobuf."""
    if not Path(onnx_path).is_file():
        raise EdgesegError(f"{onnx_path}: no such model file; check the path")
    try:
        import onnx
    except ImportError:
        return read_metadata_props(Path(onnx_path).read_bytes(), onnx_path)
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends for damaged files
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise EdgesegError(f"{onnx_path}: not a readable ONNX model ({reason}); {REEXPORT}") from None
    if not model.HasField("graph"):  # protobuf reads an empty file, or some others, as an empty model
        raise EdgesegError(f"{onnx_path}: not a readable ONNX model (no graph: empty, cut short or not ONNX); {REEXPORT}")
    return {prop.key: prop.value for prop in model.metadata_props}


def read_metadata_props(payload: bytes, source: str | Path = "ONNX model") -> dict[str, str]:
    """ModelProto field 14 (metadata_props: key = 1, value = 2), without the onnx package. A payload that is
    no ONNX model (a damaged protobuf, a file cut short, no graph) is one line naming ``source``."""
    props, fields = {}, set()
    try:
        for number, value in _proto_fields(memoryview(payload)):
            fields.add(number)
            if number == METADATA_FIELD and isinstance(value, memoryview):
                entry = {n: bytes(v).decode() for n, v in _proto_fields(value) if n in (1, 2)}
                props[entry.get(1, "")] = entry.get(2, "")
    except (IndexError, UnicodeDecodeError, TypeError, EdgesegError):  # cut short, or not text where text belongs
        raise EdgesegError(f"{source}: not a readable ONNX model (damaged protobuf); {REEXPORT}") from None
    if GRAPH_FIELD not in fields:
        raise EdgesegError(f"{source}: not a readable ONNX model (no graph: empty, cut short or not ONNX); {REEXPORT}")
    return props


def _proto_fields(data: memoryview):
    """(field number, value) of one protobuf message's top-level fields; nested messages stay bytes."""
    for number, wire, start, end in proto_spans(data, 0, len(data)):
        yield number, (read_varint(data, start)[0] if wire == 0 else data[start:end])


def proto_spans(data: Union[memoryview, bytearray, bytes], start: int, end: int):
    """(field number, wire type, value start, value end) of each top-level field of the message at data[start:end]."""
    pos = start
    while pos < end:
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value_start = pos
            _, pos = read_varint(data, pos)
        elif wire == 2:
            length, value_start = read_varint(data, pos)
            pos = value_start + length
        elif wire in (1, 5):
            value_start, pos = pos, pos + (8 if wire == 1 else 4)
        else:
            raise EdgesegError(f"ONNX model: unexpected protobuf wire type {wire}; the file is damaged, re-export or re-copy it")
        if pos > end:
            raise EdgesegError("ONNX model: a protobuf field runs past the end; the file is cut short, re-export or re-copy it")
        yield number, wire, value_start, pos


def read_varint(data: Union[memoryview, bytearray, bytes], pos: int) -> tuple[int, int]:
    """(value, next position) of the protobuf varint at ``pos``."""
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
