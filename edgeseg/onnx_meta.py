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
