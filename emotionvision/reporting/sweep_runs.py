"""The finished runs of sweeps: loaded from their run directories, labelled with their variant (the
overrides that differ between runs) and paired by seed (and by fold, for cross-validations).
Evaluation runs (`emotionvision-eval`, e.g. of an ensemble of a sweep's checkpoints) stand beside
them, each its own variant, paired with none."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from emotionvision.reporting.statistics import PairedDifference, paired_difference
from emotionvision.rundir import RunDir, find_run_dirs, headline_keys, metric_key, parse_metric_key

log = logging.getLogger(__name__)

PAIRING_KEY = "seed"
FOLD_KEY = "data.fold"
NOT_SWEPT = "(default)"


@dataclass
class Run:
    """One finished run of a sweep: its overrides, seed, cross-validation fold (or None), test metrics
    and split digest; an evaluation run has no seed and names the `checkpoints` it evaluated (several:
    an ensemble) and its test-time augmentation `tta`."""

    path: Path
    overrides: dict[str, object]
    seed: int | None
    fold: int | None
    metrics: dict[str, float]
    test_images: int
    train_images: int | None
    split_digest: str | None
    variant: str = ""
    checkpoints: list[str] | None = None
    tta: str = "none"

    @property
    def pair(self) -> tuple[int | None, int | None]:
        """What a run is paired on across variants: its seed and fold."""
        return self.seed, self.fold

    @property
    def pair_name(self) -> str:
        seed = "no seed" if self.seed is None else f"seed {self.seed}"
        return seed + ("" if self.fold is None else f", fold {self.fold}")

    @property
    def evaluation(self) -> bool:
        """True for an emotionvision-eval run of checkpoints, False for a training run."""
        return self.checkpoints is not None


def load_runs(multirun_dirs: list[Path]) -> list[Run]:
    """Every run under the sweep directories with metrics, in job order; runs without them are
    skipped."""
    for multirun_dir in multirun_dirs:
        if not multirun_dir.is_dir():
            raise FileNotFoundError(f"{multirun_dir} is not a directory: pass multirun (sweep) directories.")
    runs = []
    for run_dir in (run_dir for multirun_dir in multirun_dirs for run_dir in find_run_dirs(multirun_dir)):
        if run_dir.metrics.is_file():
            runs.append(_load_run(run_dir))
        else:
            log.warning("Skipping %s: no %s (failed or still running).", run_dir.path, run_dir.metrics.name)
    if not runs:
        raise FileNotFoundError(
            f"No finished runs under {', '.join(map(str, multirun_dirs))} (looked for run directories "
            "with Hydra's overrides and their metrics). Pass the directory a `emotionvision-train -m ...` "
            "sweep wrote."
        )
    return runs


def _load_run(run_dir: RunDir) -> Run:
    lines = OmegaConf.to_container(OmegaConf.load(run_dir.overrides))
    overrides = {
        override.get_key_element(): _scalar(override.value())
        for override in OverridesParser.create().parse_overrides(lines)
    }
    config = run_dir.read_config()
    metrics = run_dir.read_metrics()
    checkpoints = metrics.get("checkpoints")  # an evaluation run's
    if metric_key("test", "acc") not in metrics:
        fix = "evaluate data.split=test" if checkpoints else "the sweep ran with test=false"
        raise ValueError(f"{run_dir.metrics} has no test metrics: {fix}.")
    split = run_dir.split
    seed = config.get(PAIRING_KEY)
    return Run(
        path=run_dir.path,
        overrides=overrides,
        seed=None if checkpoints else int(seed),
        fold=None if checkpoints else OmegaConf.select(config, FOLD_KEY),
        metrics={name: value for name, value in metrics.items() if isinstance(value, float | int)},
        test_images=int(np.sum(metrics[metric_key("test", "confusion_matrix")])),
        train_images=train_count(split) if split.is_file() else None,
        # an evaluation records the digest of the split manifest it read
        split_digest=split_digest(split) if split.is_file() else metrics.get("split_digest"),
        checkpoints=checkpoints,
        tta=metrics.get("tta", "none"),
    )


def split_digest(manifest: Path) -> str:
    """SHA-1 of the manifest's image, label and split columns (other columns, e.g. face boxes, aside)."""
    with manifest.open(newline="") as handle:
        rows = [(row["path"], row["label"], row["split"]) for row in csv.DictReader(handle)]
    return hashlib.sha1(repr(rows).encode()).hexdigest()


def train_count(manifest: Path) -> int:
    """The training images of a split manifest."""
    with manifest.open(newline="") as handle:
        return sum(row["split"] == "train" for row in csv.DictReader(handle))


def _scalar(value: object) -> object:
    """Override values as TensorBoard hparams take them: numbers, strings and booleans."""
    return value if isinstance(value, int | float | str | bool) else str(value)


def swept_keys(runs: list[Run]) -> list[str]:
    """Override keys whose values differ between training runs (what tells variants apart), the
    pairing keys (seed, fold) left out."""
    runs = [run for run in runs if not run.evaluation]
    keys = dict.fromkeys(key for run in runs for key in run.overrides)
    return [
        key
        for key in keys
        if key not in (PAIRING_KEY, FOLD_KEY)
        and len({str(run.overrides.get(key, NOT_SWEPT)) for run in runs}) > 1
    ]


def shown_values(runs: list[Run], key: str) -> dict[str, str]:
    """{value: as a label shows it} of one swept key: paths after the folder they share
    ('.../<run>/checkpoints/best-epoch011.ckpt'), so that labels show what differs; other values whole."""
    values = list(dict.fromkeys(str(run.overrides.get(key, NOT_SWEPT)) for run in runs))
    paths = [value for value in values if "/" in value]
    try:
        shared = os.path.commonpath(paths) if len(paths) > 1 else ""
    except ValueError:  # absolute and relative paths
        shared = ""
    if shared in ("", "/") or shared in paths:
        return {value: value for value in values}
    return {value: f".../{os.path.relpath(value, shared)}" if value in paths else value for value in values}


def evaluation_variant(run: Run) -> str:
    """An evaluation run's label: what it evaluated and where from ('ensemble of 5 checkpoints from
    <sweep>', 'best-epoch007.ckpt from <run>'), and its tta: two ensembles of different sweeps differ."""
    checkpoints = [Path(path) for path in run.checkpoints or []]
    several = len(checkpoints) > 1
    name = f"ensemble of {len(checkpoints)} checkpoints" if several else checkpoints[0].name
    source = Path(os.path.commonpath(checkpoints)) if several else checkpoints[0].parent
    if source.name == "checkpoints":
        source = source.parent
    label = f"{name} from {source.name}" if source.name else name
    return label + ("" if run.tta == "none" else f", tta={run.tta}")


def checkpoint_variant(runs: list[Run], evaluation: Run) -> str | None:
    """The training variant whose run directories hold every checkpoint of `evaluation` (an ensemble of
    a sweep's checkpoints: that sweep's variant); None when they are not one variant's runs."""
    run_dirs = {run.path.resolve(): run.variant for run in runs if not run.evaluation}
    variants = set()
    for checkpoint in (Path(path).resolve() for path in evaluation.checkpoints or []):
        holders = {variant for folder, variant in run_dirs.items() if checkpoint.is_relative_to(folder)}
        if not holders:
            return None
        variants |= holders
    return variants.pop() if len(variants) == 1 else None


def assign_variants(runs: list[Run], keys: list[str]) -> list[str]:
    """Label each training run with its values of the swept keys, each evaluation run with what it
    evaluated; the variant names in order of first run, training runs' first."""
    alone = "single models" if any(run.evaluation for run in runs) else "all runs"
    shown = {key: shown_values(runs, key) for key in keys}
    for run in runs:
        if run.evaluation:
            run.variant = evaluation_variant(run)
        else:
            values = [f"{key}={shown[key][str(run.overrides.get(key, NOT_SWEPT))]}" for key in keys]
            run.variant = ", ".join(values) or alone
    seen = {}
    for run in runs:
        if (run.variant, run.pair) in seen:
            raise ValueError(
                f"Runs {seen[run.variant, run.pair]} and {run.path} are the same variant ({run.variant}) "
                f"with the same {run.pair_name}: give each run of a variant its own seed."
            )
        seen[run.variant, run.pair] = run.path
    return list(dict.fromkeys(run.variant for run in sorted(runs, key=lambda run: run.evaluation)))


def metric_names(runs: list[Run]) -> list[str]:
    """The headline metrics, then the per-class recalls, as found in the runs."""
    recalls = sorted({name for run in runs for name in run.metrics if _is_test_recall(name)})
    return [*headline_keys(), *recalls]


def _is_test_recall(key: str) -> bool:
    parsed = parse_metric_key(key)
    return (
        parsed is not None and parsed.stage == "test" and parsed.name == "recall" and bool(parsed.class_name)
    )


def values_by_pair(runs: list[Run], variant: str, metric: str) -> dict[tuple[int, int | None], float]:
    """{(seed, fold): value} of one metric for the runs of one variant."""
    return {run.pair: run.metrics[metric] for run in runs if run.variant == variant and metric in run.metrics}


def test_train_ratio(runs: list[Run]) -> float | None:
    """Mean test over training images of cross-validation runs (None without folds, or without the
    training counts), for the corrected resampled t-test."""
    ratios = [run.test_images / run.train_images for run in runs if run.fold is not None and run.train_images]
    return float(np.mean(ratios)) if ratios else None


def pair_unit(runs: list[Run]) -> str:
    """What the runs are paired on, in words."""
    seeds, folds = len({run.seed for run in runs}), {run.fold for run in runs} - {None}
    if not folds:
        return "seeds"
    return "folds" if seeds == 1 else "seed-folds"


def summary_rows(runs: list[Run], variants: list[str], metrics: list[str]) -> list[dict[str, object]]:
    """Per variant: number of runs, and mean and standard deviation (over seeds and folds) of each
    metric."""
    rows = []
    for variant in variants:
        row: dict[str, object] = {"variant": variant, "runs": sum(run.variant == variant for run in runs)}
        for metric in metrics:
            values = np.array(list(values_by_pair(runs, variant, metric).values()))
            row[f"{metric} mean"] = float(values.mean())
            row[f"{metric} std"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
    return rows


def shares_pairs(runs: list[Run], variant: str, other: str) -> bool:
    """True when runs of the two variants share a seed and fold (evaluation runs share none)."""
    pairs = {run.pair for run in runs if run.variant == variant and not run.evaluation}
    return any(run.pair in pairs for run in runs if run.variant == other and not run.evaluation)


def paired_differences(
    runs: list[Run], variants: list[str], confidence: float = 0.95
) -> list[PairedDifference]:
    """Each variant against the first (the reference), on the headline metrics over shared seeds and
    folds; variants that share none with it (evaluation runs) are left out."""
    reference = variants[0]
    results = []
    for treatment in (variant for variant in variants[1:] if shares_pairs(runs, reference, variant)):
        for metric in headline_keys():
            reference_values = values_by_pair(runs, reference, metric)
            treatment_values = values_by_pair(runs, treatment, metric)
            pairs = sorted(reference_values.keys() & treatment_values.keys(), key=str)
            results.append(
                paired_difference(
                    metric,
                    reference,
                    treatment,
                    np.array([reference_values[pair] for pair in pairs]),
                    np.array([treatment_values[pair] for pair in pairs]),
                    confidence,
                    unit=pair_unit(runs),
                    test_train_ratio=test_train_ratio(runs),
                )
            )
    return results
