"""Newcomer mistakes: each entry point reports a UsageError as one line naming the fix (no traceback,
exit status 1) and leaves no stub run directory behind."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from emotionvision.cli.usage import is_stub, logger_folders, remove_stub, reports_usage_errors
from emotionvision.errors import UsageError, check_arguments, usage_error
from emotionvision.rundir import RunDir

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def work(tmp_path_factory, make_tree) -> Path:
    """A working directory with a three-class tree (`three/`) and a one-class tree (`one/`)."""
    work = tmp_path_factory.mktemp("usage")
    make_tree(work / "three", dict.fromkeys(["anger", "happy", "sad"], 6))
    make_tree(work / "one", {"happy": 6})
    return work


def run(work: Path, program: str, *args: str) -> subprocess.CompletedProcess:
    """Run a console script in `work` (without EMOTIONVISION_ROOT, so logs/ lands there)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("EMOTIONVISION_ROOT", "HYDRA_FULL_ERROR")
    }
    command = [str(BIN / program), *args]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)


def error_line(result: subprocess.CompletedProcess, program: str) -> str:
    """The one `<program>: error: ...` line of stderr, checked: exit status 1, no traceback, no Hydra
    job report, nothing else on stderr (no library chatter before it: emotionvision/cli/logs.py)."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output and "Error executing job" not in result.stderr, output[-3000:]
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith(f"{program}: error: ")]
    assert len(errors) == 1 and lines == errors, result.stderr[-3000:]
    return errors[0]


def runs(work: Path, task: str = "train") -> list[Path]:
    """The run directories left under logs/<task>/runs."""
    folder = work / "logs" / task / "runs"
    return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def train(work: Path, quick_run_overrides: list[str], capfd, monkeypatch):
    """`emotionvision-train` with the quick-run overrides, its `main` run in this process (the console
    script's own start-up and quiet console: tests/test_startup.py and the multirun test below); returns
    its one error line and asserts that it left no run directory."""
    from emotionvision.cli import train as command

    before = runs(work)
    monkeypatch.chdir(work)
    for name in ("EMOTIONVISION_ROOT", "HYDRA_FULL_ERROR"):
        monkeypatch.delenv(name, raising=False)

    def _train(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["emotionvision-train", *quick_run_overrides, *args])
        with pytest.raises(SystemExit) as exit_info:
            command.main()
        stdout, stderr = capfd.readouterr()
        line = error_line(
            subprocess.CompletedProcess([], exit_info.value.code, stdout, stderr), "emotionvision-train"
        )
        assert runs(work) == before, "a stub run directory was left behind"
        return line

    return _train


@pytest.mark.slow
def test_a_folder_with_one_class(train, work: Path) -> None:
    line = train("data=folder", f"data.root={work / 'one'}")
    assert f"{work / 'one'} has one class (happy)" in line and "sub-folder of images per class" in line


@pytest.mark.slow
def test_data_root_without_data_folder(train, work: Path) -> None:
    line = train(f"data.root={work / 'three'}")
    assert f"use data=folder data.root={work / 'three'}" in line


def test_a_misspelt_trainer_key(train, work: Path) -> None:
    line = train("data=folder", f"data.root={work / 'three'}", "+trainer.max_epoch=2")
    assert line.endswith("trainer.max_epoch is not a Trainer argument; did you mean trainer.max_epochs?")


@pytest.mark.slow
def test_an_error_inside_trainer_fit(train, work: Path) -> None:
    # the data module splits the images in its setup, which trainer.fit runs (after the loggers
    # started): Lightning re-raises the error
    args = ("data=folder", f"data.root={work / 'three'}", "data.folds=3", "data.fold=5", "logger=many")
    assert "data.fold=5: data.folds=3 has no such fold (they count from 0)" in train(*args)


@pytest.mark.slow
def test_a_multirun_reports_one_line_and_runs_every_job(work: Path, quick_run_overrides: list[str]) -> None:
    sweep = work / "sweep"
    args = [
        f"hydra.sweep.dir={sweep}",
        "data=folder",
        f"data.root={work / 'three'}",
        "data.classes=[happy],[sad]",
    ]
    result = run(work, "emotionvision-train", "-m", *quick_run_overrides, *args)
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("emotionvision-train: error: ")]
    assert len(errors) == 1 and "data.classes=['happy'] names fewer than two classes" in errors[0]
    assert "data.classes=['sad'] names fewer than two classes" in result.stdout  # the second job ran
    assert sorted(path.name for path in sweep.iterdir()) == ["multirun.yaml"]  # both stubs removed


def test_a_resumed_run_directory_is_kept(work: Path) -> None:
    run_dir = work / "logs" / "train" / "runs" / "interrupted"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 0\n")
    line = error_line(run(work, "emotionvision-train", f"resume={run_dir}"), "emotionvision-train")
    assert "nothing to resume from" in line
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "seed: 0\n"


@pytest.mark.slow
def test_eval_names_a_mistyped_trainer_argument(work: Path) -> None:
    """A bad value of the other commands answers before torch: tests/test_startup.py."""
    before = runs(work, "eval")
    result = run(work, "emotionvision-eval", "ckpt_path=missing.ckpt", "+trainer.max_epoch=1")
    assert "trainer.max_epoch is not a Trainer argument; did you" in error_line(result, "emotionvision-eval")
    assert runs(work, "eval") == before


def test_usage_error_is_found_where_hydra_wrapped_it() -> None:
    cause = UsageError("data.root is wrong")
    try:
        try:
            raise cause
        except UsageError as error:
            raise RuntimeError("Error in call to target") from error
    except RuntimeError as wrapped:
        assert usage_error(wrapped) is cause
    assert usage_error(ValueError("a bug")) is None


def test_outside_hydra_a_usage_error_exits_with_one_line(capsys, monkeypatch) -> None:
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: False))

    @reports_usage_errors("prog")
    def task(cfg: object) -> None:
        raise UsageError("set data.root")

    with pytest.raises(SystemExit) as exit_info:
        task(None)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "prog: error: set data.root\n"


def test_check_arguments_names_the_closest_trainer_argument() -> None:
    trainer = OmegaConf.create({"_target_": "lightning.pytorch.Trainer", "max_epochs": 2, "devices": 1})
    check_arguments(trainer, "trainer")
    trainer.max_epoch = 2
    trainer.zzzz = 1
    with pytest.raises(UsageError) as error:
        check_arguments(trainer, "trainer")
    assert str(error.value) == (
        "trainer.max_epoch is not a Trainer argument; did you mean trainer.max_epochs? "
        "trainer.zzzz is not a Trainer argument; remove it (see the arguments of lightning.pytorch.Trainer)."
    )
    check_arguments(OmegaConf.create({"_target_": "logging.basicConfig", "anything": 1}), "node")  # **kwargs


def stub(path: Path, *files: str) -> RunDir:
    """A run directory holding .hydra/config.yaml, train.log and `files`."""
    for name in (".hydra/config.yaml", "train.log", *files):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).touch()
    return RunDir(path)


def test_only_stubs_of_this_process_count_as_stubs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    started = time.time() - 2
    made = stub(tmp_path / "stub", "tensorboard/version_0/events", "split.csv", "skipped.csv")
    assert is_stub(made, {"tensorboard"}, started)
    assert not is_stub(made, {"csv"}, started)  # a folder no configured logger writes
    for kept in (
        "checkpoints/last.ckpt",
        "metrics.json",
        "history.csv",
        "notes.txt",
        ".hydra/resumed_1/c.yaml",
    ):
        assert not is_stub(stub(tmp_path / kept.replace("/", "_"), kept), set(), started), kept
    old = stub(tmp_path / "old")
    os.utime(old.path / "train.log", (time.time() - 3600,) * 2)
    assert not is_stub(old, set(), started)
    assert not is_stub(stub(tmp_path), set(), started)  # the current directory


def test_a_removed_stub_takes_its_log_handlers_with_it(tmp_path: Path, monkeypatch) -> None:
    """The job's log file handler, on the root logger and another, is closed and removed with the stub:
    a later line of the same process (the next in-process run, a test) does not try to reopen it."""
    monkeypatch.chdir(tmp_path)
    made = stub(tmp_path / "stub")
    # delay=True: opened at its first line, as a closed handler is reopened; left attached, the line after
    # the clean-up raises FileNotFoundError (train.log in the removed folder)
    handler = logging.FileHandler(made.path / "train.log", delay=True)
    named = logging.getLogger("emotionvision.test_stub")
    named.propagate = False
    for logger in (logging.getLogger(), named):
        logger.addHandler(handler)
    try:
        assert remove_stub(made, set(), time.time() - 2) and not made.path.exists()
        assert handler not in logging.getLogger().handlers and handler not in named.handlers
        named.warning("after the clean-up")
        assert not made.path.exists()
    finally:
        named.propagate = True
        for logger in (logging.getLogger(), named):
            logger.removeHandler(handler)


def test_logger_folders_are_read_from_the_logger_configs(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    loggers = {
        "tensorboard": {"save_dir": str(run.path), "name": "tensorboard"},
        "csv": {"save_dir": str(run.path), "name": "metrics_csv"},
        "elsewhere": {"save_dir": str(tmp_path / "shared"), "name": "wandb"},
    }
    assert logger_folders(OmegaConf.create({"logger": loggers}), run) == {"tensorboard", "metrics_csv"}
    assert logger_folders(OmegaConf.create({"logger": None}), run) == set()
