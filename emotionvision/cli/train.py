"""`emotionvision-train`: compose the config, instantiate, fit, test: callbacks write the run directory.

Lightning, torch and the models are imported when a run starts (in `train`, `instantiate_run` and
`set_torch_threads`), so that `--help`, `--cfg job` and a config error answer without them."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from emotionvision.cli.crossval import register_sweep_resolvers
from emotionvision.cli.ddp import keep_ranks_in_job_dir
from emotionvision.cli.hydra_compat import share_config_store
from emotionvision.cli.resume import register_resolvers, resume_config
from emotionvision.cli.schemas import register_schemas
from emotionvision.cli.usage import reports_usage_errors
from emotionvision.errors import check_arguments
from emotionvision.rundir import RunDir, best_key
from emotionvision.runtime import set_torch_threads

if TYPE_CHECKING:
    import lightning.pytorch as pl

log = logging.getLogger(__name__)


def instantiate_run(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """The datamodule, model and trainer (with callbacks and loggers) the config describes."""
    from emotionvision.data.augmentation import check_batch_augmentation

    check_arguments(cfg.trainer, "trainer")  # a misspelt Trainer key fails before anything runs
    check_batch_augmentation(cfg.data.get("batch_augmentation"))
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    # the data give the model its classes and input size; plain lists/dicts in hparams: checkpoints
    # load with weights_only=True
    model: pl.LightningModule = instantiate(
        cfg.model, _convert_="all", class_names=datamodule.class_names, input_size=cfg.data.image_size
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    return datamodule, model, trainer


def train(cfg: DictConfig, checkpoint_option: str = "ckpt_path") -> dict[str, float]:
    """Fit and test one model as the config says; returns the final logged metrics and the best
    monitored value (`best_key(monitor.metric)`). A `cfg.ckpt_path` to continue from is checked before
    Lightning loads it (`check_training_checkpoint`; a bad one ends in one line naming
    `checkpoint_option`, the setting that chose it)."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    from emotionvision.models.checkpoint import check_training_checkpoint
    from emotionvision.models.tta import check_tta
    from emotionvision.reporting.hparams import job_hparams, log_hparams_view

    # checked before fit, not after it; the saved config of a run resumed from before tta= has none
    tta = check_tta(cfg.get("tta", "none"))
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = instantiate_run(cfg)
    if cfg.ckpt_path:
        check_training_checkpoint(cfg.ckpt_path, model, checkpoint_option)
    if trainer.world_size > 1:
        keep_ranks_in_job_dir()
    params = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(params)

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)  # Ctrl-C: exits, resumable
    checkpoint = trainer.checkpoint_callback
    best_score = None if checkpoint is None else checkpoint.best_model_score
    if cfg.test:
        best_path = checkpoint.best_model_path if checkpoint is not None else ""
        model.tta = tta
        trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1}
    metrics[best_key(cfg.monitor.metric)] = None if best_score is None else float(best_score)
    for logger in trainer.loggers:  # TensorBoard's HParams tab: the compared settings, final metrics
        if isinstance(logger, TensorBoardLogger):
            final = {name: value for name, value in metrics.items() if value is not None}
            log_hparams_view(logger, job_hparams(cfg), final, trainer.global_step)
            logger.finalize("success")  # flushes the writer the test reopened
    return metrics


# the resolvers of conf/hydra/default.yaml and train.yaml and the config schemas, before Hydra composes
register_resolvers()
register_sweep_resolvers()
register_schemas()
share_config_store()


@hydra.main(version_base="1.3", config_path="pkg://emotionvision.conf", config_name="train")
@reports_usage_errors("emotionvision-train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point; returns the best validation value of `monitor.metric` for sweepers."""
    run = RunDir(HydraConfig.get().runtime.output_dir)
    option = "ckpt_path" if cfg.resume is None else f"resume={cfg.resume}"
    threads = cfg.threads  # the command's, not a resumed run's
    cfg, done = resume_config(cfg, run)  # before torch: a bad resume= answers at once
    name = best_key(cfg.monitor.metric)
    if done:
        log.info("%s already finished (resume=auto): skipped", run.path)
        return run.read_metrics().get(name)
    set_torch_threads(threads)
    return train(cfg, option)[name]


if __name__ == "__main__":
    main()
