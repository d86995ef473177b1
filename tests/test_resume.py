"""Interrupted runs: resume in the same directory with the same result; unique run directories;
re-running an interrupted sweep."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # console-script runs end to end
BIN = Path(sys.executable).parent
RUN = [
    "data=folder",
    "data.image_size=32",
    "data.num_workers=0",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "++trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
    "logger=csv",
]


def command(cwd: Path, *overrides: str) -> list[str]:
    flags = [flag for flag in overrides if flag.startswith("-")]  # -m goes before the overrides
    rest = [item for item in overrides if not item.startswith("-")]
    return [str(BIN / "emotionvision-train"), *flags, f"data.root={cwd / 'images'}", *RUN, *rest]


def environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "EMOTIONVISION_ROOT"}


def run(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        command(cwd, *overrides), cwd=cwd, env=environment(), capture_output=True, text=True
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def interrupt_in_second_epoch(cwd: Path, run_dir: Path, sig: signal.Signals) -> None:
    """Start a run into `run_dir` and send `sig` once its first epoch is in history.csv and its
    checkpoint on disk (written in the background: it may come after the second epoch started)."""
    process = subprocess.Popen(
        command(cwd, f"hydra.run.dir={run_dir}"), cwd=cwd, env=environment(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # as in a terminal: a background job (CI) may inherit SIGINT ignored, and Python keeps it so
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 300
    saved = [run_dir / "history.csv", run_dir / "checkpoints" / "last.ckpt"]
    while not all(map(Path.is_file, saved)) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(sig)
    assert process.wait(timeout=120) != 0  # it was stopped, not finished


def history(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "history.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def uninterrupted(work: Path) -> Path:
    run(work, f"hydra.run.dir={work / 'whole'}")
    return work / "whole"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["sigkill", "ctrl-c"])
def test_a_resumed_run_ends_as_an_uninterrupted_one(work: Path, uninterrupted: Path, sig) -> None:
    run_dir = work / f"stopped_{sig.name}"
    interrupt_in_second_epoch(work, run_dir, sig)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "metrics.json").is_file()
    split, config = (run_dir / "split.csv").read_text(), run_dir / ".hydra" / "config.yaml"
    saved = config.read_text()
    assert saved == (uninterrupted / ".hydra" / "config.yaml").read_text() and "split_seed: 42\n" in saved
    # as if a newer version's splitting code would deal another split: the run keeps its own split.csv
    config.write_text(saved.replace("split_seed: 42\n", "split_seed: 1\n"))
    run(work, f"resume={run_dir}")
    assert (run_dir / "split.csv").read_text() == split  # images never move between train, val and test
    assert sorted(p.name for p in (work / "logs").glob("train/runs/*")) == []  # no new run directory
    expected = json.loads((uninterrupted / "metrics.json").read_text())
    resumed = json.loads((run_dir / "metrics.json").read_text())
    for name in ("test/acc", "test/macro_f1", "test/auroc", "best_val/macro_f1"):
        assert resumed[name] == pytest.approx(expected[name], abs=1e-6), name
    assert resumed["epochs_trained"] == 2
    rows, expected_rows = history(run_dir), history(uninterrupted)
    assert [row["epoch"] for row in rows] == ["0", "1"]  # one continuous learning curve
    for row, twin in zip(rows, expected_rows, strict=True):
        assert float(row["train/loss"]) == pytest.approx(float(twin["train/loss"]), abs=1e-6)
    assert config.read_text() == saved.replace("split_seed: 42\n", "split_seed: 1\n")  # kept, not rewritten
    assert list((run_dir / ".hydra").glob("resumed_*/overrides.yaml"))  # the resume command is kept


def test_runs_started_together_get_their_own_directories(work: Path) -> None:
    processes = [
        subprocess.Popen(command(work, f"seed={seed}", "trainer.max_epochs=1"), cwd=work, env=environment(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for seed in (1, 2)
    ]  # fmt: skip
    for process in processes:
        assert process.wait(timeout=300) == 0, process.stderr.read()[-3000:]
    runs = sorted((work / "logs" / "train" / "runs").iterdir())
    assert len(runs) == 2
    seeds = [
        json.loads((run / ".hydra/config.yaml").read_text().split("seed: ")[1].split("\n")[0]) for run in runs
    ]
    assert sorted(seeds) == [1, 2]
    for run_dir in runs:
        assert (run_dir / "metrics.json").is_file() and len(list((run_dir / "checkpoints").iterdir())) == 2


def test_resume_last_and_bad_resume_paths(work: Path) -> None:
    result = subprocess.run(command(work, f"resume={work / 'nowhere'}"), cwd=work, env=environment(),
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode != 0 and "not a run directory" in result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"emotionvision-train: error: resume={work / 'nowhere'}: not a run directory "
        "(no .hydra/config.yaml); name a run under logs/."
    ]  # one line, no traceback


def test_rerunning_an_interrupted_sweep_skips_finished_jobs(work: Path) -> None:
    sweep_dir = work / "sweep"
    base = ["-m", f"hydra.sweep.dir={sweep_dir}", "seed=1,2", "trainer.max_epochs=1"]
    run(work, *base, "keep_training_state=true")  # last.ckpt as it is before the run's end slims it
    first = {job: (sweep_dir / job / "metrics.json").read_text() for job in ("0", "1")}
    (sweep_dir / "1" / "metrics.json").unlink()  # job 1 as if it had been killed after its last checkpoint
    log = run(work, *base, "resume=auto")
    assert (sweep_dir / "0" / "metrics.json").read_text() == first["0"]  # untouched
    assert (
        "already finished (resume=auto): skipped"
        in log.stdout + log.stderr + (sweep_dir / "0/train.log").read_text()
    )
    assert json.loads((sweep_dir / "1" / "metrics.json").read_text())["epochs_trained"] == 1
