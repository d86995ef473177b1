"""A training run's history (history.csv: one row per epoch) and the overfitting diagnostics drawn from it."""

from __future__ import annotations

import csv
from pathlib import Path

from emotionvision.atomic import atomic_open
from emotionvision.rundir import metric_key, paired_key, parse_metric_key

Curves = dict[str, dict[int, float]]  # column -> {epoch: value}


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    """history.csv: `epoch`, `time` (seconds since fit start at the epoch's end), then every logged
    epoch-level value in sorted order; a value missing in an epoch is left empty. Written atomically."""
    columns = ["epoch", "time", *sorted({key for row in rows for key in row} - {"epoch", "time"})]
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)


def read_history(path: Path) -> list[dict[str, float]]:
    """The rows of a history.csv ([] where there is none): epochs as ints, the rest as floats, empty
    cells left out."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        rows = [
            {key: float(value) for key, value in row.items() if value != ""} for row in csv.DictReader(handle)
        ]
    return [row | {"epoch": int(row["epoch"])} for row in rows]


def curves_of(rows: list[dict[str, float]]) -> Curves:
    """{column: {epoch: value}} of the history rows."""
    curves: Curves = {}
    for row in rows:
        for key, value in row.items():
            if key != "epoch":
                curves.setdefault(key, {})[int(row["epoch"])] = value
    return curves


def overfitting_summary(curves: Curves, monitor: str, mode: str, stopped_epoch: int | None) -> dict:
    """Train-vs-validation gaps of the loss and the monitored quantity at the best epoch (best
    `monitor` value, the first one on ties, as ModelCheckpoint keeps it) and the last epoch, and
    whether early stopping fired (`stopped_epoch` 0: it did not; None: unknown). Gaps are positive
    when training looks better."""
    monitored = curves[monitor]
    sign = 1 if mode == "max" else -1
    best_epoch = max(monitored, key=lambda epoch: (sign * monitored[epoch], -epoch))
    last_epoch = max(monitored)
    return {
        "monitor": monitor,
        "best_epoch": best_epoch,
        "last_epoch": last_epoch,
        "at_best_epoch": _gaps(curves, best_epoch, monitor, mode),
        "at_last_epoch": _gaps(curves, last_epoch, monitor, mode),
        "early_stopping_fired": None if stopped_epoch is None else stopped_epoch > 0,
        "early_stopping_epoch": stopped_epoch or None,
    }


def _gaps(curves: Curves, epoch: int, monitor: str, mode: str) -> dict[str, float | None]:
    gaps: dict[str, float | None] = {}
    for quantity, higher_is_better in ((metric_key("val", "loss"), False), (monitor, mode == "max")):
        train, val = paired_key(quantity, "train"), paired_key(quantity, "val")
        values = [curves.get(tag, {}).get(epoch) for tag in (train, val)]
        gaps[train] = values[0]
        gaps[val] = values[1]
        if None not in values:
            difference = values[0] - values[1]
            gaps[f"{parse_metric_key(val).name}_gap"] = difference if higher_is_better else -difference
    return gaps


def overfitting_text(summary: dict) -> str:
    """The overfitting diagnostics in words."""
    lines = [
        f"Validation {summary['monitor']} was best at epoch {summary['best_epoch']} "
        f"(last epoch: {summary['last_epoch']})."
    ]
    for name in ("best", "last"):
        gaps = summary[f"at_{name}_epoch"]
        parts = [f"{tag} {_number(value)}" for tag, value in gaps.items() if "/" in tag]
        parts += [f"{tag} {_number(value, '+.4f')}" for tag, value in gaps.items() if tag.endswith("_gap")]
        lines.append(f"At the {name} epoch ({summary[f'{name}_epoch']}): " + ", ".join(parts) + ".")
    fired = summary["early_stopping_fired"]
    if fired is None:
        lines.append("Early stopping: unknown (no EarlyStopping callback in the run).")
    elif fired:
        lines.append(f"Early stopping fired at epoch {summary['early_stopping_epoch']}.")
    else:
        lines.append("Early stopping did not fire.")
    lines.append(
        "Gaps: how much better training looks than validation (loss: validation minus training); "
        "large positive gaps suggest overfitting. Training values are averages over each epoch's "
        "(augmented) batches."
    )
    return "\n".join(lines) + "\n"


def _number(value: float | None, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)
