"""Sanity-check verdicts (`sanity=shuffled_labels`, `sanity=overfit_batch`) written as sanity.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from emotionvision.atomic import write_text
from emotionvision.errors import UsageError
from emotionvision.reporting.scores import confusion_matrix
from emotionvision.reporting.verdicts import overfit_batch_verdict, shuffled_labels_verdict
from emotionvision.rundir import RunDir

log = logging.getLogger(__name__)


def write_verdict(output_dir: Path, verdict: dict) -> None:
    """sanity.json with PASS or FAIL, and the verdict in the log."""
    verdict["verdict"] = "PASS" if verdict["passed"] else "FAIL"
    path = RunDir(output_dir).sanity
    write_text(path, json.dumps(verdict, indent=2))
    log.info("Sanity check %s: %s; %s (%s)", verdict["check"], verdict["verdict"], verdict["summary"], path)


class ShuffledLabelsCheck(Callback):
    """After test: PASS when test accuracy stays at chance while the training accuracy logged as
    `train_metric` (on permuted labels) exceeds chance by `min_train_gain`."""

    def __init__(
        self, output_dir: str | Path, train_metric: str, min_train_gain: float, confidence: float
    ) -> None:
        self.output_dir = Path(output_dir)
        self.train_metric = train_metric
        self.min_train_gain = min_train_gain
        self.confidence = confidence
        self.train_acc: float | None = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The final training accuracy (trainer.test starts with fresh logged metrics)."""
        self.train_acc = float(trainer.callback_metrics[self.train_metric])

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        outputs = pl_module.test_outputs.compute()  # every process takes part in the sync
        if not trainer.is_global_zero:
            return
        confusion = confusion_matrix(outputs["probabilities"], outputs["targets"])
        if self.train_acc is None:
            raise UsageError("sanity=shuffled_labels judges a fitted model: run it with training, then test.")
        verdict = shuffled_labels_verdict(
            self.train_acc, confusion.tolist(), self.min_train_gain, self.confidence
        )
        write_verdict(self.output_dir, verdict)


class OverfitBatchCheck(Callback):
    """After fit: PASS when the training accuracy logged as `train_metric` on the one fixed batch
    reached `min_train_acc`."""

    def __init__(self, output_dir: str | Path, train_metric: str, min_train_acc: float) -> None:
        self.output_dir = Path(output_dir)
        self.train_metric = train_metric
        self.min_train_acc = min_train_acc
        self.batch_images = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.batch_images = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.batch_images += len(batch[1])

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            train_acc = float(trainer.callback_metrics[self.train_metric])
            epochs = trainer.current_epoch
            write_verdict(
                self.output_dir,
                overfit_batch_verdict(train_acc, self.batch_images, epochs, self.min_train_acc),
            )
