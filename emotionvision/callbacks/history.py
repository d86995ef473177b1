"""history.csv: the per-epoch learning curves of a run, with any logger."""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from emotionvision.reporting.curves import read_history, write_history


class HistoryCallback(Callback):
    """Writes `path` (history.csv) after every epoch: `epoch`, `time` (seconds since fit start)
    and every epoch-level value logged (train/ and val/ loss and metrics, the learning rate).

    A row is written when the next epoch starts and when training ends: the module logs its
    training metrics in `on_train_epoch_end`, after the callbacks' own `on_train_epoch_end`.
    A resumed fit keeps the rows of the epochs before the checkpoint.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float]] = []
        self.started = 0.0
        self.first_epoch = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """After a checkpoint was restored: keep the rows of the epochs before it."""
        self.first_epoch = trainer.current_epoch
        self.rows = [row for row in read_history(self.path) if row["epoch"] < self.first_epoch]
        self.started = time.monotonic() - (self.rows[-1]["time"] if self.rows else 0.0)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > self.first_epoch:
            self._record(trainer, trainer.current_epoch - 1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > self.first_epoch:
            self._record(trainer, trainer.current_epoch - 1)

    def _record(self, trainer: pl.Trainer, epoch: int) -> None:
        if any(row["epoch"] == epoch for row in self.rows):
            return
        row = {"epoch": epoch, "time": round(time.monotonic() - self.started, 3)}
        row |= {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1}
        self.rows.append(row)
        if trainer.is_global_zero:
            write_history(self.path, self.rows)
