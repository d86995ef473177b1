"""The LightningModule wrapping any registered backbone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torchmetrics import MeanMetric

from emotionvision.errors import UsageError
from emotionvision.models.backbones import body_modules, build_backbone, head_names
from emotionvision.models.checkpoint import (
    check_recorded_input_size,
    check_state,
    classifier_hparams,
    read_checkpoint,
    transfer_weights,
)
from emotionvision.models.losses import CrossEntropy
from emotionvision.models.metrics import EvaluationOutputs, build_metrics, compute_quietly, named_scalars
from emotionvision.models.tta import mean_log_probabilities, tta_views
from emotionvision.reporting.figures import confusion_matrix_figure
from emotionvision.rundir import STAGES, metric_key

FITTING = ("train", "val")  # the stages whose metrics the module logs itself
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, targets, dataset indices


class EmotionClassifier(pl.LightningModule):
    """Backbone + normalisation + loss + the torchmetrics of each stage.

    Input: float images in [0, 1]; normalisation (`mean`, `std`) happens inside, so a checkpoint
    carries its own preprocessing together with `class_names`, `input_size` and `face_crop` (the
    face-crop settings of `data.face_crop`, applied again by evaluation and prediction).
    An auxiliary head (Inception-V3) adds `aux_weight` x its loss in training only. `name` is the
    architecture of backbone "timm" (model=timm model.name=...), recorded in the checkpoint like the rest.
    Training and validation log their torchmetrics each epoch; a test gathers every image's
    probabilities in `test_outputs`, from which the report callback computes and logs the test metrics
    once. `predict_step` returns class probabilities through the same forward. `monitor` is the metric a
    plateau scheduler follows. `init_from` starts the network from an EmotionVision checkpoint (see
    `transfer_weights`).
    """

    def __init__(
        self,
        backbone: str,
        class_names: list[str],
        input_size: int = 224,
        stem: str = "standard",
        name: str | None = None,
        pretrained: bool = False,
        weights_path: str | None = None,
        aux_weight: float = 0.0,
        mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        std: tuple[float, float, float] = (0.229, 0.224, 0.225),
        channels_last: bool = False,
        face_crop: dict | None = None,
        init_from: str | None = None,
        init_class_map: dict[str, str] | None = None,
        monitor: str = "val/loss",
        loss: nn.Module | None = None,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., object] | None = None,
    ) -> None:
        super().__init__()
        # the loss module and the optimizer/scheduler partials stay out of the checkpoint (weights_only)
        self.save_hyperparameters(ignore=["loss", "optimizer", "scheduler"], logger=False)
        self.class_names = list(class_names)
        self.model = build_backbone(
            backbone, len(class_names), pretrained, weights_path, input_size, stem, architecture=name
        )
        if init_from:
            transfer_weights(self.model, backbone, stem, self.class_names, init_from, init_class_map, name)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.loss = loss if loss is not None else CrossEntropy()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # keyed "<stage>_metrics": a ModuleDict key may not shadow Module.train
        self.metrics = nn.ModuleDict(
            {f"{stage}_metrics": build_metrics(len(class_names)) for stage in FITTING}
        )
        self.test_outputs = EvaluationOutputs()
        self.mean_losses = nn.ModuleDict({f"{stage}_loss": MeanMetric() for stage in STAGES})

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return
        if stage == "fit" and isinstance(self.loss, CrossEntropy):
            self.loss.set_class_weights(datamodule.class_weights)

    @property
    def backbone(self) -> nn.ModuleList:
        """The network's layers without its class heads (what the finetuning callbacks freeze)."""
        return nn.ModuleList(body_modules(self.model, head_names(self.hparams.backbone, self.model)))

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        normalised = ((images - self.mean) / self.std).contiguous(memory_format=self.memory_format)
        return self.model(normalised)

    # the test-time augmentation of test_step and predict_step (none | flip | ten_crop: see
    # emotionvision/models/tta.py); evaluation, prediction and training's test set it
    tta: str = "none"

    def log_probabilities(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """Log class probabilities of float images in [0, 1], averaged over the views of `tta`."""
        return mean_log_probabilities(self(view).log_softmax(dim=1) for view in tta_views(images, tta))

    def probabilities(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """Class probabilities of float images in [0, 1], averaged over the views of `tta`."""
        return self.log_probabilities(images, tta).exp()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        images, targets, _ = batch  # targets: class indices, or target rows of mixed images (mixing=)
        outputs = self(images)
        logits, aux_logits = outputs if isinstance(outputs, tuple) else (outputs, None)
        loss = self.loss(logits, targets)
        if aux_logits is not None:
            loss = loss + self.hparams.aux_weight * self.loss(aux_logits, targets)
        self._update("train", logits.detach().softmax(dim=1), targets, loss)
        return loss

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        images, targets, indices = batch
        log_probabilities = self.log_probabilities(images, self.tta)
        self.test_outputs.update(log_probabilities.exp(), targets, indices)
        # log-probabilities are logits of the probabilities: the loss of the (averaged) probabilities
        loss = self.loss(log_probabilities, targets)
        self.mean_losses["test_loss"].update(loss.detach(), weight=len(targets))

    def predict_step(self, batch: torch.Tensor | Batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, tuple | list) else batch
        return self.probabilities(images, self.tta)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        images, targets, _ = batch
        logits = self(images)
        self._update("val", logits.softmax(dim=1), targets, self.loss(logits, targets))

    def _update(
        self, stage: str, probabilities: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor
    ) -> None:
        """Add a batch to the stage's metrics and mean loss. Target rows (mixed training images,
        emotionvision/data/mixing.py) are scored against their dominant class: the metrics take class
        indices; the loss was computed against the rows."""
        if targets.is_floating_point():
            targets = targets.argmax(dim=1)
        self.metrics[f"{stage}_metrics"].update(probabilities, targets)
        self.mean_losses[f"{stage}_loss"].update(loss.detach(), weight=len(targets))

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        """The mean test loss (the report callback, which runs first, logged the metrics)."""
        self.log(metric_key("test", "loss"), self.mean_losses["test_loss"].compute())
        self.mean_losses["test_loss"].reset()
        self.test_outputs.reset()

    def _log_epoch(self, stage: str) -> None:
        """Log the stage's metrics and mean loss (synced across processes by torchmetrics) and reset them.

        Every process syncs here, in the same order. (A value logged with sync_dist=True would instead
        be reduced whenever rank zero's progress bar reads it, out of step with the other ranks: a
        DDP deadlock.)
        """
        computed = compute_quietly(self.metrics[f"{stage}_metrics"])
        mean_loss = self.mean_losses[f"{stage}_loss"].compute()
        self.metrics[f"{stage}_metrics"].reset()
        self.mean_losses[f"{stage}_loss"].reset()
        self.log(metric_key(stage, "loss"), mean_loss, prog_bar=True)
        self.log_dict(named_scalars(computed, stage, self.class_names), sync_dist=False)
        if stage == "val" and not self.trainer.sanity_checking:
            self._log_confusion_figure(stage, computed["confusion_matrix"].cpu().numpy())

    def _log_confusion_figure(self, stage: str, matrix) -> None:
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger) and self.trainer.is_global_zero:
                title = f"{stage} confusion matrix, epoch {self.current_epoch}"
                figure = confusion_matrix_figure(matrix, self.class_names, title)
                logger.experiment.add_figure(
                    metric_key(stage, "confusion_matrix"), figure, self.current_epoch
                )

    def configure_optimizers(self) -> dict:
        # a frozen backbone (finetune=linear_probe|gradual) joins the optimizer when it is unfrozen
        optimizer = self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
        if not self.scheduler_factory:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": self.hparams.monitor},
        }


def load_classifier(path: str | Path, option: str = "ckpt_path") -> EmotionClassifier:
    """The trained classifier of a Lightning checkpoint, in eval mode on the CPU.

    Class names, input size and normalisation come from the checkpoint's hyperparameters; the
    backbone is built without downloading or reading ImageNet weights (the state dict replaces them).
    A file that is no such checkpoint, or one that disagrees with itself, ends in one UsageError line
    naming `option`.
    """
    if Path(path).suffix == ".onnx":
        raise UsageError(
            f"{option}: {path} is an ONNX export; this command takes a .ckpt checkpoint of "
            "emotionvision-train (emotionvision-predict also runs .onnx files)."
        )
    checkpoint = read_checkpoint(path, option)
    hparams = classifier_hparams(checkpoint, path, option)
    check_recorded_input_size(hparams, path, option)
    try:
        model = EmotionClassifier(
            **(hparams | {"pretrained": False, "weights_path": None, "init_from": None})
        )
    except (UsageError, TypeError) as error:  # settings the model does not take, or takes otherwise
        raise UsageError(
            f"{option}: {path} cannot be rebuilt from its hyper_parameters ({str(error).splitlines()[0]}): "
            "use a checkpoint written by emotionvision-train."
        ) from error
    # checkpoints written before the loss became a module hold its class weights: not model state
    state = {key: value for key, value in checkpoint["state_dict"].items() if key != "class_weights"}
    heads = head_names(hparams["backbone"], model.model)
    check_state(model, state, path, option, model.class_names, heads, prefix="model.")
    model.load_state_dict(state)
    return model.eval()
