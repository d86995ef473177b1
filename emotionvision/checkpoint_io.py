"""Checkpoint writing for `trainer.plugins` (conf/trainer/default.yaml): in a background thread, each
file complete under its final name or not there at all.

Lightning's `TorchCheckpointIO` serialises into memory, then writes through an fsspec transaction: a
temporary file in the system temp folder moved into place. That move is a copy (not atomic) when the
temp folder is on another file system, and the transaction is state of fsspec's process-wide local
file system: in a background thread (`AsyncCheckpointIO`) it captures the main thread's fsspec writes
(CSVLogger's metrics.csv) and can fail the save. `AtomicCheckpointIO` writes local files with plain
file calls instead: a hidden temporary file beside the target, fsync, `os.replace`
(emotionvision/atomic.py; a full disk removes the temporary file and is told in one line).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import CheckpointIO
from lightning.pytorch.plugins.io import AsyncCheckpointIO, TorchCheckpointIO

from emotionvision.atomic import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local files are written to `.<name>.partial` in the target's folder,
    synced to disk and renamed onto the target: a reader, or a run killed mid-write, sees the old file or
    the new one, never part of one. URLs (s3://..., file://...) are saved by `TorchCheckpointIO`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        # a failed save removes its temporary file; a later save overwrites a killed one's
        with atomic_open(Path(path).expanduser(), "wb") as handle:
            torch.save(checkpoint, handle)


class AsyncAtomicCheckpointIO(AsyncCheckpointIO):
    """Lightning's `AsyncCheckpointIO` (saves in a thread; the trainer's teardown, at the end of fit and
    on Ctrl-C or an error, waits for them) over `AtomicCheckpointIO` by default; removals queue behind
    the pending saves, so an old best checkpoint is removed after its successor is written, and a
    checkpoint removed while its own save is pending does not appear afterwards."""

    def __init__(self, checkpoint_io: CheckpointIO | None = None) -> None:
        super().__init__(checkpoint_io if checkpoint_io is not None else AtomicCheckpointIO())

    def remove_checkpoint(self, path: str | Path) -> None:
        assert self.checkpoint_io is not None
        self._submit(self.checkpoint_io.remove_checkpoint, path)

    def _submit(self, action: Callable[..., None], *args: Any) -> None:
        """Run `action(*args)` in the save thread, after the saves before it; its error is raised by
        the next save, removal or teardown."""

        def run() -> None:
            try:
                action(*args)
            except BaseException as error:
                self._error = error

        self._ensure_setup()
        assert self._executor is not None
        self._executor.submit(run)
        if self._error:
            raise self._error
