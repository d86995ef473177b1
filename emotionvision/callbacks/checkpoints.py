"""A finished run's checkpoints without the training state: the disk a run keeps."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from emotionvision.models.checkpoint import drop_training_state

log = logging.getLogger(__name__)


class DropTrainingState(Callback):
    """When the run's last stage ends without error (test, or fit where `after_test` is False), rewrite
    the checkpoints its ModelCheckpoint callbacks kept without the optimizer, scheduler and callback
    states (`drop_training_state`): last.ckpt of a ResNet-18 shrinks from about 134 MB to 45 MB, and
    keeps what eval, predict, export and model.init_from read. `keep`: leave them whole (to continue the
    finished run with ckpt_path=.../last.ckpt and more epochs).

    An interrupted run is never touched (Lightning calls `teardown` only after a stage completes), so
    `resume=` continues it exactly; `resume=` of a finished run skips it."""

    def __init__(self, after_test: bool, keep: bool = False) -> None:
        self.after_test = after_test
        self.keep = keep

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.keep or stage != ("test" if self.after_test else "fit") or not trainer.is_global_zero:
            return
        for path in sorted(kept_checkpoints(trainer)):
            if drop_training_state(path):
                log.info("%s: training state dropped, the run finished (keep_training_state=false)", path)


def kept_checkpoints(trainer: pl.Trainer) -> set[Path]:
    """The local files the trainer's ModelCheckpoint callbacks kept (best, top-k and last)."""
    paths = set()
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            paths |= {callback.best_model_path, callback.last_model_path, *callback.best_k_models}
    return {Path(path) for path in paths if path and "://" not in str(path) and Path(path).is_file()}
