"""The contracts between the layers: the files of a run directory and the names of its metrics.

Every module that writes or reads a run's files names them through `RunDir`, and every module that makes
or reads a metric key does so through `metric_key` / `parse_metric_key` / `best_key`. This module sits
at the bottom: it imports only the standard library, OmegaConf and emotionvision.atomic (standard
library only).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf

from emotionvision.atomic import write_text

STAGES = ("train", "val", "test")
# an evaluation of a whole folder (emotionvision-eval data.root=...) reports its metrics as all/<name>
KEY_PREFIXES = (*STAGES, "all")
# the numbers a comparison, a cross-validation summary and a cross-data-set matrix lead with
HEADLINE_METRICS = ("acc", "macro_f1", "auroc")


@dataclass(frozen=True)
class RunDir:
    """A run directory (or an evaluation's output directory) and the files it holds."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def metrics(self) -> Path:
        """metrics.json: final metrics, training summary and evaluation coverage."""
        return self.path / "metrics.json"

    @property
    def split(self) -> Path:
        """split.csv: path, label, split, group (and face_box) of every image the run used."""
        return self.path / "split.csv"

    @property
    def skipped(self) -> Path:
        """skipped.csv: path, reason of every file left out."""
        return self.path / "skipped.csv"

    @property
    def faces(self) -> Path:
        """faces.png: a sample of the face crops."""
        return self.path / "faces.png"

    @property
    def history(self) -> Path:
        """history.csv: the per-epoch learning curves."""
        return self.path / "history.csv"

    @property
    def sanity(self) -> Path:
        """sanity.json: a sanity check's verdict."""
        return self.path / "sanity.json"

    @property
    def predictions(self) -> Path:
        """predictions.csv: each evaluated image's probabilities."""
        return self.path / "predictions.csv"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        """checkpoints/last.ckpt: what `resume=` continues from."""
        return self.checkpoints / "last.ckpt"

    @property
    def best_checkpoints(self) -> list[Path]:
        """checkpoints/best-*.ckpt: the best checkpoint by the monitored metric (one, unless the run
        kept more: callbacks.model_checkpoint.save_top_k)."""
        return sorted(self.checkpoints.glob("best-*.ckpt"))

    @property
    def hydra_dir(self) -> Path:
        return self.path / ".hydra"

    @property
    def config(self) -> Path:
        """.hydra/config.yaml: the composed config the run ran with."""
        return self.hydra_dir / "config.yaml"

    @property
    def overrides(self) -> Path:
        """.hydra/overrides.yaml: the run's command-line overrides."""
        return self.hydra_dir / "overrides.yaml"

    def before_training(self) -> set[str]:
        """Names of what a run writes before its first epoch ends, besides its loggers' folders and
        *.log: nothing a finished epoch writes (checkpoints/, history.csv, metrics.json). A skipped.csv
        that lists files is not among them: an error about the data points to it (the clean-up of a
        failed run's stub directory keeps it, emotionvision/cli/usage.py)."""
        written = [self.hydra_dir, self.split, self.faces]
        return {path.name for path in written} | (set() if self.lists_skipped() else {self.skipped.name})

    def lists_skipped(self) -> bool:
        """True where skipped.csv names at least one file (a row below its header)."""
        if not self.skipped.is_file():
            return False
        with self.skipped.open() as handle:
            next(handle, None)  # the header
            return next(handle, None) is not None

    def read_config(self) -> DictConfig:
        return OmegaConf.load(self.config)

    def read_metrics(self) -> dict:
        """metrics.json's contents; {} when the run has not written it."""
        return json.loads(self.metrics.read_text()) if self.metrics.is_file() else {}

    def merge_metrics(self, values: dict) -> dict:
        """Update metrics.json (created if missing) with `values`, written whole or not at all
        (emotionvision/atomic.py); returns the result."""
        merged = self.read_metrics() | values
        write_text(self.metrics, json.dumps(merged, indent=2))
        return merged


def find_run_dirs(folder: Path) -> list[RunDir]:
    """The run directories under `folder`, itself included (those with Hydra's overrides: the runs of
    a sweep, or one run), in job order: numeric path parts as numbers, so job 10 comes after job 9."""
    found = (RunDir(directory) for directory, _, _ in os.walk(folder))
    return sorted((run_dir for run_dir in found if run_dir.overrides.is_file()), key=_job_order)


def _job_order(run_dir: RunDir) -> list[tuple[int, str]]:
    return [(int(part), "") if part.isdigit() else (-1, part) for part in run_dir.path.parts]


class MetricKey(NamedTuple):
    """A logged metric's name: `<stage>/<name>`, or `<stage>/<name>/<class>` for a per-class one."""

    stage: str
    name: str
    class_name: str | None = None


def metric_key(stage: str, name: str, class_name: str | None = None) -> str:
    """'test/acc', or 'test/recall/sad' for a class's value."""
    return f"{stage}/{name}" if class_name is None else f"{stage}/{name}/{class_name}"


def parse_metric_key(key: str) -> MetricKey | None:
    """The parts of a key `metric_key` made; None for other keys (epoch, lr-AdamW, best_...)."""
    stage, _, rest = key.partition("/")
    if stage not in KEY_PREFIXES or not rest:
        return None
    name, _, class_name = rest.partition("/")
    return MetricKey(stage, name, class_name or None)


def best_key(monitor: str) -> str:
    """metrics.json's key of the best validation value of `monitor`: 'best_val/macro_f1'."""
    return f"best_{monitor}"


def headline_keys(stage: str = "test") -> tuple[str, ...]:
    """'test/acc', 'test/macro_f1', 'test/auroc'."""
    return tuple(metric_key(stage, name) for name in HEADLINE_METRICS)


def paired_key(monitor: str, stage: str) -> str:
    """The same quantity at another stage: ('val/acc', 'train') -> 'train/acc'."""
    parsed = parse_metric_key(monitor)
    name = parsed.name if parsed else monitor.split("/", 1)[-1]
    return metric_key(stage, name, parsed.class_name if parsed else None)
