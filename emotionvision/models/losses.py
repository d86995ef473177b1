"""Losses of the `loss` config group (`_target_`): cross-entropy and focal loss, each optionally
weighted by inverse class frequency of the training split and with label smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emotionvision.errors import UsageError


class CrossEntropy(nn.Module):
    """Cross-entropy; with `class_weighted` the module sets `class_weights` from the training split
    before fitting (they are not saved: a checkpoint holds no loss state)."""

    def __init__(self, class_weighted: bool = False, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.class_weighted = class_weighted
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", None, persistent=False)

    def set_class_weights(self, weights: torch.Tensor) -> None:
        """Use `weights` (one per class) if this loss is class-weighted."""
        if self.class_weighted:
            self.class_weights = weights.clone()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits, targets, weight=self.class_weights, label_smoothing=self.label_smoothing
        )


class FocalLoss(CrossEntropy):
    """Focal loss (Lin et al., 2017): each sample's cross-entropy scaled by (1 - p_t)^gamma, p_t the
    predicted probability of its true class; a weighted mean over samples like weighted
    cross-entropy's. gamma = 0 is cross-entropy."""

    def __init__(
        self, gamma: float = 2.0, class_weighted: bool = False, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(class_weighted, label_smoothing)
        if gamma < 0:
            raise UsageError(f"loss.gamma must be >= 0, got {gamma}.")
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        per_sample = F.cross_entropy(logits, targets, reduction="none", label_smoothing=self.label_smoothing)
        true_probability = logits.softmax(dim=1).gather(1, targets[:, None]).squeeze(1)
        weights = (
            self.class_weights[targets] if self.class_weights is not None else torch.ones_like(per_sample)
        )
        focal = (1 - true_probability).pow(self.gamma) * per_sample
        return (weights * focal).sum() / weights.sum()
