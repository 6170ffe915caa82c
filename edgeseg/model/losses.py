"""Segmentation losses; every one skips the ignore label."""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "ce+dice", "focal")
OHEM_THRESHOLD = 0.7  # OHEM keeps pixels whose true class has a probability below this ...
OHEM_MIN_FRACTION = 1 / 16  # ... and at least this share of the valid pixels, the hardest ones


def make_loss(
    name: str,
    ignore_index: int,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    ohem: bool = False,
):
    """The training loss. ``label_smoothing`` and ``ohem`` shape the cross-entropy term (of "ce" and "ce+dice")."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")
    if name == "focal":
        if label_smoothing or ohem:
            raise ValueError("label smoothing and OHEM apply to the cross-entropy losses (ce, ce+dice), not focal")
        return lambda logits, target: focal_loss(logits, target, ignore_index, class_weights)

    def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if ohem:
            return ohem_cross_entropy(logits, target, ignore_index, class_weights, label_smoothing)
        return F.cross_entropy(
            logits, target, weight=class_weights, ignore_index=ignore_index, label_smoothing=label_smoothing
        )

    if name == "ce":
        return ce
    return lambda logits, target: ce(logits, target) + dice_loss(logits, target, ignore_index)


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
    class_weights: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    threshold: float = OHEM_THRESHOLD,
    min_fraction: float = OHEM_MIN_FRACTION,
) -> torch.Tensor:
    """Online hard example mining (Shrivastava et al. 2016; PSPNet/mmseg form): cross-entropy over the pixels whose
    true class has probability below ``threshold``, and at least the hardest ``min_fraction`` of the valid ones.
    Weighted like F.cross_entropy's mean: sum(w * loss) / sum(w) over the kept pixels."""
    valid = target != ignore_index
    if not valid.any():
        return logits.sum() * 0
    per_pixel = F.cross_entropy(
        logits, target, weight=class_weights, ignore_index=ignore_index, reduction="none",
        label_smoothing=label_smoothing,
    )  # fmt: skip
    safe_target = target.masked_fill(~valid, 0)
    with torch.no_grad():
        prob = logits.detach().float().softmax(dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
        valid_prob = prob[valid]
        min_kept = max(1, int(valid_prob.numel() * min_fraction))
        cutoff = max(threshold, float(valid_prob.kthvalue(min_kept).values))
        kept = valid & (prob <= cutoff) if cutoff > threshold else valid & (prob < threshold)
    pixel_weight = kept.float() if class_weights is None else class_weights[safe_target] * kept
    return per_pixel[kept].sum() / pixel_weight.sum().clamp_min(1e-12)


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
