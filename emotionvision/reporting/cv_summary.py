"""The summary of a cross-validation: per-fold test metrics, their mean and spread, the pooled
confusion matrix and a figure (from each fold run's metrics.json), and what it covers: the folds
planned and completed, and the images no completed fold tested (from the folds' split.csv)."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from emotionvision.atomic import write_text
from emotionvision.reporting.figures import cross_validation_figure, save_png
from emotionvision.reporting.scores import chance_levels
from emotionvision.reporting.statistics import wilson_interval
from emotionvision.reporting.tables import metric_label, write_csv
from emotionvision.rundir import RunDir, headline_keys, metric_key, parse_metric_key

log = logging.getLogger(__name__)

CONFUSION_MATRIX = metric_key("test", "confusion_matrix")


def read_folds(fold_dirs: list[Path]) -> list[tuple[Path, dict]]:
    """(run directory, metrics) of each fold that finished testing; the others are logged."""
    finished = []
    for fold_dir in fold_dirs:
        metrics = RunDir(fold_dir).read_metrics()
        if CONFUSION_MATRIX in metrics:
            finished.append((fold_dir, metrics))
        else:
            log.warning("Fold %s has no test metrics (failed, unfinished or test=false): left out.", fold_dir)
    return finished


def test_coverage(fold_dirs: list[Path], finished: list[Path]) -> dict[str, int | None]:
    """What the folds' split.csv files (every image a fold used, and its split) tell about testing:
    'images' (every image any fold used), 'images_not_tested' (by no finished fold) and
    'images_tested_again' (by more than one); all None where a finished fold has no split.csv."""
    used: set[str] = set()
    tested: Counter[str] = Counter()
    for fold_dir in fold_dirs:
        rows = _split_rows(RunDir(fold_dir).split)
        if rows is None:
            if fold_dir in finished:
                return dict.fromkeys(("images", "images_not_tested", "images_tested_again"))
            continue
        used |= {row["path"] for row in rows}
        if fold_dir in finished:
            tested.update(row["path"] for row in rows if row["split"] == "test")
    return {
        "images": len(used),
        "images_not_tested": len(used - tested.keys()),
        "images_tested_again": sum(count > 1 for count in tested.values()),
    }


def _split_rows(path: Path) -> list[dict[str, str]] | None:
    """The rows of a fold's split.csv (columns path and split at least); None without a readable one."""
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return rows if all("path" in row and "split" in row for row in rows) else None


def class_names_of(metrics: dict) -> list[str]:
    """The classes of a run's report, in order (its 'test/support/<class>' entries)."""
    keys = [parse_metric_key(key) for key in metrics]
    return [key.class_name for key in keys if key and key.stage == "test" and key.name == "support"]


def cv_summary(
    folds: list[tuple[Path, dict]], fold_dirs: list[Path] | None = None, planned: int | None = None
) -> dict:
    """Per-fold values, mean, standard deviation, minimum and maximum of each metric, and the
    confusion matrix pooled over the finished `folds` with its accuracy and per-class recall; with
    the folds planned (`planned`, default: the fold runs `fold_dirs`, default: `folds`), those not
    completed and the images no completed fold tested (`test_coverage`). 'every_image_tested_once'
    holds only for a complete cross-validation whose split.csv files show it."""
    finished = [fold_dir for fold_dir, _ in folds]
    fold_dirs = fold_dirs if fold_dirs is not None else finished
    planned = max(planned if planned is not None else len(fold_dirs), len(fold_dirs))
    coverage = test_coverage(fold_dirs, finished)
    pooled = np.sum([np.asarray(metrics[CONFUSION_MATRIX]) for _, metrics in folds], axis=0)
    recall = np.diag(pooled) / np.maximum(pooled.sum(axis=1), 1)
    summary: dict = {
        "folds": len(folds),
        "folds_planned": planned,
        "unfinished_runs": [str(fold_dir) for fold_dir in fold_dirs if fold_dir not in finished],
        "folds_not_started": planned - len(fold_dirs),
        **coverage,
        "every_image_tested_once": len(folds) == planned
        and coverage["images_not_tested"] == 0
        and coverage["images_tested_again"] == 0,
        "classes": class_names_of(folds[0][1]),
        "runs": [str(fold_dir) for fold_dir, _ in folds],
        "test_images": [int(np.sum(metrics[CONFUSION_MATRIX])) for _, metrics in folds],
        "pooled_confusion_matrix": pooled.tolist(),
        "pooled_acc": float(np.trace(pooled) / pooled.sum()),
        "pooled_recall": dict(zip(class_names_of(folds[0][1]), recall.tolist(), strict=True)),
    }
    for metric in headline_keys():
        values = np.array([metrics[metric] for _, metrics in folds], dtype=np.float64)
        summary[metric] = {
            "values": values.tolist(),
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    return summary


def cv_markdown(summary: dict) -> str:
    """The summary as a markdown table and notes."""
    completed, planned, total = summary["folds"], summary["folds_planned"], sum(summary["test_images"])
    not_tested = summary["images_not_tested"]
    untested = (
        "images not tested: unknown (no split.csv)" if not_tested is None else f"{not_tested} not tested"
    )
    lines = [
        f"# Cross-validation: {completed} of {planned} folds completed, {total} test images, {untested}",
        "",
        *_incomplete_note(summary),
        "| metric | mean ± std over folds | min | max |",
        "| --- | --- | --- | --- |",
    ]
    for metric in headline_keys():
        values = summary[metric]
        lines.append(
            f"| {metric_label(metric)} | {values['mean']:.3f} ± {values['std']:.3f} "
            f"| {values['min']:.3f} | {values['max']:.3f} |"
        )
    low, high = wilson_interval(round(summary["pooled_acc"] * total), total)
    lines += [
        "",
        f"{_pooled_over(summary)}: accuracy {summary['pooled_acc']:.3f} on {total} "
        f"images (95% Wilson interval {low:.3f}-{high:.3f}); confusion matrix in cv_summary.png.",
        "",
        "Pooled recall per class: "
        + ", ".join(f"{name} {recall:.3f}" for name, recall in summary["pooled_recall"].items())
        + ".",
        "",
        "The spread over folds shows how much one held-out split's result depends on which images it "
        "holds; folds share training images, so it is no independent-sample interval.",
    ]
    return "\n".join(lines) + "\n"


def _incomplete_note(summary: dict) -> list[str]:
    """The paragraph (and its blank line) that says which folds are missing; none for a complete run."""
    completed, planned = summary["folds"], summary["folds_planned"]
    if completed == planned:
        return []
    missing = [Path(run).name for run in summary["unfinished_runs"]]
    parts = (
        [f"{', '.join(missing)} did not finish testing (failed, unfinished or test=false)"] if missing else []
    )
    if summary["folds_not_started"]:
        parts.append(f"{summary['folds_not_started']} never started")
    not_tested = summary["images_not_tested"]
    images = "" if not_tested is None else f"; {not_tested} images were never tested"
    return [
        f"**Incomplete: {planned - completed} of {planned} folds missing** ({'; '.join(parts)}{images}). "
        f"The values below cover the {completed} completed folds only.",
        "",
    ]


def _pooled_over(summary: dict) -> str:
    """The pooled line's opening: 'every image tested once' only where it is true."""
    if summary["every_image_tested_once"]:
        return "Pooled over folds (every image tested once)"
    completed, planned = summary["folds"], summary["folds_planned"]
    folds = f"the {completed} completed of {planned} folds" if completed < planned else f"{completed} folds"
    images, not_tested = summary["images"], summary["images_not_tested"]
    if not_tested is None:
        return f"Pooled over {folds} (which images were tested is unknown: a fold has no split.csv)"
    tested = f"{images - not_tested} of {images} images tested, {not_tested} never"
    again = summary["images_tested_again"]
    return f"Pooled over {folds} ({tested}{f', {again} more than once' if again else ''})"


def write_cv_summary(output_dir: Path, fold_dirs: list[Path], planned: int | None = None) -> str:
    """Write cv_summary.md, cv_summary.json, cv_folds.csv, cv_summary.png and the summary for
    TensorBoard (tensorboard/: per-fold scalars, the figure and the table) of the fold runs
    `fold_dirs`, out of `planned` folds (default: as many as `fold_dirs`); return the markdown."""
    folds = read_folds(fold_dirs)
    if not folds:
        raise FileNotFoundError(f"No fold under {output_dir} finished testing: nothing to summarise.")
    summary = cv_summary(folds, fold_dirs, planned)
    report = cv_markdown(summary)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text(output_dir / "cv_summary.md", report)
    write_text(output_dir / "cv_summary.json", json.dumps(summary, indent=2) + "\n")
    rows = [
        {"run": run, "test_images": summary["test_images"][index]}
        | {metric: summary[metric]["values"][index] for metric in headline_keys()}
        for index, run in enumerate(summary["runs"])
    ]
    write_csv(output_dir / "cv_folds.csv", rows)
    values = {metric_label(metric): summary[metric]["values"] for metric in headline_keys()}
    pooled = np.asarray(summary["pooled_confusion_matrix"])
    chance = chance_levels(pooled.sum(axis=1).tolist())
    figure = cross_validation_figure(values, pooled, summary["classes"], output_dir.name, chance)
    log_to_tensorboard(output_dir / "tensorboard", summary, report, figure)
    save_png(figure, output_dir / "cv_summary.png")
    return report


def log_to_tensorboard(log_dir: Path, summary: dict, report: str, figure: Figure) -> None:
    """Each metric per fold (step = fold), the summary figure and the markdown table."""
    with SummaryWriter(log_dir) as writer:
        for metric in headline_keys():
            for fold, value in enumerate(summary[metric]["values"]):
                writer.add_scalar(f"cross_validation/{metric_label(metric)}", value, fold)
        writer.add_figure("cross_validation/summary", figure)
        writer.add_text("cross_validation/summary", report)
