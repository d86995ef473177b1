"""Writing a file whole or not at all, and a full disk told in one line.

`atomic_open` writes to a hidden temporary file in the destination folder (`.<name>.partial`: the same
file system, so the final rename is atomic, and nothing goes to the system temp folder), flushes and
syncs it, then `os.replace`s it onto the destination: a reader, or a run killed mid-write, sees the old
file or the new one, never part of one. On any error the temporary file is removed and the destination
is left as it was. A full disk or quota (ENOSPC, EDQUOT) becomes a `DiskFullError` naming the file and
the space left, which the commands print as one line (emotionvision/errors.py `usage_error`).

Each file has one writer (rank zero writes a run's files): two processes writing the same file at once
would share its temporary name. A run killed mid-write leaves `.<name>.partial`, which the next write
of that file replaces.

This module imports only the standard library (emotionvision/rundir.py uses it).
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

FULL_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFullError(OSError):
    """No room to write `path`: its disk, or the user's quota on it, is full. Its message is one line
    naming the file and the free space on its file system."""

    def __init__(self, code: int, message: str, path: str | Path | None) -> None:
        super().__init__(code, message)
        self.path = path

    def __str__(self) -> str:
        return self.strerror


def full_disk_cause(error: BaseException | None) -> OSError | None:
    """The OSError of a full disk or quota (ENOSPC, EDQUOT) that `error` is or was raised from (torch's
    writer turns it into a RuntimeError "unexpected pos"); else None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in FULL_DISK_ERRNOS:
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def is_disk_full(error: BaseException) -> bool:
    """True for an OSError of a full disk or quota (ENOSPC, EDQUOT)."""
    return isinstance(error, OSError) and error.errno in FULL_DISK_ERRNOS


def disk_full_error(error: OSError, path: str | Path | None = None) -> DiskFullError:
    """`error` (ENOSPC or EDQUOT) as a DiskFullError naming `path` (default: the error's file name)
    and the space left on its file system (`shutil.disk_usage` of the nearest existing folder)."""
    if isinstance(error, DiskFullError):
        return error
    target = path if path is not None else error.filename
    what = "No space left on device" if error.errno == errno.ENOSPC else "Disk quota exceeded"
    if target is None:
        message = f"{what} while writing a file: free some space and run again."
    else:
        message = f"{what} writing {target}: {free_space(Path(target))}; free some space and run again."
    return DiskFullError(error.errno, message, target)


def naming_folder(error: BaseException, folder: str | Path) -> BaseException:
    """`error`, or where it comes from a full disk whose file is unknown (a library's own writer: a
    logger's metrics, TensorBoard's events), a DiskFullError naming `folder` and its free space."""
    full = full_disk_cause(error)
    if full is None or isinstance(full, DiskFullError) or full.filename is not None:
        return error
    what = "No space left on device" if full.errno == errno.ENOSPC else "Disk quota exceeded"
    message = f"{what} writing into {folder}: {free_space(Path(folder))}; free some space and run again."
    return DiskFullError(full.errno, message, folder)


def free_space(path: Path) -> str:
    """'1.2 MB free of 20.0 MB' for the file system holding `path` (or its nearest existing folder)."""
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return "free space unknown"
    return f"{_size(usage.free)} free of {_size(usage.total)} on its file system"


def _size(count: int) -> str:
    """'512 bytes', '20.9 MB' (decimal units)."""
    if count < 1000:
        return f"{count} bytes"
    value = float(count)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.1f} {unit}"


def partial_path(path: Path) -> Path:
    """The temporary file `atomic_open` writes `path` through: `.<name>.partial` beside it."""
    return path.with_name(f".{path.name}.partial")


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """`open(path, mode, **kwargs)` (mode "w" or "wb"; kwargs such as newline=), written through a
    temporary file beside `path` and moved onto it when the block ends without an error. The parent
    folder is created. A full disk raises DiskFullError; any error leaves no temporary file."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a whole file: mode 'w' or 'wb', not {mode!r}")
    target = Path(path)
    temporary = partial_path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = temporary.open(mode, **kwargs)
        try:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            with suppress(OSError):  # closes the file even where flushing its buffer fails again
                handle.close()
            raise
        handle.close()
        os.replace(temporary, target)
    except BaseException as error:
        full = full_disk_cause(error)
        full_error = None if full is None else disk_full_error(full, target)  # the space left now
        temporary.unlink(missing_ok=True)
        if full_error is not None:
            raise full_error from error
        raise


def write_text(path: str | Path, text: str) -> None:
    """`path` holds `text` (UTF-8), written whole or not at all (`atomic_open`)."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    """`path` holds `data`, written whole or not at all (`atomic_open`)."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
