"""The report of a run: metrics.json and the report files, from the probabilities `test_step` returns."""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from emotionvision.reporting.curves import read_history
from emotionvision.reporting.run_report import merge_json, write_report, write_training_section


def gather_outputs(trainer: pl.Trainer, outputs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The batches' outputs of every process, concatenated and ordered by dataset index."""
    local = {key: torch.cat([batch[key] for batch in outputs]) for key in outputs[0]} if outputs else {}
    if trainer.world_size > 1:
        everyone: list[dict[str, torch.Tensor]] = [{} for _ in range(trainer.world_size)]
        torch.distributed.all_gather_object(everyone, local)
        parts = [part for part in everyone if part]
        local = {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
    order = local["indices"].argsort()
    return {key: values[order] for key, values in local.items()}


def batch_outputs(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A test step's outputs, detached on the CPU."""
    return {key: value.detach().cpu() for key, value in outputs.items()}


class ReportCallback(Callback):
    """Writes the report into `output_dir`.

    After fit: metrics.json (epochs trained, best `monitor` value, overfitting diagnostics),
    overfitting.txt and learning_curves.png from the run's history.csv. After test: the evaluation
    report of `split` (metrics, classification report, predictions.csv, figures) from the
    probabilities `test_step` returned, merged into metrics.json, and the final metrics declared to
    TensorBoard's HParams tab. `run_dir` is the training run (evaluation of a checkpoint writes
    elsewhere); it defaults to `output_dir`. `subsets` ({name: regular expression on the file name})
    adds the accuracy and macro-F1 of parts of the split (FER2013's PublicTest_ and PrivateTest_).
    """

    def __init__(
        self,
        output_dir: str | Path,
        monitor: str | None,
        mode: str = "max",
        run_dir: str | Path | None = None,
        split: str = "test",
        subsets: dict[str, str] | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.run_dir = Path(run_dir) if run_dir else self.output_dir
        self.monitor = monitor
        self.mode = mode
        self.split = split
        self.subsets = subsets
        self.outputs: list[dict[str, torch.Tensor]] = []

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        summary: dict = {"epochs_trained": trainer.current_epoch}
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.best_model_score is not None:
            summary[f"best_{checkpoint.monitor}"] = float(checkpoint.best_model_score)
        early_stopping = trainer.early_stopping_callback
        stopped_epoch = early_stopping.stopped_epoch if early_stopping is not None else None
        overfitting = self._training_section(stopped_epoch)
        if overfitting is not None:
            summary["overfitting"] = overfitting
        merge_json(self.output_dir / "metrics.json", summary)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.outputs = []

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs,
        batch,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.outputs.append(batch_outputs(outputs))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        gathered = gather_outputs(trainer, self.outputs)
        self.outputs = []
        if not trainer.is_global_zero:
            return
        loader = trainer.test_dataloaders
        dataset = (loader[0] if isinstance(loader, list) else loader).dataset
        indices = gathered["indices"].tolist()
        report = write_report(
            self.output_dir,
            self.split,
            [str(dataset.paths[i]) for i in indices],
            gathered["targets"],
            gathered["probabilities"].float(),
            pl_module.class_names,
            lambda i: dataset.images[indices[i]].pixels.permute(1, 2, 0).numpy(),
            self.subsets,
        )
        if self.run_dir != self.output_dir:  # evaluating a checkpoint: the training run's section
            overfitting = self._training_section(self._run_stopped_epoch())
            report |= {"overfitting": overfitting} if overfitting else {}
        merge_json(self.output_dir / "metrics.json", report)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:  # after the module's on_test_epoch_end logged the test metrics
            declare_final_metrics(trainer)

    def _training_section(self, stopped_epoch: int | None) -> dict | None:
        if self.monitor is None:
            return None
        title = f"learning curves of {self.run_dir.name}"
        history = read_history(self.run_dir / "history.csv")
        return write_training_section(self.output_dir, history, self.monitor, self.mode, stopped_epoch, title)

    def _run_stopped_epoch(self) -> int | None:
        """When early stopping ended the training run (0: it did not), from its metrics.json."""
        metrics_path = self.run_dir / "metrics.json"
        overfitting = (
            json.loads(metrics_path.read_text()).get("overfitting") if metrics_path.is_file() else None
        )
        if not overfitting or overfitting["early_stopping_fired"] is None:
            return None
        return overfitting["early_stopping_epoch"] or 0


def declare_final_metrics(trainer: pl.Trainer) -> None:
    """TensorBoard's HParams tab: the run's hyperparameters (as logged) beside its final metrics.
    Only the metric names are declared; the values are the scalars the run logged under them."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and logger.hparams:
            with SummaryWriter(logger.log_dir) as writer:  # the logger's own writer is closed after fit
                for summary in hparams(dict(logger.hparams), dict(trainer.callback_metrics)):
                    writer.file_writer.add_summary(summary)
