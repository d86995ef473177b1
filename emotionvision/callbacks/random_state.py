"""The random number generators' state in every checkpoint, so a resumed run repeats an uninterrupted one."""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class RandomState(Callback):
    """Saves Python's, NumPy's and torch's (CPU and CUDA) random states with each checkpoint (as
    tensors and plain values: checkpoints still load with weights_only=True) and
    restores them when training starts after a resume: the augmentation drawn in the main process
    (`data.num_workers=0`) then continues as in a run that was never interrupted. (The shuffle order
    depends on seed and epoch alone: EpochShuffle. Loader workers are seeded afresh by a resumed
    run, so with workers its augmentation differs from the uninterrupted run's.)"""

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        name, keys, position, has_gauss, gauss = np.random.get_state()
        numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss]
        state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Apply a restored state here: after the resumed run's own start-up used the generators,
        before the first epoch's loader is set up."""
        if self.pending is None:
            return
        random.setstate(self.pending["python"])
        name, keys, position, has_gauss, gauss = self.pending["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        torch.set_rng_state(self.pending["torch"])
        if "cuda" in self.pending and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.pending["cuda"])
        self.pending = None
