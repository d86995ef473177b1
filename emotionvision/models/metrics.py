"""The torchmetrics collections the LightningModule owns, one per stage, and their named scalars."""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)


def build_metrics(num_classes: int) -> MetricCollection:
    """Accuracy, macro-F1, per-class recall, macro and per-class ROC-AUC, confusion matrix
    (synced across DDP processes on compute)."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "macro_f1": MulticlassF1Score(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average=None),
            "auroc": MulticlassAUROC(num_classes, average="macro"),
            "auroc_per_class": MulticlassAUROC(num_classes, average=None),
            "confusion_matrix": MulticlassConfusionMatrix(num_classes),
        }
    )


def named_scalars(computed: dict[str, torch.Tensor], class_names: list[str]) -> dict[str, float]:
    """'acc', 'macro_f1', 'auroc', 'recall/<class>', 'auroc/<class>' of `build_metrics`' output."""
    results = {name: float(computed[name]) for name in ("acc", "macro_f1", "auroc")}
    for index, class_name in enumerate(class_names):
        results[f"recall/{class_name}"] = float(computed["recall"][index])
        results[f"auroc/{class_name}"] = float(computed["auroc_per_class"][index])
    return results
