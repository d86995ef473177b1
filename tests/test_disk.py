"""The disk a run keeps (issue 17, item 3): a finished run's checkpoints lose the training state and
still serve eval, predict and model.init_from; an interrupted run's last.ckpt stays whole for resume=.
(keep_training_state=true keeps it after the run: tests/test_train_e2e.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emotionvision.cli.train import train
from emotionvision.errors import UsageError
from emotionvision.inference import Predictor
from emotionvision.models import EmotionClassifier
from emotionvision.models.checkpoint import RESUME_ONLY, check_training_checkpoint, read_checkpoint
from emotionvision.models.classifier import load_classifier

CLASSES = ["anger", "happy", "sad"]


def fit(compose_train, quick_run_overrides: list[str], tmp_path: Path, root: Path, *overrides: str) -> Path:
    """Train in-process on `root` (32 px, one batch per stage); the run directory."""
    run = tmp_path / "run"
    cfg = compose_train(
        [
            *quick_run_overrides,
            "data=folder",
            f"data.root={root}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "trainer.accelerator=cpu",
            "++trainer.enable_progress_bar=false",
            f"paths.output_dir={run}",
            *overrides,
        ]
    )
    train(cfg)
    return run


def test_a_finished_run_keeps_what_eval_predict_and_init_from_read(
    compose_train, quick_run_overrides: list[str], tmp_path: Path, make_tree
) -> None:
    root = make_tree(tmp_path / "images", dict.fromkeys(CLASSES, 6))
    last = fit(compose_train, quick_run_overrides, tmp_path, root) / "checkpoints" / "last.ckpt"
    checkpoint = read_checkpoint(last)
    assert not set(RESUME_ONLY) & set(checkpoint), sorted(checkpoint)
    assert checkpoint["hyper_parameters"]["class_names"] == CLASSES

    assert load_classifier(last).class_names == CLASSES  # what eval and export read
    predictions = Predictor(last, device="cpu").predict([root])
    assert len(predictions) == 18 and not any(prediction.error for prediction in predictions)
    started = EmotionClassifier("resnet18", CLASSES, input_size=32, init_from=str(last))
    torch.testing.assert_close(
        started.state_dict()["model.conv1.weight"], checkpoint["state_dict"]["model.conv1.weight"]
    )
    # continuing the finished run needs its training state: one line says how to keep it
    with pytest.raises(
        UsageError, match=r"last\.ckpt of a finished run, kept whole only with keep_training_state"
    ):
        check_training_checkpoint(last, started)


def test_an_interrupted_run_keeps_its_training_state(
    compose_train, quick_run_overrides: list[str], tmp_path: Path, make_tree, monkeypatch
) -> None:
    def stop_in_second_epoch(self: EmotionClassifier) -> None:
        if self.current_epoch == 1:
            raise RuntimeError("stopped")

    monkeypatch.setattr(EmotionClassifier, "on_train_epoch_start", stop_in_second_epoch)
    root = make_tree(tmp_path / "images", dict.fromkeys(CLASSES, 6))
    with pytest.raises(RuntimeError, match="stopped"):
        fit(compose_train, quick_run_overrides, tmp_path, root, "trainer.max_epochs=2")
    checkpoint = read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert {"optimizer_states", "lr_schedulers", "callbacks"} <= set(checkpoint)  # resume= continues exactly
