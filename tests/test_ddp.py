"""trainer=ddp: two CPU processes (gloo) under Hydra share one run directory; single-process DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from emotionvision.cli.train import train

pytestmark = pytest.mark.slow  # DDP processes end to end
BIN = Path(sys.executable).parent
SHORT_RUN = [
    "data=folder",
    "data.image_size=32",
    "data.num_workers=0",
    "data.batch_size=8",
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=1",
    "++trainer.num_sanity_val_steps=0",
    "++trainer.enable_model_summary=false",
]


def test_two_cpu_processes_share_one_job_directory(tmp_path: Path, make_tree) -> None:
    """A one-job multirun: Lightning's rank-1 process must rerun this job, not the sweep, in its directory."""
    root = make_tree(tmp_path / "images")
    env = {key: value for key, value in os.environ.items() if key != "EMOTIONVISION_ROOT"}
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    command = [str(BIN / "emotionvision-train"), "-m", *ddp, f"data.root={root}", *SHORT_RUN]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    assert [p.name for p in (tmp_path / "logs/train").iterdir()] == ["multiruns"]  # no run dir per rank
    (sweep_dir,) = (tmp_path / "logs/train/multiruns").iterdir()
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["0", "multirun.yaml"]
    run_dir = sweep_dir / "0"
    assert (run_dir / "train.log").is_file() and (run_dir / "train_ddp_process_1.log").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best-epoch000.ckpt", "last.ckpt"]
    event_files = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len({path.name.rsplit(".", 2)[1] for path in event_files}) == 1  # one process id: rank zero

    metrics = json.loads((run_dir / "metrics.json").read_text())
    with (run_dir / "split.csv").open() as handle:
        test_images = sum(row["split"] == "test" for row in csv.DictReader(handle))
    # test metrics gathered from both ranks, each image counted once (no padding repeats)
    assert int(np.sum(metrics["test/confusion_matrix"])) == test_images
    assert 0.0 <= metrics["test/acc"] <= 1.0 and "best_val/macro_f1" in metrics


@pytest.fixture
def isolated_process_group() -> Iterator[None]:
    """Undo what an in-process DDP run leaves behind: rank variables and the process group."""
    saved = dict(os.environ)
    yield
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    os.environ.clear()
    os.environ.update(saved)


def test_ddp_config_with_one_device_trains(
    compose_train, tmp_path: Path, make_tree, isolated_process_group
) -> None:
    root = make_tree(tmp_path / "images")
    output_dir = tmp_path / "run"
    overrides = [
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        f"data.root={root}",
        *SHORT_RUN,
    ]
    cfg = compose_train(
        [*overrides, f"paths.output_dir={output_dir}", f"paths.cache_dir={tmp_path / 'cache'}", "logger=csv"]
    )
    returned = train(cfg)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["epochs_trained"] == 1
    assert returned["best_val/macro_f1"] == metrics["best_val/macro_f1"]
    assert returned["test/acc"] == pytest.approx(metrics["test/acc"])
