"""Segmentation losses; every one skips the ignore label."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "ce+dice", "focal")


def make_loss(name: str, ignore_index: int, class_weights: torch.Tensor | None = None):
    if name == "ce":
        return lambda logits, target: F.cross_entropy(logits, target, weight=class_weights, ignore_index=ignore_index)
    if name == "ce+dice":
        return lambda logits, target: F.cross_entropy(
            logits, target, weight=class_weights, ignore_index=ignore_index
        ) + dice_loss(logits, target, ignore_index)
    if name == "focal":
        return lambda logits, target: focal_loss(logits, target, ignore_index, class_weights)
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def dice_loss(logits: torch.Tensor, target: torch.Tensor, ignore_index: int, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice over the classes, averaged; ignored pixels take no part."""
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    probs = logits.float().softmax(dim=1) * valid
    one_hot = F.one_hot(target.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2) * valid
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    total = probs.sum(dims) + one_hot.sum(dims)
    return 1.0 - ((2 * intersection + eps) / (total + eps)).mean()


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    class_weights: torch.Tensor | None = None,
    gamma: float = 2.0,
) -> torch.Tensor:
    ce = F.cross_entropy(logits, target, weight=class_weights, ignore_index=ignore_index, reduction="none")
    pt = torch.exp(-F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none"))
    valid = target != ignore_index
    return ((1 - pt) ** gamma * ce)[valid].mean() if valid.any() else logits.sum() * 0
