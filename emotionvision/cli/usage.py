"""How the commands report a failure: a `UsageError` (also one wrapped by Hydra's `instantiate` or
re-raised by Lightning) becomes `<prog>: error: <message>` on stderr and exit status 1, and the stub run
directory of a run that failed before it wrote anything of its own is removed."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

from emotionvision.atomic import full_disk_cause, naming_folder
from emotionvision.cli.ddp import launched_rank
from emotionvision.errors import usage_error
from emotionvision.rundir import RunDir

log = logging.getLogger(__name__)

T = TypeVar("T")


class JobUsageError(CompactHydraException):
    """A multirun job's UsageError: after the sweep Hydra prints its one-line message, no traceback."""


def reports_usage_errors(prog: str) -> Callable[[Callable[[DictConfig], T]], Callable[[DictConfig], T]]:
    """Decorator of a Hydra task function (place it under `@hydra.main`).

    On any failure the run directory is removed if it is a stub (`remove_stub`). A UsageError, or a
    full disk (named with its free space: emotionvision/atomic.py), is then printed as
    `<prog>: error: <message>` on stderr and the process exits with status 1; in a multirun the job's
    error is logged, the other jobs run, and Hydra ends the sweep with that line. HYDRA_FULL_ERROR=1
    keeps the traceback."""

    def decorate(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
        @functools.wraps(task)
        def run(cfg: DictConfig) -> T:
            started = time.time() - 2  # Hydra wrote the job's config just before
            try:
                with quiet_full_disk_threads():
                    return task(cfg)
            except Exception as error:
                if HydraConfig.initialized():
                    run = RunDir(HydraConfig.get().runtime.output_dir)
                    remove_stub(run, logger_folders(cfg, run), started)
                    error = naming_folder(error, run.path)  # a library's write to a full disk
                usage = usage_error(error)
                if usage is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                line = f"{prog}: error: {usage}"
                if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                    log.error(line)
                    raise JobUsageError(line) from None
                print(line, file=sys.stderr, flush=True)
                raise SystemExit(1) from None

        return run

    return decorate


@contextmanager
def quiet_full_disk_threads() -> Iterator[None]:
    """A library's writer thread that dies of a full disk (TensorBoard's event writer) prints no
    traceback: the library raises its error again in the main thread, which reports it in one line.
    The thread's error goes to the log at DEBUG; other threads' errors are printed as before.
    HYDRA_FULL_ERROR=1 keeps the traceback."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if full_disk_cause(args.exc_value) is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            previous(args)
        else:
            name = args.thread.name if args.thread is not None else "a thread"
            log.debug("%s stopped on a full disk: %r", name, args.exc_value)

    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous


def logger_folders(cfg: DictConfig, run: RunDir) -> set[str]:
    """Names of the folders the config's loggers write into `run` (their save_dir/name)."""
    folders = set()
    for logger in (cfg.get("logger") or {}).values():
        folder = Path(str(logger.get("save_dir", ""))) / str(logger.get("name", ""))
        if folder.resolve().parent == run.path.resolve():
            folders.add(folder.name)
    return folders


def remove_stub(run: RunDir, logger_dirs: set[str], started: float) -> bool:
    """Remove the run directory if it is a stub (`is_stub`) and this is rank zero. Returns whether it
    was removed."""
    if process_rank() != 0 or not is_stub(run, logger_dirs, started):
        return False
    detach_file_handlers(run.path)
    shutil.rmtree(run.path, ignore_errors=True)
    log.info("Removed %s: the run failed before it wrote a checkpoint or metrics", run.path)
    return True


def detach_file_handlers(folder: Path) -> None:
    """Close and remove the logging handlers that write into `folder` (the job's <command>.log), from
    every logger: a removed stub's log must not be reopened by a later line of this process."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    gone = folder.resolve()
    for logger in loggers:
        for handler in list(getattr(logger, "handlers", [])):  # placeholders have none
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).is_relative_to(gone):
                logger.removeHandler(handler)
                handler.close()


def process_rank() -> int:
    """This process's rank: Lightning's where a run loaded Lightning (its own launcher's ranks too), else
    the cluster launcher's; a config error found before torch costs no Lightning import."""
    if "lightning.pytorch" not in sys.modules:
        return launched_rank()
    from lightning.pytorch.utilities import rank_zero_only

    return rank_zero_only.rank


def is_stub(run: RunDir, logger_dirs: set[str], started: float) -> bool:
    """True for a run directory holding only what a run writes before training (`RunDir.before_training`
    without a resume's config, the loggers' folders `logger_dirs`, *.log), every file no older than
    `started` (made by this job), and not the current directory or above it."""
    if not run.path.is_dir() or Path.cwd().resolve().is_relative_to(run.path.resolve()):
        return False
    expected = run.before_training() | logger_dirs
    return (
        all(entry.name in expected or entry.suffix == ".log" for entry in run.path.iterdir())
        and not (run.hydra_dir.is_dir() and any(path.is_dir() for path in run.hydra_dir.iterdir()))
        and all(path.stat().st_mtime >= started for path in run.path.rglob("*") if path.is_file())
    )
