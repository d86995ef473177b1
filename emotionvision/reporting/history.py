"""A training run's history: per-epoch curves from its TensorBoard logs, early stopping from
its last checkpoint, and the overfitting diagnostics drawn from both."""

from __future__ import annotations

import logging
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emotionvision.models.checkpoint import read_checkpoint

log = logging.getLogger(__name__)
# the event reader logs each event file it opens at INFO
logging.getLogger("tensorboard").setLevel(logging.WARNING)

CURVE_TAGS = ("train/loss", "val/loss", "train/macro_f1", "val/macro_f1")


def read_epoch_curves(tensorboard_dir: Path) -> dict[str, dict[int, float]]:
    """{tag: {epoch: value}} of the CURVE_TAGS scalars; Lightning logs 'epoch' at the step of each
    epoch's metrics, which maps steps to epochs. Tags not logged are left out."""
    events = EventAccumulator(str(tensorboard_dir), size_guidance={"scalars": 0})
    events.Reload()
    logged = set(events.Tags()["scalars"])
    if "epoch" not in logged:
        return {}
    epoch_of_step = {event.step: int(event.value) for event in events.Scalars("epoch")}
    return {
        tag: {epoch_of_step[e.step]: e.value for e in events.Scalars(tag) if e.step in epoch_of_step}
        for tag in CURVE_TAGS
        if tag in logged
    }


def early_stopping_state(run_dir: Path) -> dict | None:
    """The EarlyStopping callback's state saved in `run_dir`/checkpoints/last.ckpt, or None."""
    last_checkpoint = run_dir / "checkpoints" / "last.ckpt"
    if not last_checkpoint.is_file():
        return None
    callbacks = read_checkpoint(last_checkpoint).get("callbacks", {})
    return next((state for name, state in callbacks.items() if name.startswith("EarlyStopping")), None)


def overfitting_summary(curves: dict[str, dict[int, float]], early_stopping: dict | None) -> dict:
    """Train-vs-validation gaps at the best and the last epoch, the best epoch (highest
    val/macro_f1, the first one on ties, as ModelCheckpoint keeps it) and whether early stopping
    fired. Gaps are positive when training looks better: val - train loss, train - val macro-F1."""
    val_f1 = curves["val/macro_f1"]
    best_epoch = max(val_f1, key=lambda epoch: (val_f1[epoch], -epoch))
    last_epoch = max(val_f1)
    stopped_epoch = int(early_stopping["stopped_epoch"]) if early_stopping else None
    return {
        "best_epoch": best_epoch,
        "last_epoch": last_epoch,
        "at_best_epoch": _gaps(curves, best_epoch),
        "at_last_epoch": _gaps(curves, last_epoch),
        # None: unknown (no last.ckpt with EarlyStopping state); Lightning leaves stopped_epoch at 0
        # unless it stopped the run
        "early_stopping_fired": None if stopped_epoch is None else stopped_epoch > 0,
        "early_stopping_epoch": stopped_epoch or None,
    }


def _gaps(curves: dict[str, dict[int, float]], epoch: int) -> dict[str, float | None]:
    values = {tag.replace("/", "_"): curves.get(tag, {}).get(epoch) for tag in CURVE_TAGS}
    return values | {
        "loss_gap": _difference(values["val_loss"], values["train_loss"]),
        "macro_f1_gap": _difference(values["train_macro_f1"], values["val_macro_f1"]),
    }


def _difference(first: float | None, second: float | None) -> float | None:
    return None if first is None or second is None else first - second


def overfitting_text(summary: dict) -> str:
    """The overfitting diagnostics in words."""
    lines = [
        f"Validation macro-F1 peaked at epoch {summary['best_epoch']} (last epoch: {summary['last_epoch']})."
    ]
    for key, name in (("at_best_epoch", "best"), ("at_last_epoch", "last")):
        gaps = summary[key]
        epoch = summary[f"{name}_epoch"]
        lines.append(
            f"At the {name} epoch ({epoch}): loss train {_number(gaps['train_loss'])}, val "
            f"{_number(gaps['val_loss'])} (gap {_number(gaps['loss_gap'], '+.4f')}); macro-F1 train "
            f"{_number(gaps['train_macro_f1'])}, val {_number(gaps['val_macro_f1'])} "
            f"(gap {_number(gaps['macro_f1_gap'], '+.4f')})."
        )
    fired = summary["early_stopping_fired"]
    if fired is None:
        lines.append("Early stopping: unknown (no EarlyStopping state in checkpoints/last.ckpt).")
    elif fired:
        lines.append(f"Early stopping fired at epoch {summary['early_stopping_epoch']}.")
    else:
        lines.append("Early stopping did not fire.")
    lines.append(
        "Gaps: validation minus training loss, training minus validation macro-F1; large positive "
        "gaps suggest overfitting. Training values are averages over each epoch's (augmented) batches."
    )
    return "\n".join(lines) + "\n"


def _number(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)
