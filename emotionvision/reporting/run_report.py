"""The evaluation report of class probabilities on labelled images (metrics, classification_report.txt,
predictions.csv, figures) and a run's training section (overfitting.txt, learning curves): arrays in,
files out."""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from emotionvision.reporting.curves import curves_of, metric_pair, overfitting_summary, overfitting_text
from emotionvision.reporting.figures import (
    confusion_matrix_pair_figure,
    image_grid_figure,
    learning_curves_figure,
    reliability_figure,
    roc_figure,
    save_png,
)
from emotionvision.reporting.scores import calibration_bins, confusion_matrix, report_results, roc_curves

log = logging.getLogger(__name__)

MISTAKES_SHOWN = 16


def write_report(
    output_dir: Path,
    split: str,
    paths: list[str],
    targets: torch.Tensor,
    probabilities: torch.Tensor,
    class_names: list[str],
    image_of: Callable[[int], np.ndarray],
    subsets: dict[str, str] | None = None,
) -> dict:
    """Write the report of `probabilities` (N x C) for the images `paths` with true classes `targets`
    into `output_dir` (figures also into its tensorboard/); `image_of(i)` is image i as H x W x 3 uint8.
    Metrics are named '<split>/acc', ...; `subsets` ({name: regular expression on the file name})
    adds '<split>/<name>/acc' and '<split>/<name>/macro_f1' of the matching images. Returns what
    metrics.json gets."""
    output_dir.mkdir(parents=True, exist_ok=True)
    results = report_results(probabilities, targets, class_names)
    matrix = confusion_matrix(probabilities, targets)
    report = {"split": split, "num_images": len(paths)}
    report |= {f"{split}/{name}": value for name, value in results.items()}
    report[f"{split}/confusion_matrix"] = matrix.tolist()
    for name, pattern in (subsets or {}).items():
        members = [i for i, path in enumerate(paths) if re.search(pattern, Path(path).name)]
        if members:
            chosen = torch.tensor(members)
            scores = report_results(probabilities[chosen], targets[chosen], class_names)
            report |= {f"{split}/{name}/{metric}": scores[metric] for metric in ("acc", "macro_f1")}
            report[f"{split}/{name}/num_images"] = len(members)
    figures = {
        "confusion_matrix": confusion_matrix_pair_figure(
            matrix.numpy(), class_names, f"{split} confusion matrix ({len(paths)} images)"
        ),
        "roc_curves": _roc_figure(probabilities, targets, results, class_names, split),
        "reliability": reliability_figure(
            *(values.numpy() for values in calibration_bins(probabilities, targets)),
            results["ece"],
            f"{split} reliability diagram",
        ),
        "errors": _mistakes_figure(paths, targets, probabilities, image_of, class_names, split),
    }
    (output_dir / "classification_report.txt").write_text(classification_report_text(results, class_names))
    _write_predictions(output_dir / "predictions.csv", paths, targets, probabilities, class_names)
    save_figures(figures, output_dir, f"report/{split}")
    log.info(
        "%s: acc %.4f, macro-F1 %.4f, ROC-AUC %.4f on %d images; report in %s",
        split, results["acc"], results["macro_f1"], results["auroc"], len(paths), output_dir,
    )  # fmt: skip
    return report


def _roc_figure(
    probabilities: torch.Tensor, targets: torch.Tensor, results: dict, class_names: list[str], split: str
) -> Figure:
    """The one-vs-rest ROC curves of the classes that have one (images of it and of another class)."""
    shown = [i for i, name in enumerate(class_names) if not np.isnan(results[f"auroc/{name}"])]
    rates = [[curves[i] for i in shown] for curves in roc_curves(probabilities, targets)]
    return roc_figure(
        *rates,
        [results[f"auroc/{class_names[i]}"] for i in shown],
        [class_names[i] for i in shown],
        f"{split} ROC curves, one-vs-rest (macro AUC {results['auroc']:.3f})",
    )


def write_training_section(
    output_dir: Path,
    history: list[dict[str, float]],
    monitor: str,
    mode: str,
    stopped_epoch: int | None,
    title: str,
) -> dict | None:
    """overfitting.txt and learning_curves.png of a run's history rows; returns the overfitting
    summary, or None (with a warning) when the history has no `monitor` values."""
    curves = curves_of(history)
    if monitor not in curves:
        log.warning("No %s in the run's history.csv: no learning curves or overfitting diagnostics.", monitor)
        return None
    summary = overfitting_summary(curves, monitor, mode, stopped_epoch)
    (output_dir / "overfitting.txt").write_text(overfitting_text(summary))
    quantities = list(dict.fromkeys(["loss", metric_pair(monitor)[1].split("/", 1)[1]]))
    figure = learning_curves_figure(curves, quantities, summary["best_epoch"], title)
    save_figures({"learning_curves": figure}, output_dir, "report")
    return summary


def classification_report_text(results: dict[str, float], class_names: list[str]) -> str:
    """The familiar per-class precision / recall / F1 / support table, then the averages."""
    width = max(len("weighted avg"), *(len(name) for name in class_names))
    header = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    total = sum(results[f"support/{name}"] for name in class_names)
    rows = [header, ""]
    for name in class_names:
        scores = (results[f"precision/{name}"], results[f"recall/{name}"], results[f"f1/{name}"])
        rows.append(_row(name, width, *scores, results[f"support/{name}"]))
    macro = (results["macro_precision"], results["balanced_acc"], results["macro_f1"])
    weighted = (results["weighted_precision"], results["weighted_recall"], results["weighted_f1"])
    rows += [
        "",
        f"{'accuracy':>{width}} {'':>9} {'':>9} {results['acc']:>9.3f} {total:>9}",
        _row("macro avg", width, *macro, total),
        _row("weighted avg", width, *weighted, total),
        "",
        f"balanced accuracy {results['balanced_acc']:.4f}",
        f"macro ROC-AUC (one-vs-rest) {results['auroc']:.4f}",
        f"log-loss {results['log_loss']:.4f}",
        f"expected calibration error {results['ece']:.4f}",
    ]
    return "\n".join(rows) + "\n"


def _row(name: str, width: int, precision: float, recall: float, f1: float, support: int) -> str:
    return f"{name:>{width}} {precision:>9.3f} {recall:>9.3f} {f1:>9.3f} {support:>9}"


def _write_predictions(
    path: Path, paths: list[str], targets: torch.Tensor, probabilities: torch.Tensor, class_names: list[str]
) -> None:
    """path, true label, predicted label and each class probability, one row per image."""
    predicted = probabilities.argmax(dim=1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "true_label", "predicted_label", *(f"prob_{name}" for name in class_names)])
        for image_path, target, guess, row in zip(paths, targets, predicted, probabilities, strict=True):
            writer.writerow(
                [image_path, class_names[target], class_names[guess], *(f"{p:.6f}" for p in row.tolist())]
            )


def _mistakes_figure(
    paths: list[str],
    targets: torch.Tensor,
    probabilities: torch.Tensor,
    image_of: Callable[[int], np.ndarray],
    class_names: list[str],
    split: str,
) -> Figure:
    """The most confident mistakes: images with their true and predicted labels."""
    confidence, predicted = probabilities.max(dim=1)
    wrong = torch.nonzero(predicted != targets).flatten()
    shown = wrong[confidence[wrong].argsort(descending=True)][:MISTAKES_SHOWN].tolist()
    captions = [
        f"{Path(paths[i]).name}\ntrue {class_names[targets[i]]}\npredicted {class_names[predicted[i]]} "
        f"({confidence[i]:.2f})"
        for i in shown
    ]
    title = f"{split}: the {len(shown)} most confident of {len(wrong)} mistakes"
    return image_grid_figure([image_of(i) for i in shown], captions, title)


def save_figures(figures: dict[str, Figure], output_dir: Path, tag_prefix: str) -> None:
    """Each figure as `output_dir`/<name>.png and, rendered once, as image `tag_prefix`/<name> in
    `output_dir`/tensorboard."""
    with SummaryWriter(output_dir / "tensorboard") as writer:
        for name, figure in figures.items():
            path = output_dir / f"{name}.png"
            save_png(figure, path)
            with Image.open(path) as image:
                writer.add_image(f"{tag_prefix}/{name}", np.asarray(image.convert("RGB")), dataformats="HWC")
    log.info("Figures written: %s", ", ".join(f"{name}.png" for name in figures))


def merge_json(path: Path, values: dict) -> dict:
    """Update the JSON object in `path` (created if missing) with `values`; returns the result."""
    merged = (json.loads(path.read_text()) if path.is_file() else {}) | values
    path.write_text(json.dumps(merged, indent=2))
    return merged
