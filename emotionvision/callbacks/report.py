"""The report of a run: metrics.json and the report files, from the probabilities the module gathered."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from emotionvision.models.cam import check_method, write_cam_report
from emotionvision.reporting.curves import read_history
from emotionvision.reporting.run_report import write_report, write_training_section
from emotionvision.rundir import RunDir, best_key


class ReportCallback(Callback):
    """Writes the report into `output_dir`.

    After fit: metrics.json (epochs trained, best `monitor` value, overfitting diagnostics),
    overfitting.txt and learning_curves.png from the run's history.csv. After test: the evaluation
    report of `split` (metrics, classification report, predictions.csv, figures) from the module's
    gathered `test_outputs`, merged into metrics.json with the module's test-time augmentation `tta`;
    its scalar metrics are also logged, so loggers, `trainer.test` and sweepers see the same numbers
    (they are computed once, here). `run_dir` is the training run (evaluation of a checkpoint writes
    elsewhere); it defaults to `output_dir`. `subsets` ({name: regular expression on the file name})
    adds the accuracy and macro-F1 of parts of the split (FER2013's PublicTest_ and PrivateTest_).
    `explain` (gradcam | eigencam | None) adds the class-activation maps of the tested images
    (emotionvision/models/cam.py: cam_by_class.png, errors_cam.png, their faithfulness). The figures
    also go to the trainer's TensorBoard logger's folder, beside the run's scalars (without one: to
    `output_dir`/tensorboard).
    """

    def __init__(
        self,
        output_dir: str | Path,
        monitor: str | None,
        mode: str = "max",
        run_dir: str | Path | None = None,
        split: str = "test",
        subsets: dict[str, str] | None = None,
        explain: str | None = "gradcam",
    ) -> None:
        self.output = RunDir(output_dir)
        self.run = RunDir(run_dir) if run_dir else self.output
        self.monitor = monitor
        self.mode = mode
        self.split = split
        self.subsets = subsets
        if explain:
            check_method(explain)
        self.explain = explain

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        summary: dict = {"epochs_trained": trainer.current_epoch}
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.best_model_score is not None:
            summary[best_key(checkpoint.monitor)] = float(checkpoint.best_model_score)
        early_stopping = trainer.early_stopping_callback
        stopped_epoch = early_stopping.stopped_epoch if early_stopping is not None else None
        overfitting = self._training_section(stopped_epoch, tensorboard_dir(trainer))
        if overfitting is not None:
            summary["overfitting"] = overfitting
        self.output.merge_metrics(summary)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        outputs = pl_module.test_outputs.compute()  # every process takes part in the sync
        if not trainer.is_global_zero:
            return
        loader = trainer.test_dataloaders
        dataset = (loader[0] if isinstance(loader, list) else loader).dataset
        indices = outputs["indices"].tolist()
        paths = [str(dataset.paths[i]) for i in indices]
        probabilities = outputs["probabilities"].float()

        def image_of(i: int) -> np.ndarray:
            return dataset.images[indices[i]].pixels.permute(1, 2, 0).numpy()

        tensorboard = tensorboard_dir(trainer)

        report = write_report(
            self.output.path,
            self.split,
            paths,
            outputs["targets"],
            probabilities,
            pl_module.class_names,
            image_of,
            self.subsets,
            tensorboard,
        )
        if self.explain:
            report |= write_cam_report(
                self.output.path, self.split, pl_module, paths, outputs["targets"], probabilities,
                pl_module.class_names, image_of, self.explain, tensorboard,
            )  # fmt: skip
        scalars = {key: value for key, value in report.items() if isinstance(value, float)}
        pl_module.log_dict(scalars, rank_zero_only=True)
        report["tta"] = pl_module.tta  # the test-time augmentation the probabilities were averaged over
        if self.run != self.output:  # evaluating a checkpoint: the training run's section
            overfitting = self._training_section(self._run_stopped_epoch(), tensorboard)
            report |= {"overfitting": overfitting} if overfitting else {}
        self.output.merge_metrics(report)

    def _training_section(self, stopped_epoch: int | None, tensorboard: Path | None) -> dict | None:
        if self.monitor is None:
            return None
        title = f"learning curves of {self.run.path.name}"
        history = read_history(self.run.history)
        return write_training_section(
            self.output.path, history, self.monitor, self.mode, stopped_epoch, title, tensorboard
        )

    def _run_stopped_epoch(self) -> int | None:
        """When early stopping ended the training run (0: it did not), from its metrics.json."""
        overfitting = self.run.read_metrics().get("overfitting")
        if not overfitting or overfitting["early_stopping_fired"] is None:
            return None
        return overfitting["early_stopping_epoch"] or 0


def tensorboard_dir(trainer: pl.Trainer) -> Path | None:
    """The folder of the trainer's TensorBoard logger (where its scalars go), or None without one."""
    found = (logger.log_dir for logger in trainer.loggers if isinstance(logger, TensorBoardLogger))
    return next((Path(folder) for folder in found), None)
