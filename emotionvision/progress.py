"""Progress of the long steps (decoding images, face detection): tqdm's bar on a terminal; where the
output is not a terminal (nohup, CI, a log file), a log line every `LOG_EVERY` seconds with the rate
and the ETA instead, so a log shows how far a long step has come without a line per image."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")

# seconds between two progress lines in a log (the first comes after as long: quick steps log none)
LOG_EVERY = 30.0
LOG_FORMAT = "{desc}: {percentage:.0f}% ({n_fmt}/{total_fmt}), {rate_fmt}, {elapsed} elapsed, ETA {remaining}"


def interactive() -> bool:
    """True where both stdout (Lightning's progress bar, Hydra's console log) and stderr (tqdm's bars)
    are terminals: a bar redrawn in place is readable there, and garbles a file."""
    return sys.stdout.isatty() and sys.stderr.isatty()


class _LogLines:
    """A file for tqdm that logs each status line it writes (the carriage returns and the padding
    that redraw a bar in place dropped)."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, text: str) -> None:
        line = text.strip()
        if line:
            self.logger.info(line)

    def flush(self) -> None:
        """Nothing buffered: each line was logged."""


def progress(items: Iterable[T], total: int, desc: str, logger: logging.Logger) -> Iterator[T]:
    """`items` (`total` of them), shown as tqdm's bar on a terminal (`interactive`), else logged to
    `logger` every `LOG_EVERY` seconds and, where it logged, at the end: percentage, count, rate, ETA."""
    if interactive():
        return tqdm(items, total=total, desc=desc, unit="image", disable=not total)
    return tqdm(
        items,
        total=total,
        desc=desc,
        unit="image",
        disable=not total,
        file=_LogLines(logger),
        bar_format=LOG_FORMAT,
        mininterval=LOG_EVERY,
        delay=LOG_EVERY,
        miniters=1,  # the clock checked at every item (tqdm's monitor thread leaves a fixed miniters)
    )
