"""Learning-rate schedules built from torch's own schedulers."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def warmup_cosine(optimizer: Optimizer, warmup_epochs: int, max_epochs: int) -> LRScheduler:
    """Linear warmup over `warmup_epochs`, then cosine decay to zero by `max_epochs`."""
    if warmup_epochs <= 0:
        return CosineAnnealingLR(optimizer, T_max=max(1, max_epochs))
    warmup = LinearLR(optimizer, start_factor=0.1, total_iters=warmup_epochs)
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, max_epochs - warmup_epochs))
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])
