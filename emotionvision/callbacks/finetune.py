"""Fine-tuning strategies (the `finetune` config group) on Lightning's finetuning callbacks."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BaseFinetuning
from torch.optim import Optimizer


class FrozenBackbone(BaseFinetuning):
    """Linear probe: the backbone stays frozen for the whole run (BatchNorm statistics included);
    only the class heads train."""

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=False)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        """Nothing is ever unfrozen."""
