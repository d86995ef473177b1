"""Classification metrics (torchmetrics) and their flattening into named scalars."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassROC,
)
from torchmetrics.functional.classification.calibration_error import (
    _binning_bucketize,
    _multiclass_calibration_error_update,
)

CALIBRATION_BINS = 15


def build_metrics(num_classes: int, sync_on_compute: bool = True) -> MetricCollection:
    """Accuracy, macro-F1, per-class recall, macro and per-class ROC-AUC, confusion matrix.

    `sync_on_compute=False` for metrics one process computes alone (no DDP gather)."""
    options = {"sync_on_compute": sync_on_compute}
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", **options),
            "macro_f1": MulticlassF1Score(num_classes, average="macro", **options),
            "recall": MulticlassRecall(num_classes, average=None, **options),
            "auroc": MulticlassAUROC(num_classes, average="macro", **options),
            "auroc_per_class": MulticlassAUROC(num_classes, average=None, **options),
            "confusion_matrix": MulticlassConfusionMatrix(num_classes, **options),
        }
    )


def scalar_results(computed: dict[str, torch.Tensor], class_names: list[str]) -> dict[str, float]:
    """Named scalars: 'acc', 'macro_f1', 'auroc', 'recall/<class>', 'auroc/<class>'."""
    results = {name: float(computed[name]) for name in ("acc", "macro_f1", "auroc")}
    for index, class_name in enumerate(class_names):
        results[f"recall/{class_name}"] = float(computed["recall"][index])
        results[f"auroc/{class_name}"] = float(computed["auroc_per_class"][index])
    return results


def build_report_metrics(num_classes: int) -> MetricCollection:
    """`build_metrics` plus balanced accuracy, per-class precision and F1, macro and weighted
    averages, expected calibration error (ECE) and the one-vs-rest ROC curves. Computed by one
    process over all its samples, so never synced across DDP ranks."""
    options = {"sync_on_compute": False}
    metrics = build_metrics(num_classes, sync_on_compute=False)
    metrics.add_metrics(
        {
            "balanced_acc": MulticlassAccuracy(num_classes, average="macro", **options),
            "precision": MulticlassPrecision(num_classes, average=None, **options),
            "f1": MulticlassF1Score(num_classes, average=None, **options),
            "macro_precision": MulticlassPrecision(num_classes, average="macro", **options),
            "weighted_precision": MulticlassPrecision(num_classes, average="weighted", **options),
            "weighted_recall": MulticlassRecall(num_classes, average="weighted", **options),
            "weighted_f1": MulticlassF1Score(num_classes, average="weighted", **options),
            "ece": MulticlassCalibrationError(num_classes, n_bins=CALIBRATION_BINS, norm="l1", **options),
            "roc": MulticlassROC(num_classes, **options),
        }
    )
    return metrics


def report_results(
    computed: dict[str, torch.Tensor],
    class_names: list[str],
    probabilities: torch.Tensor,
    targets: torch.Tensor,
) -> dict[str, float]:
    """`scalar_results` plus 'balanced_acc', 'log_loss', 'ece', the averages and
    'precision/<class>', 'f1/<class>', 'support/<class>' of `build_report_metrics`' output."""
    results = scalar_results(computed, class_names)
    averages = ("balanced_acc", "macro_precision", "weighted_precision", "weighted_recall", "weighted_f1")
    results |= {name: float(computed[name]) for name in averages}
    results["log_loss"] = log_loss(probabilities, targets)
    results["ece"] = float(computed["ece"])
    support = computed["confusion_matrix"].sum(dim=1)
    for index, class_name in enumerate(class_names):
        results[f"precision/{class_name}"] = float(computed["precision"][index])
        results[f"f1/{class_name}"] = float(computed["f1"][index])
        results[f"support/{class_name}"] = int(support[index])
    return results


def log_loss(probabilities: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean negative log-probability of the true class (probabilities clipped to [eps, 1 - eps])."""
    eps = torch.finfo(probabilities.dtype).eps
    return float(F.nll_loss(probabilities.clamp(eps, 1 - eps).log(), targets))


def calibration_bins(
    probabilities: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Accuracy, mean confidence and share of samples per confidence bin: the bins over which
    MulticlassCalibrationError averages (a last bin holds confidences of exactly 1)."""
    confidences, accuracies = _multiclass_calibration_error_update(probabilities, targets)
    boundaries = torch.linspace(0, 1, CALIBRATION_BINS + 1, dtype=confidences.dtype)
    return _binning_bucketize(confidences, accuracies, boundaries)
