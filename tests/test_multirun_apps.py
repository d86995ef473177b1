"""Multiruns: the jobs of a sweep hold the overrides typed (and their value of the swept keys), with
the libraries' chatter in their log files, not on the console; the commands besides
emotionvision-train sweep their own keys, and the cross-validation sweep of data.folds
(conf/hydra/train.yaml) is emotionvision-train's alone."""

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
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from emotionvision.cli.crossval import sweep_version
from emotionvision.models import EmotionClassifier
from emotionvision.rundir import RunDir

BIN = Path(sys.executable).parent
CLASSES = ["anger", "happy", "sad"]
SIZE = 32
# what Lightning (INFO lines) and the libraries (Python warnings) print unasked
CHATTER = ["Seed set to", "GPU available", "TPU available", "💡 Tip", "litlogger", "litmodels", "_pytree"]
CHATTER += ["No positive samples", "Warning", "Testing ━"]  # a progress bar off a terminal
# in the job's log file instead, at DEBUG
GPU_LINE = "[lightning.pytorch.utilities.rank_zero][DEBUG] - GPU available:"


def multirun(command: str, args: list[str], cwd: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """Run `<command> -m ARGS` in cwd; the sweep directory it wrote and the process's result."""
    env = {key: value for key, value in os.environ.items() if key != "EMOTIONVISION_ROOT"}
    result = subprocess.run(
        [str(BIN / command), "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (sweep_dir,) = cwd.glob("logs/*/multiruns/*")
    return sweep_dir, result


def assert_quiet(result: subprocess.CompletedProcess) -> None:
    """Nothing on stderr, no library chatter on stdout (emotionvision/cli/logs.py)."""
    assert result.stderr == "", result.stderr[-3000:]
    assert not [text for text in CHATTER if text in result.stdout], result.stdout[-3000:]


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
    sweep_dir, result = multirun("emotionvision-eval", args, tmp_path)
    assert_quiet(result)
    assert GPU_LINE in (sweep_dir / "0" / "evaluate.log").read_text()  # the job is named after evaluate.py
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
    sweep_dir, _ = multirun("emotionvision-predict", args, tmp_path)
    for job, top_k in (("0", 1), ("1", 2)):
        assert f"top_k={top_k}" in job_overrides(sweep_dir / job)
        with RunDir(sweep_dir / job).predictions.open() as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == 6 and all(not row["error"] for row in rows)
        assert [name for name in rows[0] if name.startswith("label_")] == [
            f"label_{k}" for k in range(1, top_k + 1)
        ]


@pytest.fixture(scope="module")
def train_sweep(
    tmp_path_factory: pytest.TempPathFactory, make_tree, quick_run_overrides: list[str]
) -> tuple[Path, subprocess.CompletedProcess, list[str]]:
    """`emotionvision-train -m seed=0,1 ...` (two seconds-long jobs, with the default TensorBoard
    logger): the sweep directory, the process's result and the overrides typed after seed=0,1."""
    work = tmp_path_factory.mktemp("train_sweep")
    tree = make_tree(work / "faces", dict.fromkeys(CLASSES, 6), size=SIZE)
    quick = [line for line in quick_run_overrides if not line.startswith("logger=")]
    typed = ["data=folder", f"data.root={tree}", *quick, "trainer.accelerator=cpu"]
    sweep_dir, result = multirun("emotionvision-train", ["seed=0,1", *typed], work)
    return sweep_dir, result, typed


@pytest.mark.slow
def test_train_sweep_jobs_hold_the_typed_overrides_and_a_quiet_console(train_sweep) -> None:
    """`emotionvision-train -m seed=0,1 ...`: each job's overrides.yaml holds the typed keys, in order,
    with its seed and nothing else (no data.fold); Lightning's INFO lines and Python warnings are kept
    at DEBUG in its train.log, off the console."""
    sweep_dir, result, typed = train_sweep
    assert_quiet(result)
    for seed in (0, 1):
        overrides = job_overrides(sweep_dir / str(seed))
        assert overrides[0] == f"seed={seed}"
        assert [line.split("=")[0] for line in overrides[1:]] == [line.split("=")[0] for line in typed]
    log = (sweep_dir / "0" / "train.log").read_text()
    assert "[lightning.fabric.utilities.seed][DEBUG] - Seed set to 0" in log
    assert GPU_LINE in log


@pytest.mark.slow
def test_train_sweep_jobs_are_tensorboard_runs_named_by_their_swept_values(train_sweep) -> None:
    """Job k logs to `k/tensorboard/seed=<its seed>/` (`tensorboard --logdir <sweep>` lists
    `0/tensorboard/seed=0`): its training scalars, the report's figures and the HParams with the final
    metrics in that one folder, nothing in tensorboard/ itself."""
    sweep_dir = train_sweep[0]
    for seed in (0, 1):
        tensorboard = sweep_dir / str(seed) / "tensorboard"
        assert [path.name for path in tensorboard.iterdir()] == [f"seed={seed}"]
        events = EventAccumulator(str(tensorboard / f"seed={seed}"), size_guidance={"images": 0}).Reload()
        assert {"train/loss", "val/macro_f1", "test/acc"} <= set(events.Tags()["scalars"])
        figures = {"report/learning_curves", "report/test/confusion_matrix", "report/test/cam_by_class"}
        assert figures | {"val/confusion_matrix"} <= set(events.Tags()["images"])
        session = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        logged = plugin_data_pb2.HParamsPluginData.FromString(session).session_start_info.hparams
        assert logged["seed"].number_value == seed


def test_tensorboard_version_comes_from_the_jobs_saved_overrides(tmp_path: Path) -> None:
    """`${sweep_version:}` names a job's TensorBoard folder by its saved values of the swept keys ('/'
    as '_'), so `resume=<job>` (a single run to Hydra) keeps it; '' for a fold or a run outside a sweep."""
    task = ["seed=0,1", "model.init_from=a/b.ckpt,null", "trainer.max_epochs=2"]
    OmegaConf.save({"hydra": {"overrides": {"task": task}, "sweeper": {}}}, tmp_path / "multirun.yaml")
    job = RunDir(tmp_path / "0")
    job.hydra_dir.mkdir(parents=True)
    OmegaConf.save(["seed=1", "model.init_from=a/b.ckpt", "trainer.max_epochs=2"], job.overrides)
    assert sweep_version(None, str(job.path)) == "seed=1,model.init_from=a_b.ckpt"
    assert sweep_version(3, str(job.path)) == ""  # a fold's directory is named already
    (tmp_path / "multirun.yaml").unlink()
    assert sweep_version(None, str(job.path)) == ""  # a single run


@pytest.mark.parametrize("app", ["eval", "predict", "export", "crosseval"])
def test_only_train_sweeps_folds(app: str) -> None:
    """The other commands' Hydra settings carry no fold mode, fold sweep, fold directory or summary."""
    with initialize_config_module(config_module="emotionvision.conf", version_base="1.3"):
        config = compose(config_name=app, return_hydra_config=True)
    hydra_config = OmegaConf.to_container(config.hydra, resolve=False)
    assert list(hydra_config["callbacks"]) == ["capture_warnings"]  # every command's
    assert hydra_config["sweeper"]["params"] is None
    assert hydra_config["mode"] is None and hydra_config["sweep"]["subdir"] == "${hydra.job.num}"
    assert "fold" not in json.dumps(hydra_config)
