"""Side-by-side results of sweeps: variants found from the overrides, paired by seed (and by fold, for
cross-validations)."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from hydra.core.override_parser.overrides_parser import OverridesParser
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from emotionvision.reporting.statistics import PairedDifference, paired_difference, wilson_interval

log = logging.getLogger(__name__)

HEADLINE_METRICS = ("test/acc", "test/macro_f1", "test/auroc")
PAIRING_KEY = "seed"
FOLD_KEY = "data.fold"
NOT_SWEPT = "(default)"


@dataclass
class Run:
    """One finished run of a sweep: its overrides, seed, cross-validation fold (or None), test metrics
    and split digest."""

    path: Path
    overrides: dict[str, object]
    seed: int
    fold: int | None
    metrics: dict[str, float]
    test_images: int
    train_images: int | None
    split_digest: str | None
    variant: str = ""

    @property
    def pair(self) -> tuple[int, int | None]:
        """What a run is paired on across variants: its seed and fold."""
        return self.seed, self.fold

    @property
    def pair_name(self) -> str:
        return f"seed {self.seed}" + ("" if self.fold is None else f", fold {self.fold}")


def load_runs(multirun_dirs: list[Path]) -> list[Run]:
    """Every run under the sweep directories with a metrics.json, in job order; runs without one are
    skipped."""
    for multirun_dir in multirun_dirs:
        if not multirun_dir.is_dir():
            raise FileNotFoundError(f"{multirun_dir} is not a directory: pass multirun (sweep) directories.")
    run_dirs = [
        run_dir
        for multirun_dir in multirun_dirs
        for run_dir in sorted(
            (p.parent.parent for p in multirun_dir.glob("**/.hydra/overrides.yaml")), key=_job_order
        )
    ]
    runs = []
    for run_dir in run_dirs:
        if (run_dir / "metrics.json").is_file():
            runs.append(_load_run(run_dir))
        else:
            log.warning("Skipping %s: no metrics.json (the run failed or is still running).", run_dir)
    if not runs:
        raise FileNotFoundError(
            f"No finished runs under {', '.join(map(str, multirun_dirs))} (looked for "
            "*/.hydra/overrides.yaml next to metrics.json). Pass the directory a `emotionvision-train -m "
            "...` sweep wrote."
        )
    return runs


def _job_order(run_dir: Path) -> list[tuple[int, str]]:
    """Sort key: numeric path parts as numbers, so job 10 comes after job 9."""
    return [(int(part), "") if part.isdigit() else (-1, part) for part in run_dir.parts]


def _load_run(run_dir: Path) -> Run:
    lines = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra/overrides.yaml"))
    overrides = {
        override.get_key_element(): _scalar(override.value())
        for override in OverridesParser.create().parse_overrides(lines)
    }
    config = OmegaConf.load(run_dir / ".hydra/config.yaml")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if "test/acc" not in metrics:
        raise ValueError(f"{run_dir / 'metrics.json'} has no test metrics: the sweep ran with test=false.")
    split = run_dir / "split.csv"
    return Run(
        path=run_dir,
        overrides=overrides,
        seed=int(config[PAIRING_KEY]),
        fold=OmegaConf.select(config, FOLD_KEY),
        metrics={name: value for name, value in metrics.items() if isinstance(value, float | int)},
        test_images=int(np.sum(metrics["test/confusion_matrix"])),
        train_images=train_count(split) if split.is_file() else None,
        split_digest=split_digest(split) if split.is_file() else None,
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
    """Override keys whose values differ between runs, the pairing keys (seed, fold) left out."""
    keys = dict.fromkeys(key for run in runs for key in run.overrides)
    return [
        key
        for key in keys
        if key not in (PAIRING_KEY, FOLD_KEY)
        and len({str(run.overrides.get(key, NOT_SWEPT)) for run in runs}) > 1
    ]


def assign_variants(runs: list[Run], keys: list[str]) -> list[str]:
    """Label each run with its values of the swept keys; the variant names in order of first run."""
    for run in runs:
        run.variant = ", ".join(f"{key}={run.overrides.get(key, NOT_SWEPT)}" for key in keys) or "all runs"
    seen = {}
    for run in runs:
        if (run.variant, run.pair) in seen:
            raise ValueError(
                f"Runs {seen[run.variant, run.pair]} and {run.path} are the same variant ({run.variant}) "
                f"with the same {run.pair_name}: give each run of a variant its own seed."
            )
        seen[run.variant, run.pair] = run.path
    return list(dict.fromkeys(run.variant for run in runs))


def metric_names(runs: list[Run]) -> list[str]:
    """The headline metrics, then the per-class recalls, as found in the runs."""
    recalls = sorted({name for run in runs for name in run.metrics if name.startswith("test/recall/")})
    return [*HEADLINE_METRICS, *recalls]


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


def paired_differences(
    runs: list[Run], variants: list[str], confidence: float = 0.95
) -> list[PairedDifference]:
    """Each variant against the first (the reference), on the headline metrics over shared seeds and
    folds."""
    reference = variants[0]
    results = []
    for treatment in variants[1:]:
        for metric in HEADLINE_METRICS:
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


def summary_figure(runs: list[Run], variants: list[str]) -> Figure:
    """A panel per headline metric: a bar per variant (mean), a point per seed (and fold), lines join
    a pair's runs."""
    figure, axes = plt.subplots(
        1, len(HEADLINE_METRICS), figsize=(1.5 + 1.6 * len(variants) * len(HEADLINE_METRICS), 4.5)
    )
    positions = np.arange(len(variants))
    for axis, metric in zip(axes, HEADLINE_METRICS, strict=True):
        by_variant = [values_by_pair(runs, variant, metric) for variant in variants]
        axis.bar(positions, [np.mean(list(values.values())) for values in by_variant], color="#9ecae1")
        for pair in sorted({run.pair for run in runs}, key=str):
            points = [
                (x, values[pair]) for x, values in zip(positions, by_variant, strict=True) if pair in values
            ]
            axis.plot(*zip(*points, strict=True), marker="o", color="#3182bd", alpha=0.6, linewidth=0.8)
        axis.set_xticks(positions, [_wrap(variant) for variant in variants], fontsize=8)
        axis.set_title(metric)
        axis.set_ylim(0, 1)
    unit = pair_unit(runs).removesuffix("s")
    figure.suptitle(f"Mean per variant (bars) and one point per {unit} (lines join a {unit}'s runs)")
    figure.tight_layout()
    return figure


def _wrap(variant: str) -> str:
    return variant.replace(", ", "\n")


def markdown_report(
    runs: list[Run],
    variants: list[str],
    metrics: list[str],
    differences: list[PairedDifference],
    confidence: float = 0.95,
) -> str:
    """The summary table, the paired differences with their verdicts, and caveats."""
    rows = summary_rows(runs, variants, metrics)
    header = ["variant", "runs", *[metric.removeprefix("test/") for metric in metrics]]
    lines = [f"# Comparison of {len(runs)} runs", "", _table_line(header), _table_line(["---"] * len(header))]
    for row in rows:
        cells = [_mean_std(row[f"{metric} mean"], row[f"{metric} std"]) for metric in metrics]
        lines.append(_table_line([row["variant"], str(row["runs"]), *cells]))
    lines += ["", f"Mean ± standard deviation over {pair_unit(runs)} of test-split metrics.", ""]
    lines += _noise_notes(runs, variants, rows, confidence)
    if differences:
        lines += ["", f"## Paired differences from {variants[0]} (by {pair_unit(runs)})", ""]
        lines += [f"- {difference.sentence()}" for difference in differences]
        pairs = min(difference.pairs for difference in differences)
        floor = 2 / 2**pairs  # the Wilcoxon signed-rank test's smallest two-sided p with `pairs` pairs
        lines += [
            "",
            f"{'Paired' if test_train_ratio(runs) is None else 'The corrected resampled'} t-test decides "
            f"significance; the Wilcoxon signed-rank p-values are in paired.csv (with {pairs} pairs its "
            f"smallest two-sided p is {floor:.3g}"
            + (f", so it cannot reach {1 - confidence:.0%} on its own)." if floor > 1 - confidence else ")."),
        ]
    return "\n".join(lines) + "\n"


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def _table_line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _noise_notes(
    runs: list[Run], variants: list[str], rows: list[dict[str, object]], confidence: float
) -> list[str]:
    """How large test-set sampling noise is, and whether the runs of a fold (or all runs, without
    folds) used the same split."""
    splits_of_fold: dict[int | None, set[tuple[str | None, int]]] = defaultdict(set)
    for run in runs:
        splits_of_fold[run.fold].add((run.split_digest, run.test_images))
    tested = sum(min(size for _, size in splits) for splits in splits_of_fold.values())
    notes = []
    for row, variant in zip(rows, variants, strict=True):
        accuracy = float(row["test/acc mean"])
        low, high = wilson_interval(round(accuracy * tested), tested, confidence)
        notes.append(
            f"- {variant}: an accuracy of {accuracy:.3f} on {tested} test images has a "
            f"{confidence:.0%} Wilson interval of {low:.3f}-{high:.3f} from test-set sampling alone."
        )
    mixed = [
        splits
        for splits in splits_of_fold.values()
        if len(splits) > 1 or any(digest is None for digest, _ in splits)
    ]
    folds = len(splits_of_fold) if None not in splits_of_fold else 0
    if mixed:
        notes.append(
            f"- WARNING: the runs do not share one split{' per fold' if folds else ''} (split.csv digests "
            f"and test sizes: {sorted(map(str, mixed[0]))}): paired differences mix split and variant "
            "effects."
        )
    elif folds:
        notes.append(f"- Each fold's runs used the same split ({folds} folds, {tested} test images in all).")
    else:
        notes.append(f"- Every run used the same split (identical split.csv, {tested} test images).")
    notes += ["", _pairing_note(folds)]
    return notes


def _pairing_note(folds: int) -> str:
    if folds:
        return (
            "Runs are paired fold by fold: both variants are scored on each fold's test images. Folds "
            "share training images, so a plain paired t-test is optimistic; significance is decided by "
            "Nadeau and Bengio's corrected resampled t-test, which widens it by the test/train ratio."
        )
    return (
        "Seeds vary training only; all runs are scored on the same test images. A significant paired "
        "difference is reproducible across initialisations on this test set; whether it holds on new "
        "images is bounded by the test-set intervals above."
    )


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    columns = list(dict.fromkeys(column for row in rows for column in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def log_to_tensorboard(
    output_dir: Path, runs: list[Run], keys: list[str], report: str, figure: Figure
) -> None:
    """HParams of every run (swept keys and seed beside its test metrics), the figure and the report."""
    with SummaryWriter(output_dir) as writer:
        for run in runs:
            hparams = {key: run.overrides.get(key, NOT_SWEPT) for key in keys} | {PAIRING_KEY: run.seed}
            hparams |= {} if run.fold is None else {FOLD_KEY: run.fold}
            metrics = {name: value for name, value in run.metrics.items() if name.startswith("test/")}
            writer.add_hparams(hparams, metrics, run_name=run.path.name)
        writer.add_figure("compare/summary", figure)
        writer.add_text("compare/report", report)


def compare(multirun_dirs: list[Path], output_dir: Path, confidence: float = 0.95) -> str:
    """Write compare.md, summary.csv, paired.csv, runs.csv, compare.png and TensorBoard logs."""
    runs = load_runs(multirun_dirs)
    keys = swept_keys(runs)
    variants = assign_variants(runs, keys)
    metrics = metric_names(runs)
    differences = paired_differences(runs, variants, confidence)
    report = markdown_report(runs, variants, metrics, differences, confidence)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "compare.md").write_text(report)
    write_csv(output_dir / "summary.csv", summary_rows(runs, variants, metrics))
    write_csv(
        output_dir / "runs.csv",
        [
            {"run": str(run.path), "variant": run.variant, PAIRING_KEY: run.seed, FOLD_KEY: run.fold}
            | run.metrics
            for run in runs
        ],
    )
    if differences:
        rows = [vars(difference) | {"significant": difference.significant} for difference in differences]
        write_csv(output_dir / "paired.csv", rows)
    figure = summary_figure(runs, variants)
    figure.savefig(output_dir / "compare.png", dpi=120)
    log_to_tensorboard(output_dir / "tensorboard", runs, keys, report, figure)
    plt.close(figure)
    return report
