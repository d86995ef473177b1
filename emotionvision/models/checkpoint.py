"""Reading checkpoints safely (tensors and plain data only, never arbitrary pickled objects), and
transfer: starting a model from the backbone and matching class rows of a checkpoint."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from torch import nn

from emotionvision.errors import UsageError
from emotionvision.models.backbones import BACKBONES, head_names

log = logging.getLogger(__name__)


class UnsafeCheckpointError(UsageError):
    """A checkpoint holds pickled objects that only a full (code-running) unpickling could load."""


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, read with `torch.load(weights_only=True)`; nothing in it is executed."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"Checkpoint {path} does not exist (ckpt_path).")
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
        raise UsageError(f"{path} is not a PyTorch checkpoint ({error!r}).") from error


def transfer_weights(
    model: nn.Module,
    backbone: str,
    stem: str,
    class_names: list[str],
    path: str | Path,
    class_map: dict | None = None,
    name: str | None = None,
) -> None:
    """Load the backbone weights of the EmotionVision checkpoint `path` into `model` (a registered
    `backbone` with the given `stem` and heads for `class_names`). Head rows carry over for the
    checkpoint's classes that are also ours, after renaming them by `class_map` ({checkpoint class: our
    class}); the other rows keep their fresh initialisation. `name` is the timm architecture of backbone
    "timm"."""
    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters", {})
    if "state_dict" not in checkpoint or "class_names" not in hparams:
        raise UsageError(f"model.init_from {path} is not a checkpoint written by emotionvision-train.")
    if hparams.get("backbone") != backbone:
        raise UsageError(
            f"model.init_from {path} holds a {hparams.get('backbone')} backbone but this model is a "
            f"{backbone}: set model={hparams.get('backbone')} (or start from a {backbone} checkpoint)."
        )
    if hparams.get("name") != name:
        raise UsageError(
            f"model.init_from {path} holds the timm model {hparams.get('name')} but this model is "
            f"{name}: set model.name={hparams.get('name')}."
        )
    if hparams.get("stem", "standard") != stem:
        raise UsageError(
            f"model.init_from {path} has model.stem={hparams.get('stem', 'standard')} but this model "
            f"has model.stem={stem}: set model.stem={hparams.get('stem', 'standard')}."
        )
    source = {key[6:]: value for key, value in checkpoint["state_dict"].items() if key.startswith("model.")}
    heads = head_names(backbone, model)
    body = {key: value for key, value in source.items() if key.rpartition(".")[0] not in heads}
    if backbone in BACKBONES and BACKBONES[backbone].adapt_weights is not None:
        body = BACKBONES[backbone].adapt_weights(model, body)  # e.g. a ViT trained at another image size
    result = model.load_state_dict(body, strict=False)
    unexpected_missing = [key for key in result.missing_keys if key.rpartition(".")[0] not in heads]
    if unexpected_missing or result.unexpected_keys:
        raise UsageError(f"model.init_from {path} does not fit {backbone}: {result}")
    renamed = [(class_map or {}).get(name, name) for name in hparams["class_names"]]
    shared = [(renamed.index(name), class_names.index(name)) for name in class_names if name in renamed]
    with torch.no_grad():
        for head in heads:
            layer: nn.Linear = model.get_submodule(head)
            for source_row, target_row in shared:
                layer.weight[target_row] = source[f"{head}.weight"][source_row]
                layer.bias[target_row] = source[f"{head}.bias"][source_row]
    log.info(
        "Initialised %s from %s; head rows carried over for %s",
        backbone, path, [class_names[row] for _, row in shared] or "no class",
    )  # fmt: skip
