"""The torchmetrics the LightningModule owns: the training and validation metric collections with their
named scalars, and the gathered outputs of evaluation."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.aggregation import CatMetric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)

from emotionvision.reporting.scores import one_vs_rest_quiet
from emotionvision.rundir import metric_key

OUTPUTS = ("probabilities", "targets", "indices")


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


def compute_quietly(metrics: MetricCollection) -> dict[str, torch.Tensor]:
    """`metrics.compute()` without torchmetrics' ROC warnings about a class missing from the epoch's
    targets (or filling them): a validation set, or the batches of a short epoch, often lacks a class."""
    with one_vs_rest_quiet():
        return metrics.compute()


def named_scalars(computed: dict[str, torch.Tensor], stage: str, class_names: list[str]) -> dict[str, float]:
    """'<stage>/acc', '<stage>/macro_f1', '<stage>/auroc', '<stage>/recall/<class>' and
    '<stage>/auroc/<class>' of `build_metrics`' output."""
    results = {metric_key(stage, name): float(computed[name]) for name in ("acc", "macro_f1", "auroc")}
    for index, class_name in enumerate(class_names):
        results[metric_key(stage, "recall", class_name)] = float(computed["recall"][index])
        results[metric_key(stage, "auroc", class_name)] = float(computed["auroc_per_class"][index])
    return results


class EvaluationOutputs(nn.Module):
    """Every evaluated image's probabilities, target and dataset index, from all processes: torchmetrics'
    CatMetric syncs shards of unequal size (each image is evaluated once under DDP). The report and the
    sanity checks compute every test metric from these, once."""

    def __init__(self) -> None:
        super().__init__()
        self.parts = nn.ModuleDict({name: CatMetric(nan_strategy="disable") for name in OUTPUTS})

    def update(self, probabilities: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor) -> None:
        for name, values in zip(OUTPUTS, (probabilities, targets, indices), strict=True):
            self.parts[name].update(values)

    def compute(self) -> dict[str, torch.Tensor]:
        """{'probabilities': N x C float, 'targets': N long, 'indices': N long}, on the CPU, ordered by
        dataset index (synced across processes on the first call after an update)."""
        values = {name: self.parts[name].compute().cpu() for name in OUTPUTS}
        values["targets"] = values["targets"].long()
        values["indices"] = values["indices"].long()
        order = values["indices"].argsort()
        return {name: value[order] for name, value in values.items()}

    def reset(self) -> None:
        for metric in self.parts.values():
            metric.reset()
