"""Side-by-side results of sweeps (`emotionvision-compare`): the markdown report, CSV tables, figure and
TensorBoard logs of the runs `sweep_runs` loads and pairs."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from emotionvision.atomic import write_text
from emotionvision.reporting.figures import CHANCE_STYLE, save_png
from emotionvision.reporting.scores import chance_levels
from emotionvision.reporting.statistics import PairedDifference, wilson_interval
from emotionvision.reporting.sweep_runs import (
    FOLD_KEY,
    NOT_SWEPT,
    PAIRING_KEY,
    Run,
    assign_variants,
    checkpoint_variant,
    load_runs,
    metric_names,
    pair_unit,
    paired_differences,
    shares_pairs,
    summary_rows,
    swept_keys,
    test_train_ratio,
    values_by_pair,
)
from emotionvision.reporting.tables import metric_label, table_line, write_csv
from emotionvision.rundir import RunDir, headline_keys, metric_key, parse_metric_key


def summary_figure(runs: list[Run], variants: list[str]) -> Figure:
    """A panel per headline metric: a bar per variant (mean), a point per seed (and fold), lines join
    a pair's runs; the chance level (`chance_of`) as a dashed line."""
    metrics = headline_keys()
    chance, classes = chance_of(runs)
    figure = Figure(figsize=(1.5 + 1.6 * len(variants) * len(metrics), 4.5), layout="tight")
    positions = np.arange(len(variants))
    for axis, metric in zip(figure.subplots(1, len(metrics)), metrics, strict=True):
        by_variant = [values_by_pair(runs, variant, metric) for variant in variants]
        axis.bar(positions, [np.mean(list(values.values())) for values in by_variant], color="#9ecae1")
        for pair in sorted({run.pair for run in runs}, key=str):
            points = [
                (x, values[pair]) for x, values in zip(positions, by_variant, strict=True) if pair in values
            ]
            axis.plot(*zip(*points, strict=True), marker="o", color="#3182bd", alpha=0.6, linewidth=0.8)
        axis.set_xticks(positions, [variant.replace(", ", "\n") for variant in variants], fontsize=8)
        axis.set_title(metric)
        axis.set_ylim(0, 1)
        name = parse_metric_key(metric).name
        if name in chance:
            label = f"chance {chance[name]:.2f}: a uniform random\nguess among {classes} classes"
            axis.axhline(chance[name], label=label, **CHANCE_STYLE)
            axis.legend(loc="lower right", fontsize=7)
    unit = pair_unit(runs).removesuffix("s")
    figure.suptitle(f"Mean per variant (bars) and one point per {unit} (lines join a {unit}'s runs)")
    return figure


def chance_of(runs: list[Run]) -> tuple[dict[str, float], int]:
    """The headline metrics' chance levels (`chance_levels` of each run's test classes, averaged over
    the runs) and the number of classes; ({}, 0) where no run records its class counts."""
    supports = [[value for key, value in run.metrics.items() if _is_test_support(key)] for run in runs]
    supports = [support for support in supports if support]
    if not supports:
        return {}, 0
    levels = [chance_levels(support) for support in supports]
    return {name: float(np.mean([level[name] for level in levels])) for name in levels[0]}, len(supports[0])


def markdown_report(
    runs: list[Run],
    variants: list[str],
    metrics: list[str],
    differences: list[PairedDifference],
    confidence: float = 0.95,
) -> str:
    """The summary table, the paired differences with their verdicts, and caveats."""
    rows = summary_rows(runs, variants, metrics)
    header = ["variant", "runs", *map(metric_label, metrics)]
    lines = [f"# Comparison of {len(runs)} runs", "", table_line(header), table_line(["---"] * len(header))]
    for row in rows:
        cells = [_mean_std(row[f"{metric} mean"], row[f"{metric} std"]) for metric in metrics]
        lines.append(table_line([row["variant"], str(row["runs"]), *cells]))
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
    unpaired = _unpaired_lines(runs, variants)
    if unpaired:
        heading = f"## Not paired: each beside the runs of its checkpoints, else beside {variants[0]}"
        lines += ["", heading, "", *unpaired]
    return "\n".join(lines) + "\n"


def _unpaired_lines(runs: list[Run], variants: list[str]) -> list[str]:
    """For each variant that shares no seed or fold with the first (an evaluation run, e.g. an ensemble
    of a sweep's checkpoints): its headline metrics and how many runs it beats of the variant that holds
    its checkpoints (`checkpoint_variant`), else of the first; one run against a spread of runs, so no
    test."""
    lines = []
    for variant in variants[1:]:
        if shares_pairs(runs, variants[0], variant):
            continue
        run = next(run for run in runs if run.variant == variant)
        reference = (run.evaluation and checkpoint_variant(runs, run)) or variants[0]
        scores = []
        for metric in headline_keys():
            value = float(np.mean(list(values_by_pair(runs, variant, metric).values())))
            theirs = list(values_by_pair(runs, reference, metric).values())
            scores.append(f"{metric} {value:.3f} (above {sum(v < value for v in theirs)} of {len(theirs)})")
        lines.append(f"- {variant}: {', '.join(scores)} of the {reference} runs; unpaired, so no test.")
    return lines


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.3f}" if np.isnan(std) else f"{mean:.3f} ± {std:.3f}"


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
        accuracy = float(row[f"{metric_key('test', 'acc')} mean"])
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
    manifest = RunDir(runs[0].path).split.name
    if mixed:
        notes.append(
            f"- WARNING: the runs do not share one split{' per fold' if folds else ''} ({manifest} digests "
            f"and test sizes: {sorted(map(str, mixed[0]))}): paired differences mix split and variant "
            "effects."
        )
    elif folds:
        notes.append(f"- Each fold's runs used the same split ({folds} folds, {tested} test images in all).")
    else:
        notes.append(f"- Every run used the same split (identical {manifest}, {tested} test images).")
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


def log_to_tensorboard(
    output_dir: Path, runs: list[Run], keys: list[str], report: str, figure: Figure
) -> None:
    """HParams of every run (swept keys and seed beside its test metrics), the figure and the report."""
    with SummaryWriter(output_dir) as writer:
        for run in runs:
            hparams = {key: run.overrides.get(key, NOT_SWEPT) for key in keys} | {"variant": run.variant}
            hparams |= {} if run.seed is None else {PAIRING_KEY: run.seed}
            hparams |= {} if run.fold is None else {FOLD_KEY: run.fold}
            metrics = {name: value for name, value in run.metrics.items() if _is_test_metric(name)}
            writer.add_hparams(hparams, metrics, run_name=run.path.name)
        writer.add_figure("compare/summary", figure)
        writer.add_text("compare/report", report)


def _is_test_metric(key: str) -> bool:
    parsed = parse_metric_key(key)
    return parsed is not None and parsed.stage == "test"


def _is_test_support(key: str) -> bool:
    parsed = parse_metric_key(key)
    return parsed is not None and parsed.stage == "test" and parsed.name == "support"


def compare(multirun_dirs: list[Path], output_dir: Path, confidence: float = 0.95) -> str:
    """Write compare.md, summary.csv, paired.csv, runs.csv, compare.png and TensorBoard logs."""
    runs = load_runs(multirun_dirs)
    keys = swept_keys(runs)
    variants = assign_variants(runs, keys)
    metrics = metric_names(runs)
    differences = paired_differences(runs, variants, confidence)
    report = markdown_report(runs, variants, metrics, differences, confidence)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / "compare.md", report)
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
    save_png(figure, output_dir / "compare.png")
    log_to_tensorboard(output_dir / "tensorboard", runs, keys, report, figure)
    return report
