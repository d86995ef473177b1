"""Weight averaging (`averaging=ema`) whose averaged weights reach every checkpoint, the best one too."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EMAWeightAveraging


class EMAAveraging(EMAWeightAveraging):
    """Lightning's `EMAWeightAveraging` (an exponential moving average of the weights and buffers,
    updated after every optimizer step), with the averaged weights in the model from the start of each
    validation until training resumes (the next training epoch or batch) or ends.

    Lightning's callback swaps the averaged weights in for validation only and puts them into the
    checkpoints through its `on_save_checkpoint` hook, which Lightning skips for weights-only
    checkpoints: the best checkpoint (`save_weights_only: true`), written after validation, held the
    trained weights instead. Here every checkpoint written after validation holds the averaged weights
    under `state_dict` (what test, eval, predict, export and init_from read); a full one (last.ckpt)
    also holds the trained weights (`current_model_state`) and the average's step count, from which
    a resumed run continues exactly. After fit the model holds the averaged weights.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holds_average = False  # the model holds the averaged weights, the average the trained ones

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._hold_average(pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Keep the averaged weights for the checkpoints written after validation."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._hold_trained(pl_module)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._hold_trained(pl_module)  # after a validation within the epoch (val_check_interval < 1)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """An epoch-wise update (update_starting_at_epoch) averages the trained weights; the checkpoints
        written after this hook still get the averaged ones."""
        held = self._holds_average
        self._hold_trained(pl_module)
        super().on_train_epoch_end(trainer, pl_module)
        if held:
            self._hold_average(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._hold_trained(pl_module)
        super().on_train_end(trainer, pl_module)  # copies the averaged weights into the model

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if not self._holds_average:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            return
        # the model's state_dict already holds the averaged weights; the trained ones are in the average
        assert self._average_model is not None
        state = self._average_model.state_dict()
        checkpoint["current_model_state"] = {
            name[7:]: value for name, value in state.items() if name.startswith("module.")
        }
        checkpoint["averaging_state"] = {
            name: value for name, value in state.items() if not name.startswith("module.")
        }

    def _hold_average(self, pl_module: pl.LightningModule) -> None:
        if self._average_model is not None and not self._holds_average:
            self._swap_models(pl_module)
            self._holds_average = True

    def _hold_trained(self, pl_module: pl.LightningModule) -> None:
        if self._average_model is not None and self._holds_average:
            self._swap_models(pl_module)
            self._holds_average = False
