"""Checkpoints: metadata round trip, safe loading, seed import and the errors users meet."""

import numpy as np
import pytest
import torch

from edgeseg.model.checkpoint import checkpoint_dict, import_seed, load_model, read_checkpoint, save_checkpoint
from edgeseg.core.errors import EdgesegError
from edgeseg.core.meta import ModelMeta, Preprocess
from edgeseg.model.network import build_model
from seed_weights import KEYS_FILE, synthetic_seed_state_dict

META = ModelMeta(
    num_classes=3,
    classes=("a", "b", "c"),
    palette=((1, 2, 3), (4, 5, 6), (7, 8, 9)),
    ignore_index=255,
    input_size=(64, 96),
    preprocess=Preprocess(channel_order="BGR", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), resize="resize"),
    provenance={"epochs": 3, "command": "edgeseg train --data x"},
)


def test_checkpoint_round_trip_keeps_weights_and_metadata(tmp_path):
    model = build_model(3).eval()
    path = save_checkpoint(checkpoint_dict(model, META), tmp_path / "m.pt")
    loaded, meta = load_model(path)
    assert meta == META
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_half_storage_loads_as_float32(tmp_path):
    path = save_checkpoint(checkpoint_dict(build_model(3), META, half=True), tmp_path / "h.pt")
    assert read_checkpoint(path)["model"]["cls_conv.weight"].dtype == torch.float16
    model, _ = load_model(path)
    assert model.cls_conv.weight.dtype == torch.float32


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "edgeseg", "meta": object.__new__(Preprocess), "model": {}}, path)
    with pytest.raises(EdgesegError, match="evil.pt: cannot be read as a PyTorch checkpoint"):
        load_model(path)


@pytest.mark.parametrize(
    "payload,message",
    [
        (b"not a zip", "cannot be read as a PyTorch checkpoint"),
        (None, "no such checkpoint file"),
    ],
)
def test_unreadable_checkpoints_give_one_line(tmp_path, payload, message):
    path = tmp_path / "bad.pt"
    if payload is not None:
        path.write_bytes(payload)
    with pytest.raises(EdgesegError, match=message) as err:
        load_model(path)
    assert "\n" not in str(err.value) and "bad.pt" in str(err.value)


def test_foreign_dict_is_not_an_edgeseg_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(EdgesegError, match="not an edgeseg checkpoint"):
        load_model(path)


@pytest.mark.skipif(not KEYS_FILE.exists(), reason="../shared/reference missing")
def test_import_seed_wraps_with_seed_conventions(tmp_path):
    seed = tmp_path / "seed.pth"
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in synthetic_seed_state_dict(21).items()}, seed)
    with pytest.raises(EdgesegError, match="import-seed"):
        load_model(seed)  # a bare seed state_dict points at the import command
    out = import_seed(seed, 21, tmp_path / "wrapped.pt")
    model, meta = load_model(out)
    assert meta.preprocess == Preprocess(channel_order="RGB", scale=1 / 255, mean=(0, 0, 0), std=(1, 1, 1), resize="letterbox", pad_value=128)
    assert meta.num_classes == 21 and len(meta.palette) == 21
    assert torch.equal(model.cls_conv.bias, torch.from_numpy(synthetic_seed_state_dict(21)["cls_conv.bias"]))


@pytest.mark.skipif(not KEYS_FILE.exists(), reason="../shared/reference missing")
def test_import_seed_with_wrong_num_classes_names_the_fix(tmp_path):
    seed = tmp_path / "seed.pth"
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in synthetic_seed_state_dict(21).items()}, seed)
    with pytest.raises(EdgesegError, match="21 classes but 11 were asked for; use --num-classes 21"):
        import_seed(seed, 11, tmp_path / "wrapped.pt")
    assert not (tmp_path / "wrapped.pt").exists()
