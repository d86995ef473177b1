"""Loading checkpoints safely: tensors and plain data only, never arbitrary pickled objects."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from emotionvision.models.classifier import EmotionClassifier


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds pickled objects that only a full (code-running) unpickling could load."""


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, read with `torch.load(weights_only=True)`; nothing in it is executed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist (ckpt_path).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        reason = str(error).split("WeightsUnpickler error:")[-1].strip().split(". ")[0]
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: it holds more than tensors and plain data ({reason}). "
            "Unpickling it could run arbitrary code, so it is not loaded. Use a checkpoint written by "
            "emotionvision-train."
        ) from None
    except (RuntimeError, EOFError, KeyError) as error:
        raise ValueError(f"{path} is not a PyTorch checkpoint ({error!r}).") from error


def load_classifier(path: str | Path) -> EmotionClassifier:
    """The trained classifier of a Lightning checkpoint, in eval mode on the CPU.

    Class names, input size and normalisation come from the checkpoint's hyperparameters; the
    backbone is built without downloading or reading ImageNet weights (the state dict replaces them).
    """
    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters", {})
    if "state_dict" not in checkpoint or "class_names" not in hparams:
        raise ValueError(
            f"{path} is not an EmotionClassifier checkpoint (no state_dict or no class_names in "
            "hyper_parameters): pass a .ckpt file from a run's checkpoints/ folder."
        )
    model = EmotionClassifier(**(hparams | {"pretrained": False, "weights_path": None}))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
