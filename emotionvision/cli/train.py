"""`emotionvision-train`: compose the config, instantiate, fit, test: callbacks write the run directory."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from emotionvision.cli.crossval import register_fold_resolvers
from emotionvision.cli.ddp import keep_ranks_in_job_dir
from emotionvision.cli.resume import register_resolvers, resume_config
from emotionvision.cli.usage import reports_usage_errors
from emotionvision.errors import check_arguments

log = logging.getLogger(__name__)


def instantiate_run(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """The datamodule, model and trainer (with callbacks and loggers) the config describes."""
    check_arguments(cfg.trainer, "trainer")  # a misspelt Trainer key fails before anything runs
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    # plain lists/dicts in hparams: checkpoints load with weights_only=True
    model: pl.LightningModule = instantiate(cfg.model, _convert_="all", class_names=datamodule.class_names)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    return datamodule, model, trainer


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit and test one model as the config says; returns the final logged metrics and the best
    monitored value (`best_<monitor.metric>`)."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = instantiate_run(cfg)
    if trainer.world_size > 1:
        keep_ranks_in_job_dir()
    for logger in trainer.loggers:
        logger.log_hyperparams(flatten(OmegaConf.to_container(cfg, resolve=True)))

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)  # Ctrl-C: exits, resumable
    checkpoint = trainer.checkpoint_callback
    best_score = (
        None if checkpoint is None or checkpoint.best_model_score is None else checkpoint.best_model_score
    )
    if cfg.test:
        best_path = checkpoint.best_model_path if checkpoint is not None else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None)
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items() if value.numel() == 1}
    metrics[f"best_{cfg.monitor.metric}"] = None if best_score is None else float(best_score)
    return metrics


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """{'a': {'b': 1}} -> {'a/b': 1}, other values as strings (loggers' hparams take scalars)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, f"{name}/")
        else:
            flat[name] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat


# the resolvers of conf/hydra/default.yaml, before Hydra composes
register_resolvers()
register_fold_resolvers()


@hydra.main(version_base="1.3", config_path="pkg://emotionvision.conf", config_name="train")
@reports_usage_errors("emotionvision-train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point; returns the best validation value of `monitor.metric` for sweepers."""
    output_dir = Path(HydraConfig.get().runtime.output_dir)
    cfg, done = resume_config(cfg, output_dir)
    name = f"best_{cfg.monitor.metric}"
    if done:
        log.info("%s already finished (resume=auto): skipped", output_dir)
        return json.loads((output_dir / "metrics.json").read_text()).get(name)
    return train(cfg)[name]


if __name__ == "__main__":
    main()
