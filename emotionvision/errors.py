"""Errors in a user's config or data: the entry points report them as one line, without a traceback.

`@reports_usage_errors(prog)` under `@hydra.main` turns a `UsageError` (also one wrapped by Hydra's
`instantiate` or re-raised by Lightning) into `<prog>: error: <message>` on stderr and exit status 1, and
removes the stub run directory of a run that failed before it wrote anything of its own.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from hydra.utils import get_object
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
STARTED = time.time()  # files of a run directory this process made are no older
# what a run writes before its first epoch ends: Hydra's config and logs (*.log), the loggers' folders,
# the data module's split.csv, skipped.csv and faces.png; nothing a finished epoch writes (checkpoints/,
# history.csv, metrics.json)
STUB_ENTRIES = {".hydra", "tensorboard", "csv", "split.csv", "skipped.csv", "faces.png"}


class UsageError(ValueError):
    """A mistake the user can fix (a bad option, an unusable data tree); the message names the fix."""


def usage_exit(error: UsageError) -> SystemExit:
    """The exit of a usage error found while Hydra composes the config (in a resolver, before any task
    runs): `<program>: error: <message>` on stderr, status 1."""
    return SystemExit(f"{Path(sys.argv[0]).name}: error: {error}")


class JobUsageError(CompactHydraException):
    """A multirun job's UsageError: after the sweep Hydra prints its one-line message, no traceback."""


def usage_error(error: BaseException | None) -> UsageError | None:
    """The UsageError `error` is, or was raised from (Hydra's instantiate wraps errors); else None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UsageError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def reports_usage_errors(prog: str) -> Callable[[Callable[[DictConfig], T]], Callable[[DictConfig], T]]:
    """Decorator of a Hydra task function (place it under `@hydra.main`).

    On any failure the run directory is removed if it is a stub (`remove_stub`). A UsageError is then
    printed as `<prog>: error: <message>` on stderr and the process exits with status 1; in a multirun
    the job's error is logged, the other jobs run, and Hydra ends the sweep with that line.
    HYDRA_FULL_ERROR=1 keeps the traceback."""

    def decorate(task: Callable[[DictConfig], T]) -> Callable[[DictConfig], T]:
        @functools.wraps(task)
        def run(cfg: DictConfig) -> T:
            try:
                return task(cfg)
            except Exception as error:
                if HydraConfig.initialized():
                    remove_stub(Path(HydraConfig.get().runtime.output_dir))
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


def remove_stub(run_dir: Path) -> bool:
    """Remove `run_dir` if it is a stub: made by this process (rank zero), holding only what a run writes
    before training (`.hydra` without a resume's config, *.log, STUB_ENTRIES), and not the current
    directory or above it. Returns whether it was removed."""
    if rank_zero_only.rank != 0 or not is_stub(run_dir):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    log.info("Removed %s: the run failed before it wrote a checkpoint or metrics", run_dir)
    return True


def is_stub(run_dir: Path) -> bool:
    """True for a directory made by this process that holds only what a run writes before training."""
    if not run_dir.is_dir() or Path.cwd().resolve().is_relative_to(run_dir.resolve()):
        return False
    entries = list(run_dir.iterdir())
    hydra_dir = run_dir / ".hydra"
    return (
        all(entry.name in STUB_ENTRIES or entry.suffix == ".log" for entry in entries)
        and not (hydra_dir.is_dir() and any(path.is_dir() for path in hydra_dir.iterdir()))
        and all(path.stat().st_mtime >= STARTED - 2 for path in run_dir.rglob("*") if path.is_file())
    )


def check_arguments(node: DictConfig, key: str) -> None:
    """UsageError naming each key of the `_target_` config `node` (found at `key`) that its target does
    not take, with the closest argument it does take: `trainer.max_epoch` -> `trainer.max_epochs`."""
    try:
        parameters = inspect.signature(get_object(node._target_)).parameters
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [arg for arg in node if arg not in parameters and not (arg[0] == "_" and arg[-1] == "_")]
    if unknown:
        raise UsageError(
            " ".join(_not_an_argument(arg, key, node._target_, list(parameters)) for arg in unknown)
        )


def _not_an_argument(arg: str, key: str, target: str, arguments: list[str]) -> str:
    close = difflib.get_close_matches(arg, arguments, n=1)
    fix = f"did you mean {key}.{close[0]}?" if close else f"remove it (see the arguments of {target})."
    return f"{key}.{arg} is not a {target.rsplit('.', 1)[-1]} argument; {fix}"
