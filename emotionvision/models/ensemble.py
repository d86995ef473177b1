"""Ensembles: several checkpoints evaluated and run as one classifier, the mean of their class
probabilities (`emotionvision-eval ckpt_path=[a.ckpt,b.ckpt]`, or `ckpt_path=SWEEP_DIR`: the best
checkpoint of every run of a sweep, e.g. of seeds)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import ListConfig
from torch import nn
from torchmetrics import MeanMetric

from emotionvision.errors import UsageError
from emotionvision.models.classifier import EmotionClassifier, load_classifier
from emotionvision.models.losses import CrossEntropy
from emotionvision.models.metrics import EvaluationOutputs
from emotionvision.models.tta import mean_log_probabilities
from emotionvision.rundir import RunDir, find_run_dirs

# what the members of an ensemble share: they see the same decoded images and name the same classes
AGREED = ("class_names", "input_size", "mean", "std", "face_crop")


class Ensemble(pl.LightningModule):
    """Checkpoints as one classifier: the mean of their class probabilities (each member averaged over
    the test-time augmentation first). It offers what evaluation and prediction use of an
    `EmotionClassifier` (`class_names`, `hparams` with the members' shared preprocessing, `tta`,
    `probabilities`, the test and predict steps), so they run it as one model; `hparams.members` are
    the checkpoints' paths."""

    tta: str = "none"

    def __init__(self, members: Sequence[EmotionClassifier], paths: Sequence[str | Path]) -> None:
        super().__init__()
        check_agreement(members, paths)
        shared = {name: members[0].hparams.get(name) for name in AGREED}
        self.save_hyperparameters(shared | {"members": [str(path) for path in paths]}, logger=False)
        self.members = nn.ModuleList(members)
        self.class_names: list[str] = list(shared["class_names"])
        self.loss = CrossEntropy()
        self.test_outputs = EvaluationOutputs()
        self.mean_losses = nn.ModuleDict({"test_loss": MeanMetric()})

    def log_probabilities(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """Log of the members' mean class probabilities (each averaged over the views of `tta`)."""
        return mean_log_probabilities(member.log_probabilities(images, tta) for member in self.members)

    # a single classifier's, on the ensemble's log-probabilities
    probabilities = EmotionClassifier.probabilities
    test_step = EmotionClassifier.test_step
    on_test_epoch_end = EmotionClassifier.on_test_epoch_end
    predict_step = EmotionClassifier.predict_step


def check_agreement(members: Sequence[EmotionClassifier], paths: Sequence[str | Path]) -> None:
    """UsageError (one line) naming the first checkpoint whose class names, input size, normalisation
    or face crop differ from the first checkpoint's, and the setting."""
    if not members:
        raise UsageError("ckpt_path: no checkpoint to evaluate.")
    for member, path in zip(members[1:], paths[1:], strict=True):
        for name in AGREED:
            ours, theirs = members[0].hparams.get(name), member.hparams.get(name)
            if _plain(ours) != _plain(theirs):
                raise UsageError(
                    f"ckpt_path: {path} has {name}={_plain(theirs)} but {paths[0]} has {_plain(ours)}: the "
                    f"checkpoints of an ensemble must agree on {', '.join(AGREED)}."
                )


def _plain(value: object) -> object:
    """Lists for tuples (hyperparameters saved as either), for comparing and printing."""
    if isinstance(value, tuple | list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def checkpoint_paths(ckpt_path: str | Path | Sequence[str | Path]) -> list[Path]:
    """The checkpoints `ckpt_path` names: a file, a folder (the best checkpoint of every run under
    it: a sweep's runs, or one run), or a list of files and folders."""
    entries = list(ckpt_path) if isinstance(ckpt_path, list | tuple | ListConfig) else [ckpt_path]
    paths = [path for entry in entries for path in _checkpoints_of(Path(str(entry)))]
    if not paths:
        raise UsageError("ckpt_path=[]: name one or more checkpoints (or a sweep's folder).")
    return paths


def _checkpoints_of(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]  # a missing file is named when it is read
    runs = find_run_dirs(path)
    if not runs:
        raise UsageError(
            f"ckpt_path={path} is a folder without runs (.hydra/overrides.yaml): name a checkpoint, a "
            "run's folder or a sweep's folder."
        )
    paths = []
    for run in runs:
        best = run.best_checkpoints
        if len(best) != 1:
            found = [path.name for path in best] or "none"
            raise UsageError(
                f"ckpt_path={path}: run {run.path} has {len(best)} best checkpoints ({found}) where one "
                "was expected: list the checkpoints to use instead, ckpt_path=[A.ckpt,B.ckpt]."
            )
        paths += best
    return paths


def load_checkpoints(paths: Sequence[Path]) -> EmotionClassifier | Ensemble:
    """The classifier of one checkpoint, or the ensemble of several, in eval mode on the CPU."""
    if len(paths) == 1:
        return load_classifier(paths[0])
    onnx = [path for path in paths if path.suffix == ".onnx"]
    if onnx:
        raise UsageError(f"ckpt_path: {onnx[0]} is an ONNX file; an ensemble takes .ckpt checkpoints only.")
    return Ensemble([load_classifier(path) for path in paths], paths).eval()


def member_runs(paths: Sequence[Path]) -> list[RunDir]:
    """The training runs of checkpoints (the folder above each checkpoint's folder)."""
    return [RunDir(path.resolve().parent.parent) for path in paths]
