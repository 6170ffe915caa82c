"""The model against the seed repository: layout, shapes, logits, and the batch-of-one fix."""

import numpy as np
import pytest
import torch

from edgeseg.model.network import build_model
from seed_weights import KEYS_FILE, read_seed_layout, synthetic_seed_state_dict

FIXTURE = np.load(__file__.replace("test_model.py", "fixtures/seed_logits.npz"))


def _seed_state(num_classes: int = 21) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.asarray(v)) for k, v in synthetic_seed_state_dict(num_classes).items()}


@pytest.mark.skipif(not KEYS_FILE.exists(), reason=f"{KEYS_FILE} not found (../shared missing)")
@pytest.mark.parametrize("output_stride", [8, 16])
def test_state_dict_keys_and_shapes_equal_the_seed_list(output_stride):
    state = build_model(21, output_stride).state_dict()
    expected = [(key, dtype, shape) for key, dtype, shape in read_seed_layout()]
    ours = [(key, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for key, t in state.items()]
    assert ours == expected


def test_classifier_follows_num_classes():
    state = build_model(11).state_dict()
    assert state["cls_conv.weight"].shape == (11, 256, 1, 1)
    assert state["cls_conv.bias"].shape == (11,)


@pytest.mark.parametrize("output_stride,high_level_hw", [(16, (4, 6)), (8, (8, 12))])
def test_output_stride_shapes(output_stride, high_level_hw):
    model = build_model(11, output_stride).eval()
    x = torch.zeros(2, 3, 64, 96)
    with torch.no_grad():
        low, high = model.backbone(x)
        assert low.shape == (2, 24, 16, 24)
        assert high.shape == (2, 320, *high_level_hw)
        assert model(x).shape == (2, 11, 64, 96)


@pytest.mark.skipif(not KEYS_FILE.exists(), reason=f"{KEYS_FILE} not found (../shared missing)")
@pytest.mark.parametrize("output_stride", [16, 8])
def test_seed_checkpoint_loads_as_is_and_gives_the_seed_logits(output_stride):
    model = build_model(21, output_stride)
    model.load_state_dict(_seed_state(), strict=True)  # no key mapping
    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(FIXTURE["image"])).numpy()
    expected = FIXTURE[f"logits_os{output_stride}"]
    assert np.abs(logits - expected).max() <= 1e-3


def test_dilation_matches_output_stride():
    features = build_model(11, 8).backbone.features
    depthwise = [m for m in features.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert all(m.stride == (1, 1) for m in depthwise[-10:])
    assert depthwise[-1].dilation == (4, 4)


def test_training_step_on_a_batch_of_one():
    model = build_model(11).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.rand(1, 3, 64, 64), torch.randint(0, 11, (1, 64, 64))
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert model.aspp.branch5_bn.weight.grad is not None
