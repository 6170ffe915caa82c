"""edgeseg's metadata inside an ONNX model (``metadata_props``), so the runtime needs no other file.

The key ``edgeseg`` holds the whole ``ModelMeta`` as JSON plus export facts (output kind,
precision, source checkpoint sha256, edgeseg version); a few readable keys repeat the basics
for people inspecting the model in Netron or ``onnx``. Parsing works on a plain ``dict`` so the
ONNX Runtime backend can read ``custom_metadata_map`` without the ``onnx`` package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeseg import __version__
from edgeseg.errors import EdgesegError
from edgeseg.meta import ModelMeta

META_KEY = "edgeseg"
OUTPUT_KINDS = ("logits", "labels")


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


def parse_meta(properties: dict[str, str], source: str | Path) -> tuple[ModelMeta, dict[str, Any]]:
    """(ModelMeta, export facts) from a metadata mapping; one-line error when edgeseg did not write it."""
    if META_KEY not in properties:
        raise EdgesegError(f"{source}: not exported by edgeseg (no edgeseg metadata); export it with `edgeseg export`")
    try:
        data = json.loads(properties[META_KEY])
        extras = {key: data.pop(key) for key in ("output_kind", "precision", "source_sha256", "edgeseg_version")}
        return ModelMeta.from_dict(data), extras
    except (ValueError, KeyError, TypeError) as err:
        raise EdgesegError(f"{source}: edgeseg metadata is damaged ({err}); re-export the model") from None


def read_meta(path: str | Path) -> tuple[ModelMeta, dict[str, Any]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return parse_meta({p.key: p.value for p in model.metadata_props}, path)


def onnx_metadata(onnx_path: Path) -> dict[str, str]:
    """The model's ``metadata_props``: with ``onnx`` when installed, else read straight from the protobuf."""
    try:
        import onnx
    except ImportError:
        return read_metadata_props(Path(onnx_path).read_bytes())
    model = onnx.load(str(onnx_path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def read_metadata_props(payload: bytes) -> dict[str, str]:
    """ModelProto field 14 (metadata_props: key = 1, value = 2), without the onnx package."""
    props = {}
    for number, value in _proto_fields(memoryview(payload)):
        if number == 14:
            entry = {n: bytes(v).decode() for n, v in _proto_fields(value) if n in (1, 2)}
            props[entry.get(1, "")] = entry.get(2, "")
    return props


def _proto_fields(data: memoryview):
    """(field number, value) of one protobuf message's top-level fields; nested messages stay bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos : pos + size], pos + size
        else:
            raise EdgesegError(f"ONNX model: unexpected protobuf wire type {wire}; the file is damaged")
        yield number, value


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
