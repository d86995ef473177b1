"""What a run writes can be trusted: its files are whole or absent, a full disk ends in one line naming
the file and the free space (no temporary file left anywhere), a cross-validation summary says which
folds and images it covers, and torchmetrics' one-vs-rest warnings stay out of a run's output."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, read_write

from emotionvision.atomic import DiskFullError, atomic_open, naming_folder, write_text
from emotionvision.checkpoint_io import AtomicCheckpointIO
from emotionvision.cli.crossval import CrossValidation
from emotionvision.cli.usage import quiet_full_disk_threads
from emotionvision.data.manifest import write_manifest
from emotionvision.errors import usage_error
from emotionvision.reporting.curves import write_history
from emotionvision.reporting.cv_summary import cv_markdown, cv_summary, read_folds
from emotionvision.rundir import RunDir

BIG = 3 * 2**20  # more than a small disk holds


class SmallDisk:
    """A folder on a file system of about 1 MB: a real tmpfs where this process may mount one (root),
    else simulated: files opened for writing under it through `Path.open` (what emotionvision/atomic.py
    uses) fail with ENOSPC once `size` bytes were written in all."""

    def __init__(self, path: Path, real: bool, size: int = 2**20) -> None:
        self.path, self.real, self.left = path, real, size

    def open(self, original, path: Path, mode: str, buffering: int, encoding, errors, newline):
        if self.real or "w" not in mode or not path.resolve().is_relative_to(self.path.resolve()):
            return original(path, mode, buffering, encoding, errors, newline)
        raw = _FillingFile(self, io.FileIO(path, "w"))
        binary = io.BufferedWriter(raw)
        return binary if "b" in mode else io.TextIOWrapper(binary, encoding or "utf-8", errors, newline)


class _FillingFile(io.RawIOBase):
    """A file whose writes take room from its SmallDisk: ENOSPC when none is left."""

    def __init__(self, disk: SmallDisk, raw: io.FileIO) -> None:
        self.disk, self.raw = disk, raw

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.disk.left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = self.raw.write(bytes(memoryview(data)[: self.disk.left]))
        self.disk.left -= written
        return written

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()
        super().close()


@pytest.fixture
def small_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallDisk]:
    """A SmallDisk at tmp_path/disk, and an empty $TMPDIR (tmp_path/tmp) for this process."""
    folder, temp = tmp_path / "disk", tmp_path / "tmp"
    folder.mkdir()
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read $TMPDIR again
    mount = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)]
    real = os.geteuid() == 0 and subprocess.run(mount, capture_output=True).returncode == 0
    disk = SmallDisk(folder, real)
    original = pathlib.Path.open

    def open_(self, mode="r", buffering=-1, encoding=None, errors=None, newline=None):
        return disk.open(original, self, mode, buffering, encoding, errors, newline)

    monkeypatch.setattr(pathlib.Path, "open", open_)
    yield disk
    monkeypatch.undo()
    if real:
        subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The root logger's handlers and level as they were: an in-process run's Hydra logging config
    would otherwise write later tests' records to a closed capture stream and a removed log file."""
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    for handler in logging.root.handlers:
        if handler not in handlers:
            handler.close()
    logging.root.handlers[:], logging.root.level = handlers, level


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def check_full_disk_line(message: str, path: Path) -> None:
    """One line naming `path` and the space left on its file system."""
    assert "\n" not in message and f"No space left on device writing {path}: " in message, message
    assert " free of " in message and "free some space" in message, message


# the writes of a run's files, each given something too big for the disk
WRITES = {
    "metrics.json": lambda run: run.merge_metrics({"padding": "x" * BIG}),
    "split.csv": lambda run: write_manifest(run.split, [("a.png", "happy", "test", "x" * BIG)]),
    "history.csv": lambda run: write_history(run.history, [{"epoch": 0, "time": 1.0}] * (BIG // 8)),
    "checkpoints/last.ckpt": lambda run: AtomicCheckpointIO().save_checkpoint(
        {"weights": torch.zeros(BIG // 4)}, run.last_checkpoint
    ),
}


@pytest.mark.parametrize("name", WRITES)
def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary_file(
    small_disk: SmallDisk, name: str
) -> None:
    run = RunDir(small_disk.path / "run")
    target = run.path / name
    write_text(target, '{"previous": "version"}')
    with pytest.raises(DiskFullError) as raised:
        WRITES[name](run)
    check_full_disk_line(str(raised.value), target)
    assert target.read_text() == '{"previous": "version"}'
    assert files_under(run.path) == [name]  # no .<name>.partial
    assert files_under(Path(os.environ["TMPDIR"])) == []


def test_a_failed_write_keeps_the_old_file_and_removes_its_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "history.csv"
    write_text(target, "epoch,time\n")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_open(target) as handle:
        handle.write("epoch,time\n0,1.0\n")
        raise RuntimeError("interrupted")
    assert target.read_text() == "epoch,time\n" and files_under(tmp_path) == ["history.csv"]


def test_a_library_writing_to_a_full_disk_is_told_in_one_line_naming_the_run(tmp_path: Path) -> None:
    """A full disk met by another writer (a logger's metrics.csv, TensorBoard's events) carries no
    file name: the line names the run directory instead."""
    error = RuntimeError("flush failed")
    error.__context__ = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    line = str(usage_error(naming_folder(error, tmp_path)))
    assert line.startswith(f"No space left on device writing into {tmp_path}: ") and " free of " in line
    quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(tmp_path / "metrics.csv"))
    assert str(usage_error(quota)).startswith(f"Disk quota exceeded writing {tmp_path / 'metrics.csv'}: ")


def test_a_writer_thread_dying_of_a_full_disk_prints_no_traceback(monkeypatch) -> None:
    """TensorBoard's event writer thread dies of a full disk and raises it again in the main thread
    (reported in one line): its own traceback is not printed. Other threads' errors still are."""
    printed: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: printed.append(args.exc_value))

    def fail(error: BaseException) -> None:
        raise error

    errors = [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), KeyError("unrelated")]
    with quiet_full_disk_threads():
        for error in errors:
            thread = threading.Thread(target=fail, args=(error,), name="EventWriter")
            thread.start()
            thread.join()
    assert printed == errors[1:]


@pytest.mark.usefixtures("restore_logging")
def test_a_training_run_on_a_full_disk_ends_in_one_line(
    small_disk: SmallDisk, make_tree, quick_run_overrides: list[str], capfd, monkeypatch
) -> None:
    """The checkpoint (45 MB) does not fit: the run ends in one line naming it and the space left, and
    leaves no temporary file in the run directory or in $TMPDIR. Files that fitted stay whole."""
    from emotionvision.cli import train

    tree = make_tree(small_disk.path.parent / "faces", {"anger": 4, "happy": 4, "sad": 4})
    run = small_disk.path / "run"
    argv = ["emotionvision-train", "data=folder", f"data.root={tree}", *quick_run_overrides]
    argv += ["trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", "test=false"]
    argv += [f"paths.root_dir={small_disk.path.parent}", f"hydra.run.dir={run}"]
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        train.main()
    assert exited.value.code == 1
    line = capfd.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("emotionvision-train: error: "), line
    checkpoint = line.split(" writing ", 1)[1].split(": ", 1)[0]
    assert Path(checkpoint).parent == RunDir(run).checkpoints and checkpoint.endswith(".ckpt"), line
    check_full_disk_line(line, Path(checkpoint))
    assert not any(".partial" in name for name in files_under(run)), files_under(run)
    assert not list(RunDir(run).checkpoints.iterdir())
    assert len(RunDir(run).split.read_text().splitlines()) == 13  # header and 12 images
    assert files_under(Path(os.environ["TMPDIR"])) == []


# --- item 4: a cross-validation summary says what it covers ---

CLASSES = ("anger", "happy")


def fake_fold(folder: Path, fold: int, folds: int, images: int = 12, finished: bool = True) -> Path:
    """A fold run of `folds` over `images` images: its config, split.csv and (finished) metrics.json."""
    run = RunDir(folder / f"fold{fold}")
    run.hydra_dir.mkdir(parents=True)
    OmegaConf.save({"data": {"folds": folds, "fold": fold}}, run.config)
    rows = [
        (f"img{i}.png", CLASSES[i % 2], "test" if i % folds == fold else "train", f"g{i}")
        for i in range(images)
    ]
    write_manifest(run.split, rows)
    if finished:
        tested = sum(row[2] == "test" for row in rows)
        metrics = {"test/acc": 0.5, "test/macro_f1": 0.5, "test/auroc": 0.5}
        metrics |= {f"test/support/{name}": tested // 2 for name in CLASSES}
        metrics["test/confusion_matrix"] = [[tested // 4, tested // 2 - tested // 4], [0, tested // 2]]
        run.merge_metrics(metrics)
    return run.path


def test_a_summary_with_a_missing_fold_says_what_it_lacks(tmp_path: Path) -> None:
    """3 folds planned over 12 images: fold1 failed and fold2 never started, so only fold0's 4 images
    were tested; the summary says so and claims no image was tested once."""
    fold_dirs = [fake_fold(tmp_path, 0, 3), fake_fold(tmp_path, 1, 3, finished=False)]
    summary = cv_summary(read_folds(fold_dirs), fold_dirs, planned=3)
    report = cv_markdown(summary)
    header = report.splitlines()[0]
    assert header == "# Cross-validation: 1 of 3 folds completed, 4 test images, 8 not tested", header
    assert "**Incomplete: 2 of 3 folds missing** (fold1 did not finish testing" in report
    assert "1 never started; 8 images were never tested" in report
    assert "every image tested once" not in report
    assert "Pooled over the 1 completed of 3 folds (4 of 12 images tested, 8 never)" in report
    assert (summary["folds"], summary["folds_planned"], summary["folds_not_started"]) == (1, 3, 1)
    assert summary["images_not_tested"] == 8 and summary["every_image_tested_once"] is False


def test_a_complete_summary_says_every_image_was_tested_once(tmp_path: Path) -> None:
    fold_dirs = [fake_fold(tmp_path, k, 3) for k in range(3)]
    report = cv_markdown(cv_summary(read_folds(fold_dirs), fold_dirs, planned=3))
    assert (
        report.splitlines()[0] == "# Cross-validation: 3 of 3 folds completed, 12 test images, 0 not tested"
    )
    assert "Pooled over folds (every image tested once)" in report and "Incomplete" not in report


def test_the_callback_summarises_against_the_folds_it_planned(
    tmp_path: Path, make_subject_tree, compose_train
) -> None:
    """CrossValidation counts the folds when the sweep starts (here 3) and the summary it writes when
    the sweep ends counts a fold whose run directory is missing as planned and not completed."""
    root = make_subject_tree(tmp_path / "images", subjects=3, per_subject=1)
    data = ["data=folder", f"data.root={root}", "data.folds=3", "data.group_by='^(S\\d+)_'"]
    config = compose_train([*data, f"paths.root_dir={tmp_path}"], return_hydra_config=True)
    callback = CrossValidation()
    callback.on_multirun_start(config)
    sweep = tmp_path / "sweep"
    fake_fold(sweep, 0, 3)
    fake_fold(sweep, 1, 3)
    with read_write(config.hydra):
        config.hydra.sweep.dir = str(sweep)
    callback.on_multirun_end(config)
    report = (sweep / "cv_summary.md").read_text()
    assert json.loads((sweep / "cv_summary.json").read_text())["folds_planned"] == 3
    assert report.startswith("# Cross-validation: 2 of 3 folds completed, 8 test images, 4 not tested\n")


# --- item 13: torchmetrics' one-vs-rest warnings ---


@pytest.mark.usefixtures("restore_logging")
def test_a_training_run_does_not_warn_about_classes_missing_from_a_batch(
    tmp_path: Path, make_tree, quick_run_overrides: list[str], recwarn, capfd, monkeypatch
) -> None:
    """Batches of 2 images from 3 classes: each epoch's training and validation metrics lack a class,
    which torchmetrics' ROC warns about ('No positive samples in targets') in every fold."""
    from emotionvision.cli import train

    tree = make_tree(tmp_path / "faces", {"anger": 4, "happy": 4, "sad": 4})
    argv = ["emotionvision-train", "data=folder", f"data.root={tree}", *quick_run_overrides]
    argv += ["trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", "test=false", "callbacks=none"]
    argv += ["data.batch_size=2", f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"]
    monkeypatch.setattr(sys, "argv", argv)
    train.main()
    warned = [str(warning.message) for warning in recwarn if "samples in targets" in str(warning.message)]
    assert warned == []
    assert "samples in targets" not in capfd.readouterr().err
