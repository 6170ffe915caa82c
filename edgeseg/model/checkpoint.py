"""Checkpoints: weights plus the metadata that says how to use them.

An edgeseg ``.pt`` file is a plain dict (loadable with ``weights_only=True``)::

    {"format": "edgeseg", "format_version": 1, "meta": ModelMeta.to_dict(),
     "model": state_dict, "train_state": {...}  # last.pt only, for --resume}

A bare seed-repository state_dict is recognised by its keys and can be wrapped with
``import_seed`` so it is usable everywhere a model is expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from edgeseg import __version__
from edgeseg.core.errors import EdgesegError
from edgeseg.core.fileio import atomic_path
from edgeseg.core.meta import HEADS, SEED_PREPROCESS, ModelMeta, default_class_names, default_palette, meta_from_dict
from edgeseg.model.network import DeepLabV3Plus, build_model

FORMAT = "edgeseg"
FORMAT_VERSION = 1
REWRITE_FIX = "write it again with `edgeseg train` or `edgeseg import-seed`"
SEED_MARKER_KEYS = ("backbone.features.0.0.weight", "aspp.conv_cat.0.weight", "cls_conv.weight")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load any ``.pt`` safely; one-line errors for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise EdgesegError(f"{path}: no such checkpoint file; pass the path of a .pt written by `edgeseg train`")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for truncated, foreign or unsafe files
        raise EdgesegError(
            f"{path}: cannot be read as a PyTorch checkpoint ({_reason(err)}); "
            "pass a .pt written by `edgeseg train` or `edgeseg import-seed`"
        ) from None
    if not isinstance(data, dict):
        raise EdgesegError(f"{path}: holds a {type(data).__name__}, not a checkpoint dict; pass an edgeseg or seed .pt")
    return data


def _reason(err: Exception) -> str:
    """Why torch refused the file, in a few words, never cut mid-word."""
    text = str(err).strip()
    if "WeightsUnpickler error" in text:  # torch's long weights_only message: the detail follows this marker
        detail = text.split("WeightsUnpickler error:", 1)[1].strip()
        if detail.startswith("Unsupported global"):
            return "it holds Python objects that weights-only loading refuses to unpickle; nothing in it was run"
        return "not a PyTorch file, or a damaged one"
    first = text.splitlines()[0] if text else type(err).__name__
    return first if len(first) <= 120 else first[:120].rsplit(" ", 1)[0] + " ..."


def is_edgeseg_checkpoint(data: dict[str, Any]) -> bool:
    return data.get("format") == FORMAT and "model" in data and "meta" in data


def is_seed_state_dict(data: dict[str, Any]) -> bool:
    return all(key in data for key in SEED_MARKER_KEYS)


def load_model(path: str | Path, device: str = "cpu") -> tuple[DeepLabV3Plus, ModelMeta]:
    """An edgeseg checkpoint as an eval-mode model and its metadata."""
    path = Path(path)
    data = read_checkpoint(path)
    if not is_edgeseg_checkpoint(data):
        hint = (
            f"wrap it first: edgeseg import-seed {path} --num-classes N --out model.pt"
            if is_seed_state_dict(data)
            else "pass a .pt written by `edgeseg train` or `edgeseg import-seed`"
        )
        raise EdgesegError(f"{path}: not an edgeseg checkpoint; {hint}")
    meta = meta_from_dict(data["meta"], path, REWRITE_FIX)
    if not isinstance(data["model"], dict):
        raise EdgesegError(f"{path}: its weights are a {type(data['model']).__name__}, not a state_dict; {REWRITE_FIX}")
    model = model_from_state_dict(data["model"], meta, source=path, from_meta=True)
    return model.to(device).eval(), meta


def model_from_state_dict(
    state: dict[str, torch.Tensor], meta: ModelMeta, source: Path, from_meta: bool = False
) -> DeepLabV3Plus:
    model = build_model(meta.num_classes, meta.output_stride, meta.backbone, meta.head)
    check_state_dict(state, model, meta.num_classes, source, from_meta, meta.head)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model


def check_state_dict(
    state: dict[str, Any], model: DeepLabV3Plus, num_classes: int, source: Path, from_meta: bool = False,
    head: str = "seed",
) -> None:
    """The weights fit the model; ``from_meta``: num_classes (and head) came from the file's own metadata."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        _check_head(state, model, head, source, from_meta)
        raise EdgesegError(
            f"{source}: weights do not fit MobileNetV2-DeepLabv3+ ({len(missing)} missing keys, e.g. "
            f"{(missing or ['-'])[0]}; {len(unexpected)} unexpected, e.g. {(unexpected or ['-'])[0]}); "
            "pass a checkpoint of this architecture"
        )
    not_tensors = [k for k in expected if not isinstance(state[k], torch.Tensor)]
    if not_tensors:
        raise EdgesegError(f"{source}: {not_tensors[0]} is not a tensor ({type(state[not_tensors[0]]).__name__}); "
                           "pass a checkpoint of this architecture")  # fmt: skip
    found_classes = int(state["cls_conv.weight"].shape[0])
    if found_classes != num_classes and from_meta:
        raise EdgesegError(f"{source}: the classifier has {found_classes} classes but the metadata names "
                           f"{num_classes} (num_classes, classes, palette); {REWRITE_FIX}")  # fmt: skip
    if found_classes != num_classes:
        raise EdgesegError(
            f"{source}: the classifier has {found_classes} classes but {num_classes} were asked for; "
            f"use --num-classes {found_classes} or a dataset with {found_classes} classes"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise EdgesegError(
                f"{source}: {key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}; "
                "pass a checkpoint of this architecture"
            )


def _check_head(state: dict[str, Any], model: DeepLabV3Plus, head: str, source: Path, from_meta: bool) -> None:
    """Weights that are another head's: say so, rather than list missing keys."""
    for other in HEADS:
        if other == head:
            continue
        keys = build_model(model.num_classes, model.output_stride, head=other).state_dict().keys()
        if set(keys) == set(state):
            fix = REWRITE_FIX if from_meta else f"pass weights of the {head} head"
            where = "its metadata says" if from_meta else "the model asked for has"
            raise EdgesegError(f"{source}: the weights are a {other} head's but {where} head {head}; {fix}")


def checkpoint_dict(
    model: torch.nn.Module, meta: ModelMeta, train_state: dict[str, Any] | None = None, half: bool = False
) -> dict[str, Any]:
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    data: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "meta": meta.to_dict(), "model": state}
    if train_state is not None:
        data["train_state"] = train_state
    return data


def save_checkpoint(data: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: a crash never leaves a half-written checkpoint under the final name."""
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return Path(path)


def import_seed(
    seed_path: str | Path,
    num_classes: int,
    out: str | Path,
    classes: tuple[str, ...] | None = None,
    palette: tuple[tuple[int, int, int], ...] | None = None,
    ignore_index: int = 255,
    input_size: tuple[int, int] = (512, 512),
    output_stride: int = 16,
) -> Path:
    """Wrap a bare seed state_dict with the seed's conventions (RGB, x/255, letterbox grey)."""
    seed_path = Path(seed_path)
    data = read_checkpoint(seed_path)
    if is_edgeseg_checkpoint(data):
        raise EdgesegError(f"{seed_path}: already an edgeseg checkpoint; use it directly")
    state = data.get("state_dict", data) if isinstance(data.get("state_dict"), dict) else data
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if not is_seed_state_dict(state):
        raise EdgesegError(
            f"{seed_path}: not a bubbliiiing/deeplabv3-plus-pytorch MobileNetV2 state_dict "
            f"(no {SEED_MARKER_KEYS[0]}); pass the .pth the seed's train.py saved"
        )
    meta = ModelMeta(
        num_classes=num_classes,
        classes=classes or default_class_names(num_classes),
        palette=palette or default_palette(num_classes),
        ignore_index=ignore_index,
        input_size=input_size,
        output_stride=output_stride,
        preprocess=SEED_PREPROCESS,
        provenance={"edgeseg_version": __version__, "imported_from": str(seed_path), "source": "seed"},
    )
    model = model_from_state_dict(state, meta, source=seed_path)
    return save_checkpoint(checkpoint_dict(model, meta), out)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def import_seed_with_data(seed_path: Path, num_classes: int, out: Path, data: str | None,
                          input_size: tuple[int, int], output_stride: int) -> Path:  # fmt: skip
    """``edgeseg import-seed``: ``import_seed`` with the class names, palette and ignore index of ``data``, if given."""
    options: dict = {}
    if data is not None:
        from edgeseg.data import resolve_dataset

        spec = resolve_dataset(data)
        if spec.num_classes != num_classes:
            raise EdgesegError(f"--data {data}: has {spec.num_classes} classes but --num-classes is {num_classes}; make them agree")
        options = {"classes": tuple(spec.classes), "palette": tuple(spec.palette), "ignore_index": spec.ignore_index}
    path = import_seed(seed_path, num_classes, out, input_size=tuple(input_size), output_stride=output_stride, **options)
    print(f"edgeseg checkpoint: {path}")
    return path
