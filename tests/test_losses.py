"""Losses skip the ignore label; --init loads a backbone from a local file."""

import pytest
import torch

from edgeseg.model.losses import LOSSES, make_loss
from edgeseg.model.network import build_model
from edgeseg.train.trainer import _init_from


@pytest.mark.parametrize("name", LOSSES)
def test_loss_ignores_the_void_label(name):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8))
    loss_fn = make_loss(name, ignore_index=255)
    masked = target.clone()
    masked[:, :4] = 255
    changed = logits.detach().clone()
    changed[:, :, :4] += 100 * torch.randn_like(changed[:, :, :4])  # only ignored pixels change
    assert torch.isclose(loss_fn(logits, masked), loss_fn(changed, masked), atol=1e-5)
    loss = loss_fn(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0


def test_perfect_prediction_has_lower_loss():
    target = torch.randint(0, 3, (1, 6, 6))
    good = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 10
    for name in LOSSES:
        loss_fn = make_loss(name, ignore_index=255)
        assert loss_fn(good, target) < loss_fn(-good, target)


def test_init_loads_an_imagenet_backbone_from_a_local_file(tmp_path):
    donor = build_model(11)
    backbone_only = {f"features.{k.split('features.', 1)[1]}": v for k, v in donor.backbone.state_dict().items()}
    backbone_only["classifier.1.weight"] = torch.zeros(1000, 1280)  # the ImageNet head is skipped
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(backbone_only, path)
    model = build_model(11)
    _init_from(model, str(path))
    assert torch.equal(model.backbone.features[5].conv[0].weight, donor.backbone.features[5].conv[0].weight)
    assert not torch.equal(model.cls_conv.weight, donor.cls_conv.weight)
