"""Losses of the `loss` config group (`_target_`): cross-entropy and focal loss, each optionally
weighted by inverse class frequency of the training split and with label smoothing.

Targets are class indices, or rows of class probabilities (soft targets: mixup and cutmix,
`mixing=`). A soft row counts as the mixture of the index targets it weighs: sample n's loss is
sum_k y_nk w_k L(n, k) / sum_k y_nk w_k, L(n, k) the loss had its label been k and w the class
weights (1 without them), and the batch loss is the weighted mean sum_n sum_k y_nk w_k L(n, k) /
sum_n sum_k y_nk w_k. A one-hot row thus gives exactly the index loss, class weights and label
smoothing included (PyTorch's own soft-target cross-entropy divides by the batch size instead of
the weight sum)."""

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
        if targets.is_floating_point():  # soft targets: rows of class probabilities
            rows = self._weighted_rows(targets)
            smoothed = (1 - self.label_smoothing) * targets + self.label_smoothing / logits.shape[1]
            weights = self._class_weights_like(logits)
            per_class = -(smoothed * weights) * logits.log_softmax(dim=1)
            return per_class.sum() / rows.sum()
        return F.cross_entropy(
            logits, targets, weight=self.class_weights, label_smoothing=self.label_smoothing
        )

    def _class_weights_like(self, logits: torch.Tensor) -> torch.Tensor:
        """The class weights (ones without them), as a row broadcasting over `logits`."""
        if self.class_weights is None:
            return torch.ones(1, logits.shape[1], dtype=logits.dtype, device=logits.device)
        return self.class_weights.to(logits.dtype)[None, :]

    def _weighted_rows(self, targets: torch.Tensor) -> torch.Tensor:
        """y_nk w_k: each target row times the class weights (its sum is the sample's weight)."""
        return targets * self._class_weights_like(targets)


class FocalLoss(CrossEntropy):
    """Focal loss (Lin et al., 2017): each sample's cross-entropy scaled by (1 - p_t)^gamma, p_t the
    predicted probability of its true class; a weighted mean over samples like weighted
    cross-entropy's. gamma = 0 is cross-entropy. A soft target row mixes these per-class losses
    (see the module docstring)."""

    def __init__(
        self, gamma: float = 2.0, class_weighted: bool = False, label_smoothing: float = 0.0
    ) -> None:
        super().__init__(class_weighted, label_smoothing)
        if gamma < 0:
            raise UsageError(f"loss.gamma must be >= 0, got {gamma}.")
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if not targets.is_floating_point():
            targets = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        log_probabilities = logits.log_softmax(dim=1)
        # L(n, k): the smoothed cross-entropy had sample n's label been k, scaled by (1 - p_nk)^gamma
        nll = -log_probabilities
        smoothed = (1 - self.label_smoothing) * nll + self.label_smoothing / logits.shape[1] * nll.sum(
            dim=1, keepdim=True
        )
        focal = (1 - log_probabilities.exp()).pow(self.gamma) * smoothed
        rows = self._weighted_rows(targets)
        return (rows * focal).sum() / rows.sum()
