"""Reading checkpoints safely (tensors and plain data only, never arbitrary pickled objects), checking
that one fits the model it is loaded into, and transfer: starting a model from the backbone and matching
class rows of a checkpoint. Every bad file ends in one `UsageError` line naming the option it came from
(ckpt_path, resume=..., model.init_from) and what is wrong with it."""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from emotionvision.atomic import atomic_open
from emotionvision.errors import UsageError
from emotionvision.models.backbones import BACKBONES, TIMM, head_names

log = logging.getLogger(__name__)

# what a checkpoint to continue training (Trainer.fit(ckpt_path=...)) holds besides the model
TRAINING_STATE = ("optimizer_states", "loops")
# what only continuing the training reads, dropped from a finished run's checkpoints (`drop_training_state`):
# the optimizer and scheduler states, the callbacks' (random state, early stopping, ...) and weight
# averaging's trained weights and step count (emotionvision/callbacks/averaging.py). What is kept is
# what Lightning's weights-only checkpoints (best-*.ckpt) hold: the model, its hyperparameters, the loops
RESUME_ONLY = ("optimizer_states", "lr_schedulers", "callbacks", "current_model_state", "averaging_state")
# the hyperparameters a model is rebuilt from that a checkpoint continued by ckpt_path must share
ARCHITECTURE = ("backbone", "name", "stem", "input_size")


class UnsafeCheckpointError(UsageError):
    """A checkpoint holds pickled objects that only a full (code-running) unpickling could load."""


def read_checkpoint(path: str | Path, option: str = "ckpt_path") -> dict:
    """The checkpoint dict, read with `torch.load(weights_only=True)`; nothing in it is executed.
    UsageError (one line, naming `option`) for a missing, empty, truncated or damaged file, a file
    torch.save did not write, and one holding pickled objects (`UnsafeCheckpointError`)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"Checkpoint {path} does not exist ({option}).")
    _check_archive(path, option)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        unsafe = re.search(r"GLOBAL (\S+)", str(error))
        if unsafe is None:  # a pickle the safe unpickler cannot parse: damaged, not hostile
            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
            reason = detail.group(1).strip() if detail else str(error).splitlines()[0]
            raise UsageError(
                f"{option}: {path} is damaged: its pickled data cannot be read ({reason})."
            ) from None
        raise UnsafeCheckpointError(
            f"Refusing to load {path} ({option}): it holds more than tensors and plain data (unsupported "
            f"GLOBAL {unsafe.group(1)}). Unpickling it could run arbitrary code, so it is not loaded. Use "
            "a checkpoint written by emotionvision-train."
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as error:
        reason = (str(error).strip().splitlines() or [repr(error)])[0].split(". ")[0]
        raise UsageError(f"{option}: {path} is not a readable PyTorch checkpoint ({reason}).") from error
    if not isinstance(checkpoint, dict):
        raise UsageError(
            f"{option}: {path} holds a {type(checkpoint).__name__}, not a checkpoint of emotionvision-train."
        )
    return checkpoint


def _check_archive(path: Path, option: str) -> None:
    """UsageError unless `path` is a complete zip archive, the only format torch.save writes since
    PyTorch 1.6 (and emotionvision-train ever wrote)."""
    size = path.stat().st_size
    if size == 0:
        raise UsageError(
            f"{option}: {path} is empty (0 bytes), not a checkpoint: an interrupted copy or write?"
        )
    if zipfile.is_zipfile(path):
        return
    with path.open("rb") as handle:
        start = handle.read(4)
    if start.startswith(b"PK"):
        raise UsageError(
            f"{option}: {path} is truncated ({size} bytes, the end of its archive is missing): an "
            "interrupted write or copy. Use another checkpoint, or copy it again."
        )
    kind = "a bare pickle or a legacy torch.save file" if start[:1] == b"\x80" else "not a zip archive"
    raise UsageError(
        f"{option}: {path} is not a checkpoint of emotionvision-train ({kind}; torch.save writes a zip "
        "archive): pass a .ckpt file from a run's checkpoints/ folder."
    )


def classifier_hparams(checkpoint: dict, path: str | Path, option: str = "ckpt_path") -> dict:
    """The hyperparameters of an EmotionClassifier checkpoint; UsageError for another kind of file."""
    hparams = checkpoint.get("hyper_parameters")
    if (
        not isinstance(checkpoint.get("state_dict"), Mapping)
        or not isinstance(hparams, Mapping)
        or not isinstance(hparams.get("class_names"), list | tuple)
        or "backbone" not in hparams
    ):
        raise UsageError(
            f"{path} is not an EmotionClassifier checkpoint (no state_dict or no class_names in "
            f"hyper_parameters; {option}): pass a .ckpt file from a run's checkpoints/ folder."
        )
    return dict(hparams)


def check_recorded_input_size(hparams: Mapping, path: str | Path, option: str = "ckpt_path") -> None:
    """UsageError where the checkpoint records a backbone this version does not know, or an image size
    its backbone cannot take: emotionvision-train cannot have written it so (its hyperparameters were
    edited, or it comes from another program), and no setting of the command fixes it."""
    backbone, size = hparams.get("backbone"), hparams.get("input_size")
    if backbone == TIMM:
        return
    if backbone not in BACKBONES:
        raise UsageError(
            f"{option}: {path} holds a '{backbone}' model, which this version of emotionvision does not "
            f"know (known: {sorted([*BACKBONES, TIMM])})."
        )
    spec = BACKBONES[backbone]
    if not isinstance(size, int) or not spec.accepts(size):
        takes = f"images of at least {spec.min_input_size} px"
        if spec.size_multiple > 1:
            takes += f", a multiple of {spec.size_multiple}"
        raise UsageError(
            f"{option}: {path} records input_size={size}, but its {backbone} takes {takes}: "
            "emotionvision-train cannot have written this checkpoint (were its hyper_parameters edited?), "
            "and no setting fixes it; use the checkpoint as training wrote it."
        )


def check_state(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    option: str,
    class_names: Sequence[str],
    heads: Sequence[str],
    prefix: str = "",
) -> None:
    """UsageError (one line) unless the state dict `state` has the keys and shapes of `model`'s, where
    `model` was built from the checkpoint's own hyperparameters. A class head (`heads`, under `prefix`)
    with another number of rows than the checkpoint's `class_names` is named with both."""
    check_heads(state, path, option, class_names, heads, prefix)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [
        f"{key} is {list(state[key].shape)} there, {list(value.shape)} in the model"
        for key, value in expected.items()
        if key in state and state[key].shape != value.shape
    ]
    problems = [
        *([f"{len(missing)} weights missing ({', '.join(missing[:3])}...)"] if missing else []),
        *([f"{len(unexpected)} unknown weights ({', '.join(unexpected[:3])}...)"] if unexpected else []),
        *([f"{len(wrong)} of another shape ({wrong[0]})"] if wrong else []),
    ]
    if problems:
        raise UsageError(
            f"{option}: {path} does not fit the model its hyper_parameters describe: {'; '.join(problems)}."
        )


def check_heads(
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    option: str,
    class_names: Sequence[str],
    heads: Sequence[str],
    prefix: str = "",
) -> None:
    """UsageError naming both where a class head (`heads`, under `prefix` in the state dict `state`) has
    another number of rows than the checkpoint's `class_names`: its rows cannot be matched to classes."""
    for head in heads:
        weight = state.get(f"{prefix}{head}.weight")
        if weight is not None and weight.ndim == 2 and weight.shape[0] != len(class_names):
            raise UsageError(
                f"{option}: {path} disagrees with itself: its head {head} has {weight.shape[0]} rows "
                f"(classes) but its hyper_parameters name {len(class_names)} classes {list(class_names)}. "
                "Its rows cannot be matched to classes: use the checkpoint as training wrote it."
            )


def check_training_checkpoint(path: str | Path, model: nn.Module, option: str = "ckpt_path") -> None:
    """Before `Trainer.fit(ckpt_path=path)` loads it: UsageError (one line) unless `path` is a complete
    checkpoint of emotionvision-train holding the training state (a last.ckpt) of the same classes and
    architecture as `model`, this run's EmotionClassifier."""
    checkpoint = read_checkpoint(path, option)
    if isinstance(getattr(model, "class_names", None), list) and isinstance(model.hparams, Mapping):
        hparams = classifier_hparams(checkpoint, path, option)
        _check_same_model(checkpoint, hparams, model, path, option)
    lacking = [key for key in TRAINING_STATE if key not in checkpoint]
    if lacking:
        raise UsageError(
            f"{option}: {path} holds the model's weights only (no {', '.join(lacking)}: a best-*.ckpt, or "
            f"the last.ckpt of a finished run, kept whole only with keep_training_state=true). {option} "
            f"continues a training run from its checkpoints/last.ckpt; to start from these weights, use "
            f"model.init_from={path}."
        )


def drop_training_state(path: str | Path) -> bool:
    """Rewrite the checkpoint `path` without what only continuing its training reads (`RESUME_ONLY`),
    whole or not at all (emotionvision/atomic.py); eval, predict, export and model.init_from read the
    rest. Returns False, leaving the file alone, where it holds none of it (a weights-only checkpoint)."""
    checkpoint = read_checkpoint(path)
    if not any(key in checkpoint for key in RESUME_ONLY):
        return False
    with atomic_open(Path(path), "wb") as handle:
        torch.save({key: value for key, value in checkpoint.items() if key not in RESUME_ONLY}, handle)
    return True


def _check_same_model(
    checkpoint: dict, hparams: dict, model: nn.Module, path: str | Path, option: str
) -> None:
    """UsageError unless the checkpoint agrees with itself (head rows and class names) and its classes,
    architecture and weights are `model`'s (an EmotionClassifier)."""
    ours, theirs = list(model.class_names), list(hparams["class_names"])
    same_backbone = hparams["backbone"] == model.hparams.get("backbone")
    if hparams["backbone"] in BACKBONES:
        heads = BACKBONES[hparams["backbone"]].heads
    else:  # a timm model's heads depend on its architecture: known where it is ours
        heads = head_names(TIMM, model.model) if same_backbone else ()
    state = {key: value for key, value in checkpoint["state_dict"].items() if key != "class_weights"}
    check_heads(state, path, option, theirs, heads, prefix="model.")
    if theirs != ours:
        raise UsageError(
            f"{option}: {path} was trained on {len(theirs)} classes {theirs}, but this run's data have "
            f"{len(ours)} {ours}. {option} continues that training as it was; to start from its weights "
            f"on these classes, use model.init_from={path} (the rows of shared classes carry over)."
        )
    defaults = {"stem": "standard", "name": None}  # checkpoints older than these settings
    differ = [key for key in ARCHITECTURE if hparams.get(key, defaults.get(key)) != model.hparams.get(key)]
    if differ:
        theirs_text = ", ".join(f"{key}={hparams.get(key, defaults.get(key))}" for key in differ)
        ours_text = ", ".join(f"{key}={model.hparams.get(key)}" for key in differ)
        raise UsageError(
            f"{option}: {path} holds a model with {theirs_text}; this run builds one with {ours_text}: "
            "set the model and data.image_size it was trained with, or start from its weights with "
            f"model.init_from={path}."
        )
    check_state(model, state, path, option, theirs, heads, prefix="model.")


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
    checkpoint = read_checkpoint(path, "model.init_from")
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
    for head in heads:  # the head rows are matched to classes by the checkpoint's class names
        weight, bias = source.get(f"{head}.weight"), source.get(f"{head}.bias")
        rows = {tuple(tensor.shape[:1]) for tensor in (weight, bias) if tensor is not None}
        if weight is None or bias is None or rows != {(len(hparams["class_names"]),)}:
            found = "no" if weight is None else f"{weight.shape[0]} rows"
            raise UsageError(
                f"model.init_from {path} disagrees with itself: its head {head} has {found} (classes) but "
                f"its hyper_parameters name {len(hparams['class_names'])} classes "
                f"{list(hparams['class_names'])}. Its rows cannot be matched to classes: use the "
                "checkpoint as training wrote it."
            )
    body = {key: value for key, value in source.items() if key.rpartition(".")[0] not in heads}
    if backbone in BACKBONES and BACKBONES[backbone].adapt_weights is not None:
        body = BACKBONES[backbone].adapt_weights(model, body)  # e.g. a ViT trained at another image size
    try:
        result = model.load_state_dict(body, strict=False)
    except RuntimeError as error:  # a shape differs: PyTorch lists every one on lines of their own
        first = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), "")
        raise UsageError(f"model.init_from {path} does not fit {backbone}: {first or error}") from None
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
