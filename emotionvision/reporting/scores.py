"""Metrics of class probabilities (torchmetrics' public functional API, scikit-learn's log-loss); tensors
in, numbers out."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from sklearn.metrics import log_loss
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multiclass_roc,
)

CALIBRATION_BINS = 15
# torchmetrics' ROC warnings for a class without images (positives) or with every image (negatives)
ONE_VS_REST_WARNINGS = "No (positive|negative) samples in targets"


def report_results(probabilities: torch.Tensor, targets: torch.Tensor, class_names: list[str]) -> dict:
    """Accuracy, balanced accuracy, macro-F1, macro ROC-AUC, log-loss, ECE, the macro and weighted
    averages, and per class 'precision/', 'recall/', 'f1/', 'support/', 'auroc/<class>' (metric keys
    without their stage).

    Macro averages run over the classes with images (support > 0), as when data hold only some of
    the model's classes: a class without images has no recall, F1 or ROC-AUC (NaN), while
    predictions of it still count as mistakes (in accuracy, and in the recall of the true class).
    A class's one-vs-rest ROC-AUC also needs images of another class (else NaN, and so is a macro
    ROC-AUC without any)."""
    k = len(class_names)
    support = torch.bincount(targets, minlength=k)
    present = support > 0
    per_class = {
        "precision": multiclass_precision(probabilities, targets, k, average=None),
        "recall": multiclass_recall(probabilities, targets, k, average=None),
        "f1": multiclass_f1_score(probabilities, targets, k, average=None),
        "auroc": _per_class_auroc(probabilities, targets, k),
    }
    for name in ("recall", "f1"):
        per_class[name] = per_class[name].masked_fill(~present, float("nan"))
    per_class["auroc"] = per_class["auroc"].masked_fill(~present | (support == len(targets)), float("nan"))
    results = {
        "acc": multiclass_accuracy(probabilities, targets, k, average="micro"),
        "balanced_acc": per_class["recall"].nanmean(),
        "macro_f1": per_class["f1"].nanmean(),
        "auroc": per_class["auroc"].nanmean(),
        "macro_precision": per_class["precision"][present].mean(),
        "weighted_precision": multiclass_precision(probabilities, targets, k, average="weighted"),
        "weighted_recall": multiclass_recall(probabilities, targets, k, average="weighted"),
        "weighted_f1": multiclass_f1_score(probabilities, targets, k, average="weighted"),
        "ece": multiclass_calibration_error(probabilities, targets, k, n_bins=CALIBRATION_BINS, norm="l1"),
    }
    results = {name: float(value) for name, value in results.items()}
    results["log_loss"] = float(log_loss(targets.numpy(), probabilities.numpy(), labels=range(k)))
    for index, class_name in enumerate(class_names):
        for name, values in per_class.items():
            results[f"{name}/{class_name}"] = float(values[index])
        results[f"support/{class_name}"] = int(support[index])
    return results


def _per_class_auroc(probabilities: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    with one_vs_rest_quiet():
        return multiclass_auroc(probabilities, targets, k, average=None)


@contextmanager
def one_vs_rest_quiet() -> Iterator[None]:
    """Silence torchmetrics' warnings about classes without positive or negative samples (here: their
    ROC curves are left out and their ROC-AUC is NaN; in the module's training and validation metrics,
    emotionvision/models/metrics.py, every epoch whose batches miss a class would print them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ONE_VS_REST_WARNINGS, category=UserWarning)
        yield


def confusion_matrix(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Counts: rows are true classes, columns predicted ones."""
    return multiclass_confusion_matrix(probabilities, targets, probabilities.shape[1])


def roc_curves(probabilities: torch.Tensor, targets: torch.Tensor) -> tuple[list, list]:
    """One-vs-rest false and true positive rates of each class."""
    with one_vs_rest_quiet():
        fpr, tpr, _ = multiclass_roc(probabilities, targets, probabilities.shape[1])
    return [values.numpy() for values in fpr], [values.numpy() for values in tpr]


def calibration_bins(
    probabilities: torch.Tensor, targets: torch.Tensor, num_bins: int = CALIBRATION_BINS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accuracy, mean confidence and share of samples in each of `num_bins` equal-width confidence
    bins [b/n, (b+1)/n), the last one closed (the bins of the ECE); empty bins are 0."""
    confidences, predicted = probabilities.max(dim=1)
    correct = (predicted == targets).to(confidences.dtype)
    bins = (confidences * num_bins).long().clamp(max=num_bins - 1)
    counts = torch.bincount(bins, minlength=num_bins).float()
    accuracy = torch.bincount(bins, correct, minlength=num_bins) / counts.clamp(min=1)
    confidence = torch.bincount(bins, confidences, minlength=num_bins) / counts.clamp(min=1)
    return accuracy, confidence, counts / counts.sum()


def confident_mistakes(probabilities: torch.Tensor, targets: torch.Tensor, count: int) -> list[int]:
    """The indices of up to `count` misclassified images, most confident (highest top probability)
    first."""
    confidence, predicted = probabilities.max(dim=1)
    wrong = torch.nonzero(predicted != targets).flatten()
    return wrong[confidence[wrong].argsort(descending=True, stable=True)][:count].tolist()


def chance_levels(support: list[int]) -> dict[str, float]:
    """'acc', 'macro_f1' and 'auroc' of a uniform random guess among the len(support) classes on
    images with these class counts: accuracy 1/K; a class's F1 of the expected counts, 2p / (1 + K p)
    (precision p, its share of the images; recall 1/K), averaged over the classes with images as
    macro-F1 is; ROC-AUC 0.5."""
    k = len(support)
    shares = torch.tensor(support, dtype=torch.float64) / sum(support)
    shares = shares[shares > 0]
    return {"acc": 1 / k, "macro_f1": float((2 * shares / (1 + k * shares)).mean()), "auroc": 0.5}
