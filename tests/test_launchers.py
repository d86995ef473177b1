"""Hydra launchers (joblib, submitit) and the Optuna search config; the searched augmentation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hydra.utils import instantiate

from emotionvision.data.augmentation import scaled_augmentation

BIN = Path(sys.executable).parent


def sweep(args: list[str], cwd: Path) -> Path:
    """Run `emotionvision-train -m ARGS` in cwd; the sweep directory it wrote."""
    env = {key: value for key, value in os.environ.items() if key != "EMOTIONVISION_ROOT"}
    command = [str(BIN / "emotionvision-train"), "-m", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (sweep_dir,) = (cwd / "logs/train/multiruns").iterdir()
    return sweep_dir


@pytest.mark.slow
def test_optuna_trials_run_as_submitit_local_jobs(tmp_path: Path, make_tree, quick_run_overrides) -> None:
    """hparams_search=optuna with hydra/launcher=submitit_local: a trial runs as a submitit job."""
    root = make_tree(tmp_path / "images")
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=1", "hydra/launcher=submitit_local"]
    sweep_dir = sweep(
        [
            *args,
            "data=folder",
            f"data.root={root}",
            *quick_run_overrides,
        ],
        tmp_path,
    )
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 1
    trial = json.loads((sweep_dir / "0/metrics.json").read_text())
    assert trial["epochs_trained"] == 1 and 0.0 <= trial["test/acc"] <= 1.0
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "augmentation.strength"}
    assert results["best_value"] == trial["best_val/macro_f1"]  # the value emotionvision-train returned


def test_optuna_and_joblib_configs_compose(compose_train) -> None:
    cfg = compose_train(["hparams_search=optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper.storage is None  # in memory: optuna's SQL storage breaks with SQLAlchemy 2
    assert sweeper.direction == "maximize" and cfg.monitor.metric == "val/macro_f1"
    minimising = compose_train(["hparams_search=optuna", "monitor.metric=val/loss", "monitor.mode=min"], True)
    assert minimising.hydra.sweeper.direction == "minimize"
    searched = {"optimizer.lr", "optimizer.weight_decay", "augmentation.strength"}
    assert set(sweeper.params) == searched  # folds join a sweep only when it starts, with data.folds
    assert cfg.augmentation._target_ == "emotionvision.data.augmentation.scaled_augmentation"
    cfg = compose_train(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


def test_strength_one_is_the_standard_augmentation(compose_train) -> None:
    standard = instantiate(compose_train(["augmentation=standard", "data.image_size=32"]).augmentation)
    scaled = instantiate(compose_train(["augmentation=scaled", "data.image_size=32"]).augmentation)
    image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    for seed in range(5):  # same random draws, same output: the same transforms and magnitudes
        outputs = []
        for augmentation in (standard, scaled):
            torch.manual_seed(seed)
            outputs.append(augmentation(image))
        assert torch.equal(*outputs)


def test_strength_zero_leaves_images_unchanged() -> None:
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert torch.equal(scaled_augmentation(0.0, 32)(image), image)


@pytest.mark.slow
def test_a_sweep_optimises_the_one_monitored_metric(tmp_path: Path, make_tree, quick_run_overrides) -> None:
    """monitor.metric=val/acc alone moves the checkpoint, early stopping, the reports and the value
    Optuna receives."""
    root = make_tree(tmp_path / "images")
    overrides = ["hparams_search=optuna", "hydra.sweeper.n_trials=1", "monitor.metric=val/acc"]
    overrides.append("keep_training_state=true")  # the early-stopping state is read from last.ckpt
    sweep_dir = sweep([*overrides, "data=folder", f"data.root={root}", *quick_run_overrides], tmp_path)
    trial = json.loads((sweep_dir / "0/metrics.json").read_text())
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_value"] is not None and results["best_value"] == trial["best_val/acc"]
    assert "best_val/macro_f1" not in trial and trial["overfitting"]["monitor"] == "val/acc"
    checkpoint = torch.load(sweep_dir / "0/checkpoints/last.ckpt", weights_only=True)
    monitoring = {key.split("{")[0] for key in checkpoint["callbacks"] if "'monitor': 'val/acc'" in key}
    assert monitoring == {"ModelCheckpoint", "EarlyStopping"}
