"""The evaluation report of class probabilities on labelled images (metrics, classification_report.txt,
predictions.csv, figures) and a run's training section (overfitting.txt, learning curves): arrays in,
files out."""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import classification_report
from torch.utils.tensorboard import SummaryWriter

from emotionvision.atomic import atomic_open, write_text
from emotionvision.reporting.curves import curves_of, overfitting_summary, overfitting_text
from emotionvision.reporting.figures import (
    confusion_matrix_pair_figure,
    image_grid_figure,
    learning_curves_figure,
    mistake_caption,
    reliability_figure,
    roc_figure,
    save_png,
)
from emotionvision.reporting.scores import (
    calibration_bins,
    confident_mistakes,
    confusion_matrix,
    report_results,
    roc_curves,
)
from emotionvision.rundir import RunDir, metric_key, parse_metric_key

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
    tensorboard_dir: Path | None = None,
) -> dict:
    """Write the report of `probabilities` (N x C) for the images `paths` with true classes `targets`
    into `output_dir` (figures also into TensorBoard: `save_figures`); `image_of(i)` is image i as
    H x W x 3 uint8. Metrics are named '<split>/acc', ...; `subsets` ({name: regular expression on the
    file name}) adds '<split>/<name>/acc' and '<split>/<name>/macro_f1' of the matching images.
    Returns what metrics.json gets."""
    output_dir.mkdir(parents=True, exist_ok=True)
    results = report_results(probabilities, targets, class_names)
    matrix = confusion_matrix(probabilities, targets)
    report = {"split": split, "num_images": len(paths)}
    report |= {metric_key(split, name): value for name, value in results.items()}
    report[metric_key(split, "confusion_matrix")] = matrix.tolist()
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
    text = classification_report_text(probabilities, targets, class_names, results)
    write_text(output_dir / "classification_report.txt", text)
    _write_predictions(RunDir(output_dir).predictions, paths, targets, probabilities, class_names)
    save_figures(figures, output_dir, f"report/{split}", tensorboard_dir)
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
    tensorboard_dir: Path | None = None,
) -> dict | None:
    """overfitting.txt and learning_curves.png (also in TensorBoard: `save_figures`) of a run's history
    rows; returns the overfitting summary, or None (with a warning) when the history has no `monitor`
    values."""
    curves = curves_of(history)
    if monitor not in curves:
        log.warning("No %s in the run's history.csv: no learning curves or overfitting diagnostics.", monitor)
        return None
    summary = overfitting_summary(curves, monitor, mode, stopped_epoch)
    write_text(output_dir / "overfitting.txt", overfitting_text(summary))
    quantities = list(dict.fromkeys(["loss", parse_metric_key(monitor).name]))
    figure = learning_curves_figure(curves, quantities, summary["best_epoch"], title)
    save_figures({"learning_curves": figure}, output_dir, "report", tensorboard_dir)
    return summary


def classification_report_text(
    probabilities: torch.Tensor, targets: torch.Tensor, class_names: list[str], results: dict[str, float]
) -> str:
    """scikit-learn's classification report, then the summary metrics (`results` of `report_results`).

    The table's rows are the classes with images and its averages run over them, as the macro metrics
    do. Where some classes have no images, a 'micro avg' row may stand where 'accuracy' would, and the
    accuracy (predictions of those classes count as mistakes) heads the summary."""
    present = targets.unique().tolist()
    table = classification_report(
        targets.numpy(),
        probabilities.argmax(dim=1).numpy(),
        labels=present,
        target_names=[class_names[index] for index in present],
        digits=3,
        zero_division=0,
    )
    absent = ", ".join(name for index, name in enumerate(class_names) if index not in present)
    lines = (
        [f"accuracy {results['acc']:.4f} (no images of {absent}; predicting them is a mistake)"]
        if absent
        else []
    )
    lines += [
        f"balanced accuracy {results['balanced_acc']:.4f}",
        f"macro ROC-AUC (one-vs-rest) {results['auroc']:.4f}",
        f"log-loss {results['log_loss']:.4f}",
        f"expected calibration error {results['ece']:.4f}",
    ]
    return table + "\n" + "\n".join(lines) + "\n"


def _write_predictions(
    path: Path, paths: list[str], targets: torch.Tensor, probabilities: torch.Tensor, class_names: list[str]
) -> None:
    """path, true label, predicted label and each class probability, one row per image."""
    predicted = probabilities.argmax(dim=1)
    with atomic_open(path, "w", newline="") as handle:
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
    shown = confident_mistakes(probabilities, targets, MISTAKES_SHOWN)
    captions = [
        mistake_caption(paths[i], class_names[targets[i]], class_names[predicted[i]], float(confidence[i]))
        for i in shown
    ]
    title = f"{split}: the {len(shown)} most confident of {int((predicted != targets).sum())} mistakes"
    return image_grid_figure([image_of(i) for i in shown], captions, title)


def save_figures(
    figures: dict[str, Figure], output_dir: Path, tag_prefix: str, tensorboard_dir: Path | None = None
) -> None:
    """Each figure as `output_dir`/<name>.png and, rendered once, as image `tag_prefix`/<name> in the
    TensorBoard folder `tensorboard_dir` (a training run's: its logger's, beside its scalars; by
    default `output_dir`/tensorboard)."""
    with SummaryWriter(tensorboard_dir or output_dir / "tensorboard") as writer:
        for name, figure in figures.items():
            path = output_dir / f"{name}.png"
            save_png(figure, path)
            with Image.open(path) as image:
                writer.add_image(f"{tag_prefix}/{name}", np.asarray(image.convert("RGB")), dataformats="HWC")
    log.info("Figures written: %s", ", ".join(f"{name}.png" for name in figures))
