"""What the console shows, and what only the run's log file keeps.

conf/hydra/default.yaml sets every command's logging (Hydra's `job_logging`): the console (stdout) at
INFO, the job's `<command>.log` in the run directory at DEBUG, with emotionvision's own DEBUG lines.
The libraries' chatter is lowered to DEBUG there (`LibraryChatter`), so it is kept in the log file and
left off the console: Lightning's INFO lines (`Seed set to 0`, `GPU available: ...`, `TPU available:
...`, its `💡 Tip` advertisements, checkpoint restoring notes) and every Python warning (torch's
deprecations, torchmetrics' "No positive samples"), which `CaptureWarnings` sends to the log.
Lightning's records reach those handlers through `ToRoot`, not through the `lightning` logger, where
`import lightning` puts a stderr handler of its own.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# the loggers whose records at INFO (Lightning) or WARNING (Python warnings) are chatter
CHATTER = {"lightning": logging.INFO, "py.warnings": logging.WARNING}


class LibraryChatter(logging.Filter):
    """A handler's filter: lowers the libraries' chatter (the `CHATTER` loggers and their children, up
    to their level) to DEBUG, then passes the records at `level` or above (the handler's level: its own
    check ran before the filter)."""

    def __init__(self, level: str | int = logging.INFO) -> None:
        super().__init__()
        self.level = logging.getLevelName(level) if isinstance(level, str) else level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= chatter_level(record.name):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.level


def chatter_level(name: str) -> int:
    """The level up to which the records of logger `name` are chatter; NOTSET (none are) for others."""
    for logger, level in CHATTER.items():
        if name == logger or name.startswith(f"{logger}."):
            return level
    return logging.NOTSET


class ToRoot(logging.Handler):
    """The handler of Lightning's loggers (which do not propagate): hands their records to the root
    logger's handlers, whichever they are (a DDP rank's moves its file: emotionvision/cli/ddp.py)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


class CaptureWarnings(Callback):
    """Hydra callback of every command: during a job, Python warnings are log records of `py.warnings`
    (the log file keeps them at DEBUG, `LibraryChatter`) instead of lines on stderr."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        logging.captureWarnings(True)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        logging.captureWarnings(False)
