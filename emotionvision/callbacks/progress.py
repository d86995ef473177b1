"""Training progress where the output is not a terminal: a log line per epoch instead of a bar."""

from __future__ import annotations

import logging
import time

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from tqdm import tqdm

from emotionvision.progress import interactive
from emotionvision.rundir import metric_key

log = logging.getLogger(__name__)


class EpochLog(Callback):
    """On a terminal (`emotionvision.progress.interactive`), Lightning's progress bar shows training;
    elsewhere (nohup, CI, a log file) this callback turns the bar off and logs one line per epoch:
    `Epoch 3/20: train/loss 0.812, val/loss 0.903, val/macro_f1 0.412; 41.2 s; ETA 11:37`, the ETA
    being the mean time of this process's epochs times the epochs left to `max_epochs`. Where early
    stopping would end the run sooner, the line adds when: `ETA 11:37, or 03:27 if val/macro_f1 does
    not improve (early stopping after epoch 8)`. On a terminal the line goes to the log at DEBUG.

    The line is written when the next epoch starts or training ends: the module logs its training
    metrics in `on_train_epoch_end`, after the callbacks' own hook (as `HistoryCallback`)."""

    def __init__(self, monitor: str, terminal: bool | None = None) -> None:
        self.monitor = monitor
        self.terminal = interactive() if terminal is None else terminal
        self.started: float | None = None
        self.durations: list[float] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.terminal and trainer.progress_bar_callback is not None:
            trainer.progress_bar_callback.disable()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started, self.durations = None, []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_epoch(trainer)
        self.started = time.monotonic()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_epoch(trainer)

    def _log_epoch(self, trainer: pl.Trainer) -> None:
        """The line of the epoch that ended (none before the first epoch of this process)."""
        if self.started is None:
            return
        self.durations.append(time.monotonic() - self.started)
        self.started = None
        if trainer.is_global_zero:
            log.log(logging.DEBUG if self.terminal else logging.INFO, "%s", self.line(trainer))

    def line(self, trainer: pl.Trainer) -> str:
        """`Epoch i/N: <losses and the monitored metric>; <seconds> s; ETA <time>` of the last epoch."""
        epoch, total = trainer.current_epoch, trainer.max_epochs
        names = dict.fromkeys((metric_key("train", "loss"), metric_key("val", "loss"), self.monitor))
        metrics = trainer.callback_metrics
        values = ", ".join(f"{name} {float(metrics[name]):.4f}" for name in names if name in metrics)
        parts = [values] if values else []
        parts.append(f"{self.durations[-1]:.1f} s")
        if total is not None and total > 0 and not trainer.should_stop:
            parts.append(self.eta(trainer, total))
        return f"Epoch {epoch}/{total}: {'; '.join(parts)}"

    def eta(self, trainer: pl.Trainer, total: int) -> str:
        """`ETA <time>` to `total` epochs, and to the epoch early stopping would end at, where sooner."""
        epoch_seconds = sum(self.durations) / len(self.durations)
        eta = f"ETA {tqdm.format_interval((total - trainer.current_epoch) * epoch_seconds)}"
        stopper = trainer.early_stopping_callback
        if stopper is None:
            return eta
        last = trainer.current_epoch + stopper.patience - stopper.wait_count
        if last >= total:
            return eta
        soonest = tqdm.format_interval((last - trainer.current_epoch) * epoch_seconds)
        stop = f"early stopping after epoch {last}"
        return f"{eta}, or {soonest} if {stopper.monitor} does not improve ({stop})"
