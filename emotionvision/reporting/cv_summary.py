"""The summary of a cross-validation: per-fold test metrics, their mean and spread, the pooled
confusion matrix and a figure (from each fold run's metrics.json)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from emotionvision.reporting.figures import cross_validation_figure, save_png
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


def class_names_of(metrics: dict) -> list[str]:
    """The classes of a run's report, in order (its 'test/support/<class>' entries)."""
    keys = [parse_metric_key(key) for key in metrics]
    return [key.class_name for key in keys if key and key.stage == "test" and key.name == "support"]


def cv_summary(folds: list[tuple[Path, dict]]) -> dict:
    """Per-fold values, mean, standard deviation, minimum and maximum of each metric, and the
    confusion matrix pooled over folds with its accuracy and per-class recall."""
    pooled = np.sum([np.asarray(metrics[CONFUSION_MATRIX]) for _, metrics in folds], axis=0)
    recall = np.diag(pooled) / np.maximum(pooled.sum(axis=1), 1)
    summary: dict = {
        "folds": len(folds),
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
    lines = [
        f"# Cross-validation: {summary['folds']} folds, {sum(summary['test_images'])} test images",
        "",
        "| metric | mean ± std over folds | min | max |",
        "| --- | --- | --- | --- |",
    ]
    for metric in headline_keys():
        values = summary[metric]
        lines.append(
            f"| {metric_label(metric)} | {values['mean']:.3f} ± {values['std']:.3f} "
            f"| {values['min']:.3f} | {values['max']:.3f} |"
        )
    total = sum(summary["test_images"])
    low, high = wilson_interval(round(summary["pooled_acc"] * total), total)
    lines += [
        "",
        f"Pooled over folds (every image tested once): accuracy {summary['pooled_acc']:.3f} on {total} "
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


def write_cv_summary(output_dir: Path, fold_dirs: list[Path]) -> str:
    """Write cv_summary.md, cv_summary.json, cv_folds.csv, cv_summary.png and the summary for
    TensorBoard (tensorboard/: per-fold scalars, the figure and the table); return the markdown."""
    folds = read_folds(fold_dirs)
    if not folds:
        raise FileNotFoundError(f"No fold under {output_dir} finished testing: nothing to summarise.")
    summary = cv_summary(folds)
    report = cv_markdown(summary)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "cv_summary.md").write_text(report)
    (output_dir / "cv_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    rows = [
        {"run": run, "test_images": summary["test_images"][index]}
        | {metric: summary[metric]["values"][index] for metric in headline_keys()}
        for index, run in enumerate(summary["runs"])
    ]
    write_csv(output_dir / "cv_folds.csv", rows)
    values = {metric_label(metric): summary[metric]["values"] for metric in headline_keys()}
    figure = cross_validation_figure(
        values, np.asarray(summary["pooled_confusion_matrix"]), summary["classes"], output_dir.name
    )
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
