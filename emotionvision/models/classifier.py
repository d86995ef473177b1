"""The LightningModule wrapping any registered backbone."""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import MeanMetric

from emotionvision.models.backbones import build_backbone
from emotionvision.reporting.figures import confusion_matrix_figure
from emotionvision.reporting.metrics import build_metrics, scalar_results

STAGES = ("train", "val", "test")


class EmotionClassifier(pl.LightningModule):
    """Backbone + normalisation + weighted cross-entropy + torchmetrics for each stage.

    Input: float images in [0, 1]; normalisation (`mean`, `std`) happens inside, so a checkpoint
    carries its own preprocessing together with `class_names` and `input_size`.
    An auxiliary head (Inception-V3) adds `aux_weight` x its loss in training only.
    """

    def __init__(
        self,
        backbone: str,
        class_names: list[str],
        input_size: int = 224,
        pretrained: bool = False,
        weights_path: str | None = None,
        aux_weight: float = 0.0,
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
        loss: dict | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., object] | None = None,
    ) -> None:
        super().__init__()
        # optimizer/scheduler are partials: kept out of the checkpoint (loads with weights_only)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)
        self.class_names = list(class_names)
        self.model = build_backbone(backbone, len(class_names), pretrained, weights_path, input_size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.register_buffer("class_weights", torch.ones(len(class_names)))
        self.loss_options = dict(loss or {"class_weighted": True, "label_smoothing": 0.0})
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # keyed "<stage>_metrics": a ModuleDict key may not shadow Module.train
        self.metrics = nn.ModuleDict(
            {f"{stage}_metrics": build_metrics(len(class_names)) for stage in STAGES}
        )
        self.mean_losses = nn.ModuleDict({f"{stage}_loss": MeanMetric() for stage in STAGES})
        self.results: dict[str, dict[str, float]] = {}
        self.confusion: dict[str, list[list[int]]] = {}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and self.loss_options["class_weighted"] and datamodule is not None:
            self.class_weights.copy_(datamodule.class_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.model((images - self.mean) / self.std)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        weight = self.class_weights if self.loss_options["class_weighted"] else None
        return F.cross_entropy(
            logits, targets, weight=weight, label_smoothing=self.loss_options["label_smoothing"]
        )

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        outputs = self(images)
        logits, aux_logits = outputs if isinstance(outputs, tuple) else (outputs, None)
        loss = self.loss(logits, targets)
        if aux_logits is not None:
            loss = loss + self.hparams.aux_weight * self.loss(aux_logits, targets)
        self._update("train", logits, targets, loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def _evaluate(self, stage: str, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, targets = batch
        logits = self(images)
        self._update(stage, logits, targets, self.loss(logits, targets))

    def _update(self, stage: str, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        self.metrics[f"{stage}_metrics"].update(logits.detach().softmax(dim=1), targets)
        self.mean_losses[f"{stage}_loss"].update(loss.detach(), weight=len(targets))

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def _log_epoch(self, stage: str) -> None:
        """Log the stage's metrics and mean loss (synced across processes by torchmetrics) and reset them.

        Every process syncs here, in the same order. (A value logged with sync_dist=True would instead
        be reduced whenever rank zero's progress bar reads it, out of step with the other ranks: a
        DDP deadlock.)
        """
        computed = self.metrics[f"{stage}_metrics"].compute()
        mean_loss = self.mean_losses[f"{stage}_loss"].compute()
        self.metrics[f"{stage}_metrics"].reset()
        self.mean_losses[f"{stage}_loss"].reset()
        self.log(f"{stage}/loss", mean_loss, prog_bar=True)
        results = scalar_results(computed, self.class_names)
        self.results[stage] = results
        self.confusion[stage] = computed["confusion_matrix"].tolist()
        self.log_dict({f"{stage}/{name}": value for name, value in results.items()}, sync_dist=False)
        if stage != "train" and not self.trainer.sanity_checking:
            self._log_confusion_figure(stage)

    def _log_confusion_figure(self, stage: str) -> None:
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger) and self.trainer.is_global_zero:
                title = f"{stage} confusion matrix, epoch {self.current_epoch}"
                figure = confusion_matrix_figure(self.confusion[stage], self.class_names, title)
                logger.experiment.add_figure(f"{stage}/confusion_matrix", figure, self.current_epoch)

    def configure_optimizers(self) -> dict:
        optimizer = self.optimizer_factory(self.parameters())
        if not self.scheduler_factory:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "interval": "epoch",
                "monitor": "val/macro_f1",
            },
        }
