"""`emotionvision-train`: compose the config, instantiate, fit, test, write metrics.json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from emotionvision.distributed import keep_ranks_in_job_dir
from emotionvision.reporting.report import write_test_report
from emotionvision.reporting.sanity import write_sanity_report

log = logging.getLogger(__name__)


def instantiate_run(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """The datamodule, model and trainer (with callbacks and loggers) the config describes."""
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    model: pl.LightningModule = instantiate(
        cfg.model,
        _convert_="all",  # plain lists/dicts in hparams: checkpoints load with weights_only=True
        class_names=datamodule.class_names,
        input_size=datamodule.image_size,
        loss=OmegaConf.to_container(cfg.loss),
        optimizer=cfg.optimizer,
        scheduler=cfg.scheduler or None,
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    return datamodule, model, trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test one model as the config says; return the metrics written to metrics.json."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = instantiate_run(cfg)
    if trainer.world_size > 1:
        keep_ranks_in_job_dir()

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    metrics = {"epochs_trained": trainer.current_epoch}
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.best_model_score is not None:
        metrics[f"best_{checkpoint.monitor}"] = float(checkpoint.best_model_score)
    if cfg.test:
        best_path = checkpoint.best_model_path if checkpoint is not None else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None)
        metrics |= {f"test/{name}": value for name, value in model.results["test"].items()}
        metrics["test/confusion_matrix"] = model.confusion["test"]
    if trainer.is_global_zero:
        if cfg.test:  # the full report of the tested model; the values trainer.test logged win
            metrics = write_test_report(model, datamodule, Path(cfg.paths.output_dir)) | metrics
        write_run_summary(cfg, trainer, metrics)
        if cfg.sanity.name != "none":
            write_sanity_report(cfg.sanity, model, Path(cfg.paths.output_dir))
    return metrics


def write_run_summary(cfg: DictConfig, trainer: pl.Trainer, metrics: dict) -> None:
    """metrics.json in the run directory, and hparams with the final metrics for TensorBoard."""
    output_dir = Path(cfg.paths.output_dir)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log.info("Metrics written to %s", output_dir / "metrics.json")
    scalars = {k: v for k, v in metrics.items() if isinstance(v, float | int)}
    hparams = flatten(OmegaConf.to_container(cfg, resolve=True))
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):  # HParams tab: config beside final metrics
            logger.log_hyperparams(hparams, metrics=scalars)
        else:
            logger.log_hyperparams(hparams)
            logger.log_metrics(scalars)
        logger.save()


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{'a': {'b': 1}} -> {'a/b': 1}, lists as strings (TensorBoard's hparams take scalars)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}/")
        else:
            flat[name] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat


@hydra.main(version_base="1.3", config_path="pkg://emotionvision.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point; returns `optimized_metric` for hyperparameter sweepers."""
    metrics = train(cfg)
    return metrics.get(f"best_{cfg.optimized_metric}")


if __name__ == "__main__":
    main()
