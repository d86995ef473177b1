"""The evaluation report of a model on labelled images: metrics.json, classification_report.txt,
predictions.csv, overfitting.txt and figures, written by both emotionvision-train and -eval."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch.utils.tensorboard import SummaryWriter

from emotionvision.data.cache import DecodeCache
from emotionvision.data.datamodule import EmotionDataModule
from emotionvision.data.images import SkipReport
from emotionvision.models.classifier import EmotionClassifier
from emotionvision.predict import predict_probabilities
from emotionvision.reporting.figures import (
    confusion_matrix_pair_figure,
    image_grid_figure,
    learning_curves_figure,
    reliability_figure,
    roc_figure,
    save_png,
)
from emotionvision.reporting.history import (
    early_stopping_state,
    overfitting_summary,
    overfitting_text,
    read_epoch_curves,
)
from emotionvision.reporting.metrics import build_report_metrics, calibration_bins, report_results

log = logging.getLogger(__name__)

MISTAKES_SHOWN = 16


def write_test_report(model: EmotionClassifier, datamodule: EmotionDataModule, run_dir: Path) -> dict:
    """`write_report` of the datamodule's test split into the training run directory `run_dir`."""
    label_of = {name: index for index, name in enumerate(model.class_names)}
    samples = [
        (Path(path), label_of[label]) for path, label, split, _ in datamodule.manifest if split == "test"
    ]
    return write_report(model, samples, "test", run_dir, run_dir, datamodule.cache_dir, datamodule.batch_size)


def write_report(
    model: EmotionClassifier,
    samples: list[tuple[Path, int]],
    split: str,
    output_dir: Path,
    run_dir: Path,
    cache_dir: str | Path,
    batch_size: int = 32,
) -> dict:
    """Decode `samples` (path, class index) as training does, predict them and write the report
    into `output_dir`; figures also go to TensorBoard (`output_dir`/tensorboard). Learning curves
    and overfitting diagnostics come from the training run in `run_dir`. Metrics are named like
    training's ('<split>/acc', ...); returns what metrics.json holds."""
    output_dir.mkdir(parents=True, exist_ok=True)
    class_names = model.class_names
    paths, targets, pixels = _decode_samples(samples, cache_dir, model.hparams.input_size)
    probabilities = predict_probabilities(model, pixels, batch_size)
    metrics = build_report_metrics(len(class_names))
    metrics.update(probabilities, targets)
    computed = metrics.compute()
    results = report_results(computed, class_names, probabilities, targets)
    report = {"split": split, "num_images": len(paths)}
    report |= {f"{split}/{name}": value for name, value in results.items()}
    report[f"{split}/confusion_matrix"] = computed["confusion_matrix"].tolist()

    figures = {
        "confusion_matrix": confusion_matrix_pair_figure(
            computed["confusion_matrix"].numpy(),
            class_names,
            f"{split} confusion matrix ({len(paths)} images)",
        ),
        "roc_curves": roc_figure(
            [fpr.numpy() for fpr in computed["roc"][0]],
            [tpr.numpy() for tpr in computed["roc"][1]],
            [results[f"auroc/{name}"] for name in class_names],
            class_names,
            f"{split} ROC curves, one-vs-rest (macro AUC {results['auroc']:.3f})",
        ),
        "reliability": reliability_figure(
            *(values.numpy() for values in calibration_bins(probabilities, targets)),
            results["ece"],
            f"{split} reliability diagram",
        ),
        "errors": _mistakes_figure(paths, targets, probabilities, pixels, class_names, split),
    }
    curves = _training_curves(run_dir)
    if curves:
        overfitting = overfitting_summary(curves, early_stopping_state(run_dir))
        report["overfitting"] = overfitting
        (output_dir / "overfitting.txt").write_text(overfitting_text(overfitting))
        title = f"learning curves of {run_dir.name}"
        figures["learning_curves"] = learning_curves_figure(curves, overfitting["best_epoch"], title)

    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    (output_dir / "classification_report.txt").write_text(classification_report_text(results, class_names))
    _write_predictions(output_dir / "predictions.csv", paths, targets, probabilities, class_names)
    _save_figures(figures, output_dir, split)
    log.info(
        "%s: acc %.4f, macro-F1 %.4f, ROC-AUC %.4f on %d images; report in %s",
        split,
        results["acc"],
        results["macro_f1"],
        results["auroc"],
        len(paths),
        output_dir,
    )
    return report


def _decode_samples(
    samples: list[tuple[Path, int]], cache_dir: str | Path, size: int
) -> tuple[list[Path], torch.Tensor, torch.Tensor]:
    """Paths, class indices and uint8 pixels of the decodable samples (through the decode cache)."""
    skipped = SkipReport()
    paths, decoded = DecodeCache(cache_dir, size).get_many([path for path, _ in samples], skipped)
    skipped.log_summary(Path(cache_dir))
    if not paths:
        raise ValueError("None of the images to evaluate could be decoded (see the warnings above).")
    label_of = dict(samples)
    targets = torch.tensor([label_of[path] for path in paths])
    return paths, targets, torch.stack([image.pixels for image in decoded])


def _training_curves(run_dir: Path) -> dict[str, dict[int, float]]:
    """Per-epoch curves of the run, or {} (with a warning) when it has no validation logs."""
    curves = read_epoch_curves(run_dir / "tensorboard") if (run_dir / "tensorboard").is_dir() else {}
    if "val/macro_f1" not in curves:
        log.warning(
            "No val/macro_f1 in TensorBoard logs under %s: no learning curves or overfitting "
            "diagnostics (set run_dir= to the training run directory).",
            run_dir / "tensorboard",
        )
        return {}
    return curves


def classification_report_text(results: dict[str, float], class_names: list[str]) -> str:
    """The familiar per-class precision / recall / F1 / support table, then the averages."""
    width = max(len("weighted avg"), *(len(name) for name in class_names))
    header = f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
    total = sum(results[f"support/{name}"] for name in class_names)
    rows = [header, ""]
    for name in class_names:
        scores = (results[f"precision/{name}"], results[f"recall/{name}"], results[f"f1/{name}"])
        rows.append(_row(name, width, *scores, results[f"support/{name}"]))
    rows += [
        "",
        f"{'accuracy':>{width}} {'':>9} {'':>9} {results['acc']:>9.3f} {total:>9}",
        _row(
            "macro avg",
            width,
            results["macro_precision"],
            results["balanced_acc"],
            results["macro_f1"],
            total,
        ),
        _row(
            "weighted avg",
            width,
            results["weighted_precision"],
            results["weighted_recall"],
            results["weighted_f1"],
            total,
        ),
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
    path: Path, paths: list[Path], targets: torch.Tensor, probabilities: torch.Tensor, class_names: list[str]
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
    paths: list[Path],
    targets: torch.Tensor,
    probabilities: torch.Tensor,
    pixels: torch.Tensor,
    class_names: list[str],
    split: str,
) -> Figure:
    """The most confident mistakes: images with their true and predicted labels."""
    confidence, predicted = probabilities.max(dim=1)
    wrong = torch.nonzero(predicted != targets).flatten()
    shown = wrong[confidence[wrong].argsort(descending=True)][:MISTAKES_SHOWN].tolist()
    captions = [
        f"{paths[i].name}\ntrue {class_names[targets[i]]}\npredicted {class_names[predicted[i]]} "
        f"({confidence[i]:.2f})"
        for i in shown
    ]
    images = [pixels[i].permute(1, 2, 0).numpy() for i in shown]
    title = f"{split}: the {len(shown)} most confident of {len(wrong)} mistakes"
    return image_grid_figure(images, captions, title)


def _save_figures(figures: dict[str, Figure], output_dir: Path, split: str) -> None:
    """Each figure as `output_dir`/<name>.png and, rendered once, as an image in `output_dir`/tensorboard."""
    with SummaryWriter(output_dir / "tensorboard") as writer:
        for name, figure in figures.items():
            path = output_dir / f"{name}.png"
            save_png(figure, path)
            with Image.open(path) as image:
                writer.add_image(
                    f"report/{split}/{name}", np.asarray(image.convert("RGB")), dataformats="HWC"
                )
    log.info("Figures written: %s", ", ".join(f"{name}.png" for name in figures))
