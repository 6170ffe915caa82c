"""MobileNetV2-DeepLabv3+, laid out exactly like bubbliiiing/deeplabv3-plus-pytorch.

With ``head="seed"`` (the default) the module tree (and so every ``state_dict`` key) matches
the seed repository, so its checkpoints load without key mapping. Only behaviour the seed gets
wrong is changed: the image-pooling BatchNorm no longer fails on a training batch of one.

``head="separable"`` is the DeepLabv3+ paper's faster head: each 3x3 convolution of the ASPP's
atrous branches and of the decoder becomes a depthwise 3x3 (same dilation) + BN + ReLU, then a
pointwise 1x1 + BN + ReLU (``aspp.branch2.depthwise``, ``...depthwise_bn``, ``...pointwise``,
``...pointwise_bn``; ``cat_conv.sep1`` and ``cat_conv.sep2`` in the decoder). The backbone, the
1x1 branches, image pooling, the shortcut and the classifier are the seed's, under the same names.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from edgeseg.core.meta import BACKBONES, HEADS, OUTPUT_STRIDES

LOW_LEVEL_CHANNELS = 24
HIGH_LEVEL_CHANNELS = 320

# (expansion t, output channels c, repeats n, first stride s) of MobileNetV2.
_INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# Indices in ``features`` of the blocks that downsample at 1/8 and 1/16.
_DOWNSAMPLE_BLOCKS = (7, 14)


def _conv_bn_relu6(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def _mobilenetv2_features() -> list[nn.Module]:
    """MobileNetV2 ``features`` without the final 1x1 conv to 1280 channels."""
    features: list[nn.Module] = [_conv_bn_relu6(3, 32, 3, 2)]
    channels = 32
    for t, c, n, s in _INVERTED_RESIDUAL_SETTING:
        for i in range(n):
            features.append(InvertedResidual(channels, c, s if i == 0 else 1, t))
            channels = c
    return features


def _dilate(block: nn.Module, dilation: int) -> None:
    """Turn a block's stride-2 conv into stride 1 and dilate its 3x3 convs (the seed's rule)."""
    for module in block.modules():
        if not isinstance(module, nn.Conv2d):
            continue
        if module.stride == (2, 2):
            module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation = module.padding = (dilation // 2, dilation // 2)
        elif module.kernel_size == (3, 3):
            module.dilation = module.padding = (dilation, dilation)


class MobileNetV2Backbone(nn.Module):
    def __init__(self, output_stride: int = 16) -> None:
        super().__init__()
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
        self.features = nn.Sequential(*_mobilenetv2_features())
        at_8, at_16 = _DOWNSAMPLE_BLOCKS
        if output_stride == 8:
            for i in range(at_8, at_16):
                _dilate(self.features[i], 2)
            for i in range(at_16, len(self.features)):
                _dilate(self.features[i], 4)
        else:
            for i in range(at_16, len(self.features)):
                _dilate(self.features[i], 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low_level = self.features[:4](x)
        return low_level, self.features[4:](low_level)


def _branch(inp: int, oup: int, kernel: int, dilation: int) -> nn.Sequential:
    padding = 0 if kernel == 1 else dilation
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, 1, padding=padding, dilation=dilation, bias=True),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 (dilated) + BN + ReLU, then pointwise 1x1 + BN + ReLU: a 3x3 conv at a fraction of the MACs."""

    def __init__(self, inp: int, oup: int, dilation: int = 1) -> None:
        super().__init__(OrderedDict([
            ("depthwise", nn.Conv2d(inp, inp, 3, 1, padding=dilation, dilation=dilation, groups=inp, bias=False)),
            ("depthwise_bn", nn.BatchNorm2d(inp)),
            ("depthwise_relu", nn.ReLU(inplace=True)),
            ("pointwise", nn.Conv2d(inp, oup, 1, bias=False)),
            ("pointwise_bn", nn.BatchNorm2d(oup)),
            ("pointwise_relu", nn.ReLU(inplace=True)),
        ]))  # fmt: skip


def _atrous_branch(inp: int, oup: int, dilation: int, head: str) -> nn.Sequential:
    return SeparableConv(inp, oup, dilation) if head == "separable" else _branch(inp, oup, 3, dilation)


class ASPP(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, rate: int, head: str = "seed") -> None:
        super().__init__()
        self.branch1 = _branch(dim_in, dim_out, 1, rate)
        self.branch2 = _atrous_branch(dim_in, dim_out, 6 * rate, head)
        self.branch3 = _atrous_branch(dim_in, dim_out, 12 * rate, head)
        self.branch4 = _atrous_branch(dim_in, dim_out, 18 * rate, head)
        self.branch5_conv = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=True)
        self.branch5_bn = nn.BatchNorm2d(dim_out)
        self.branch5_relu = nn.ReLU(inplace=True)
        self.conv_cat = _branch(dim_out * 5, dim_out, 1, 1)

    def _image_pool_bn(self, x: torch.Tensor) -> torch.Tensor:
        # A pooled batch of one has a single value per channel, which training-mode
        # BatchNorm rejects (the seed crashes here); normalise it with the running stats.
        bn = self.branch5_bn
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return bn(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = x.shape[2], x.shape[3]
        pooled = torch.mean(torch.mean(x, 2, True), 3, True)
        pooled = self.branch5_relu(self._image_pool_bn(self.branch5_conv(pooled)))
        pooled = F.interpolate(pooled, (rows, cols), None, "bilinear", True)
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x), pooled]
        return self.conv_cat(torch.cat(branches, dim=1))


class DeepLabV3Plus(nn.Module):
    """MobileNetV2-DeepLabv3+ with the seed repository's module names."""

    def __init__(
        self, num_classes: int, output_stride: int = 16, backbone: str = "mobilenetv2", head: str = "seed"
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.num_classes = num_classes
        self.output_stride = output_stride
        self.head = head
        self.backbone = MobileNetV2Backbone(output_stride)
        self.aspp = ASPP(HIGH_LEVEL_CHANNELS, 256, rate=16 // output_stride, head=head)
        self.shortcut_conv = nn.Sequential(
            nn.Conv2d(LOW_LEVEL_CHANNELS, 48, 1), nn.BatchNorm2d(48), nn.ReLU(inplace=True)
        )
        self.cat_conv = _separable_decoder() if head == "separable" else _seed_decoder()
        self.cls_conv = nn.Conv2d(256, num_classes, 1, stride=1)
        _init_weights(self)
        # Small classifier weights start training near uniform class scores (loss ~ ln C).
        nn.init.normal_(self.cls_conv.weight, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2], x.shape[3]
        low_level, high_level = self.backbone(x)
        high_level = self.aspp(high_level)
        low_level = self.shortcut_conv(low_level)
        high_level = F.interpolate(high_level, size=low_level.shape[2:], mode="bilinear", align_corners=True)
        logits = self.cls_conv(self.cat_conv(torch.cat((high_level, low_level), dim=1)))
        return F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=True)


def _seed_decoder() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(48 + 256, 256, 3, stride=1, padding=1),
        nn.BatchNorm2d(256),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Conv2d(256, 256, 3, stride=1, padding=1),
        nn.BatchNorm2d(256),
        nn.ReLU(inplace=True),
        nn.Dropout(0.1),
    )


def _separable_decoder() -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("sep1", SeparableConv(48 + 256, 256)),
        ("dropout1", nn.Dropout(0.5)),
        ("sep2", SeparableConv(256, 256)),
        ("dropout2", nn.Dropout(0.1)),
    ]))  # fmt: skip


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def build_model(
    num_classes: int, output_stride: int = 16, backbone: str = "mobilenetv2", head: str = "seed"
) -> DeepLabV3Plus:
    return DeepLabV3Plus(num_classes, output_stride, backbone, head)


def load_backbone(model: DeepLabV3Plus, state_dict: dict[str, torch.Tensor]) -> int:
    """Load ImageNet MobileNetV2 weights in the seed's layout (``features.N...``); returns tensors loaded.

    Accepts keys with or without a ``backbone.`` prefix; the 1280-channel last conv and
    the classifier are not part of the segmentation backbone and are skipped.
    """
    own = model.backbone.state_dict()
    matched = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.").removeprefix("backbone.")
        if key in own and own[key].shape == value.shape:
            matched[key] = value
    own.update(matched)
    model.backbone.load_state_dict(own)
    return len(matched)
