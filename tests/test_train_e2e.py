"""End to end: the real CLI trains a tiny generated set, writes the run directory and resumes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

BIN = Path(sys.executable).parent
TINY_RUN = [
    "data=folder",
    "data.image_size=32",
    "trainer.max_epochs=2",
    "data.num_workers=0",
    "data.batch_size=8",
]
CLASSES = ["anger", "happy", "sad"]


def run_cli(command: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a training command in `cwd` without EMOTIONVISION_ROOT; fail with its output's tail."""
    env = {key: value for key, value in os.environ.items() if key != "EMOTIONVISION_ROOT"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        pytest.fail(f"{' '.join(command)} exited {result.returncode}:\n{output}")
    return result


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, make_tree) -> Path:
    """`python -m emotionvision.cli.train` on 3 x 12 images for 2 epochs, its output captured (not a
    terminal: kept in console.txt beside the images), keeping its training state (to be continued by
    ckpt_path=); the run directory."""
    cwd = tmp_path_factory.mktemp("e2e")
    root = make_tree(cwd / "images", dict.fromkeys(CLASSES, 12))
    command = [sys.executable, "-m", "emotionvision.cli.train", f"data.root={root}", *TINY_RUN]
    result = run_cli([*command, "keep_training_state=true"], cwd)
    (cwd / "console.txt").write_text(result.stdout + result.stderr)
    runs = list((cwd / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def scalars_and_plugins(
    run_dir: Path,
) -> tuple[dict[str, list[tuple[int, float]]], set[str], dict[str, bytes]]:
    """(step, value) of the scalars by tag, image tags and hparams plugin contents of all TensorBoard
    event files."""
    event_files = sorted((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert event_files, "no TensorBoard event file"
    scalars: dict[str, list[tuple[int, float]]] = {}
    images: set[str] = set()
    hparams: dict[str, bytes] = {}
    for path in event_files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((event.step, event.value) for event in events.Scalars(tag))
        images |= set(events.Tags()["images"])
        with contextlib.suppress(KeyError):  # only the file written with the final metrics has them
            hparams |= events.PluginTagToContent("hparams")
    return scalars, images, hparams


def test_run_directory_layout(first_run: Path) -> None:
    config = (first_run / ".hydra" / "config.yaml").read_text()
    assert "image_size: 32" in config and "max_epochs: 2" in config
    header, *rows = (first_run / "split.csv").read_text().splitlines()
    assert header == "path,label,split,group"
    assert len(rows) == 36
    assert {row.split(",")[2] for row in rows} == {"train", "val", "test"}
    assert (first_run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((first_run / "checkpoints").glob("best-epoch*.ckpt"))) == 1


def test_metrics_json(first_run: Path) -> None:
    metrics = json.loads((first_run / "metrics.json").read_text())
    for name in ("test/acc", "test/macro_f1", "test/auroc"):
        assert 0.0 <= metrics[name] <= 1.0, name
    for name in CLASSES:
        assert 0.0 <= metrics[f"test/recall/{name}"] <= 1.0
    matrix = metrics["test/confusion_matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    test_rows = [r for r in (first_run / "split.csv").read_text().splitlines() if r.split(",")[2] == "test"]
    assert sum(map(sum, matrix)) == len(test_rows)
    correct = sum(matrix[i][i] for i in range(3))
    assert metrics["test/acc"] == pytest.approx(correct / len(test_rows))
    assert metrics["epochs_trained"] == 2
    assert 0.0 <= metrics["best_val/macro_f1"] <= 1.0


def test_tensorboard_scalars_images_and_hparams(first_run: Path) -> None:
    scalars, images, hparams = scalars_and_plugins(first_run)
    assert len(scalars["val/macro_f1"]) == 2  # once per epoch
    for tag in ("val/loss", "val/acc", "val/auroc", "train/loss", "val/recall/happy"):
        assert tag in scalars, tag
    # logged by trainer.test; HParams declares it at that step too (not at step 0), with the same value
    assert len(set(scalars["test/acc"])) == 1
    hparams_file = yaml.safe_load((first_run / "tensorboard" / "hparams.yaml").read_text())
    assert (
        hparams_file["model"]["backbone"] == "resnet18"
        and hparams_file["monitor"]["metric"] == "val/macro_f1"
    )
    assert "val/confusion_matrix" in images
    assert "_hparams_/session_start_info" in hparams
    session = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/session_start_info"])
    logged = session.session_start_info.hparams
    assert logged["model/backbone"].string_value == "resnet18"
    assert logged["data/image_size"].number_value == 32
    experiment = plugin_data_pb2.HParamsPluginData.FromString(hparams["_hparams_/experiment"])
    metric_tags = {info.name.tag for info in experiment.experiment.metric_infos}
    assert {"test/acc", "test/macro_f1"} <= metric_tags


def test_checkpoints_load_safely_and_carry_class_names(first_run: Path) -> None:
    for path in (first_run / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        assert checkpoint["hyper_parameters"]["class_names"] == CLASSES
        assert checkpoint["hyper_parameters"]["input_size"] == 32
        assert checkpoint["state_dict"]["model.fc.weight"].shape == (3, 512)
    last = torch.load(first_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 1
    assert "optimizer_states" in last  # keep_training_state=true (the default drops it: test_disk.py)


def test_epoch_progress_is_logged_where_output_is_not_a_terminal(first_run: Path) -> None:
    """A line per epoch in train.log (the monitored metric, seconds, ETA), no progress bar in the output."""
    log = (first_run / "train.log").read_text()
    value = r"\d+\.\d+"
    line = (
        rf"Epoch (\d)/2: train/loss {value}, val/loss {value}, val/macro_f1 {value}; {value} s; ETA \d\d:\d\d"
    )
    assert re.findall(line, log) == ["1", "2"], log[-3000:]
    console = (first_run.parents[3] / "console.txt").read_text()
    assert "\r" not in console and "it/s]" not in console  # Lightning's bar redraws with \r


@pytest.mark.slow
def test_resume_from_last_checkpoint_with_console_script(first_run: Path) -> None:
    """`emotionvision-train ckpt_path=.../last.ckpt trainer.max_epochs=3` trains one more epoch."""
    script = BIN / "emotionvision-train"
    assert script.is_file() and os.access(script, os.X_OK), f"console script missing: {script}"
    cwd = first_run.parents[3]
    last = first_run / "checkpoints" / "last.ckpt"
    resumed = cwd / "resumed"
    root = cwd / "images"
    overrides = [f"data.root={root}", *TINY_RUN, "trainer.max_epochs=3", f"ckpt_path={last}"]
    run_cli([str(script), *overrides, f"hydra.run.dir={resumed}"], cwd)
    metrics = json.loads((resumed / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 3
    before = torch.load(last, weights_only=True)
    after = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert (before["epoch"], after["epoch"]) == (1, 2)
    assert after["global_step"] == before["global_step"] * 3 // 2  # one epoch on top, same batches
    scalars, _, _ = scalars_and_plugins(resumed)
    assert len(scalars["val/macro_f1"]) == 1  # only the new epoch ran
    assert (resumed / "split.csv").read_text() == (first_run / "split.csv").read_text()


@pytest.mark.slow  # Inception-V3 end to end: ~60 s on 2 CPU cores
def test_inception_v3_end_to_end(tmp_path: Path, make_tree) -> None:
    root = make_tree(tmp_path / "images", {"anger": 4, "happy": 4})
    run_dir = tmp_path / "run"
    overrides = [
        f"data.root={root}",
        "data=folder",
        "model=inception_v3",
        "data.image_size=299",  # the auxiliary head needs 299 px
        "data.num_workers=0",
        "data.batch_size=2",
        "data.split_ratios=[0.5,0.25,0.25]",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=1",
        "++trainer.limit_val_batches=1",
        f"hydra.run.dir={run_dir}",
    ]
    run_cli([sys.executable, "-m", "emotionvision.cli.train", *overrides], tmp_path, timeout=600)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["test/acc"] <= 1.0
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["backbone"] == "inception_v3"
    assert checkpoint["state_dict"]["model.AuxLogits.fc.weight"].shape[0] == 2
