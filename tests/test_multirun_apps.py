"""Multiruns of the commands besides emotionvision-train: `-m` sweeps their own keys, and the
cross-validation sweep of data.folds (conf/hydra/train.yaml) is emotionvision-train's alone."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from emotionvision.models import EmotionClassifier
from emotionvision.rundir import RunDir

BIN = Path(sys.executable).parent
CLASSES = ["anger", "happy", "sad"]
SIZE = 32


def multirun(command: str, args: list[str], cwd: Path) -> Path:
    """Run `<command> -m ARGS` in cwd; the sweep directory it wrote."""
    env = {key: value for key, value in os.environ.items() if key != "EMOTIONVISION_ROOT"}
    result = subprocess.run(
        [str(BIN / command), "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (sweep_dir,) = cwd.glob("logs/*/multiruns/*")
    return sweep_dir


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two checkpoints as Lightning writes them (state_dict + hyper_parameters) of untrained 32 px
    ResNet-18s with different weights."""
    folder = tmp_path_factory.mktemp("ckpt")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = EmotionClassifier("resnet18", CLASSES, input_size=SIZE)
        paths.append(folder / f"model{seed}.ckpt")
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, paths[-1])
    return paths


def job_overrides(job_dir: Path) -> list[str]:
    return OmegaConf.to_container(OmegaConf.load(RunDir(job_dir).overrides))


@pytest.mark.slow
def test_eval_sweeps_checkpoints(tmp_path: Path, checkpoints: list[Path], make_tree) -> None:
    """`emotionvision-eval -m ckpt_path=A,B`: a job (0/, 1/) and a report per checkpoint."""
    tree = make_tree(tmp_path / "faces", {name: 2 for name in CLASSES}, size=SIZE)
    first, second = checkpoints
    args = [f"ckpt_path={first},{second}", f"data.root={tree}", "trainer.accelerator=cpu"]
    sweep_dir = multirun("emotionvision-eval", args, tmp_path)
    reports = []
    for job, checkpoint in zip(("0", "1"), checkpoints, strict=True):
        assert f"ckpt_path={checkpoint}" in job_overrides(sweep_dir / job)
        metrics = RunDir(sweep_dir / job).read_metrics()
        assert metrics["num_images"] == 6 and 0.0 <= metrics["all/acc"] <= 1.0
        reports.append(RunDir(sweep_dir / job).predictions.read_text())
    assert reports[0] != reports[1]  # each job evaluated its own checkpoint


@pytest.mark.slow
def test_predict_sweeps_top_k(tmp_path: Path, checkpoints: list[Path], make_tree) -> None:
    """`emotionvision-predict -m ... top_k=1,2`: a job per value, each with its predictions.csv."""
    tree = make_tree(tmp_path / "faces", {name: 2 for name in CLASSES}, size=SIZE)
    args = [f"ckpt_path={checkpoints[0]}", f"inputs=[{tree}]", "top_k=1,2", "device=cpu"]
    sweep_dir = multirun("emotionvision-predict", args, tmp_path)
    for job, top_k in (("0", 1), ("1", 2)):
        assert f"top_k={top_k}" in job_overrides(sweep_dir / job)
        with RunDir(sweep_dir / job).predictions.open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 6 and all(not row["error"] for row in rows)
        assert [name for name in rows[0] if name.startswith("label_")] == [
            f"label_{k}" for k in range(1, top_k + 1)
        ]


@pytest.mark.parametrize("app", ["eval", "predict", "export", "crosseval"])
def test_only_train_sweeps_folds(app: str) -> None:
    """The other commands' Hydra settings carry no fold mode, fold sweep, fold directory or summary."""
    with initialize_config_module(config_module="emotionvision.conf", version_base="1.3"):
        config = compose(config_name=app, return_hydra_config=True)
    hydra_config = OmegaConf.to_container(config.hydra, resolve=False)
    assert hydra_config["callbacks"] == {} and hydra_config["sweeper"]["params"] is None
    assert hydra_config["mode"] is None and hydra_config["sweep"]["subdir"] == "${hydra.job.num}"
    assert "fold" not in json.dumps(hydra_config)
