"""TensorBoard's HParams view gets the settings a researcher compares, hparams.yaml the full config."""

from __future__ import annotations

from pathlib import Path

import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from emotionvision.reporting.hparams import HEADLINE_SETTINGS, compared_hparams, job_hparams, log_hparams_view

SWEEP_JOB = ["augmentation=standard", "optimizer.lr=0.01", "seed=3", "data.batch_size=16"]


def test_a_sweep_jobs_choices_overrides_and_headline_settings(compose_train) -> None:
    cfg = compose_train(SWEEP_JOB, return_hydra_config=True)
    hparams = compared_hparams(cfg, cfg.hydra.runtime.choices, cfg.hydra.overrides.task)
    assert hparams == {
        "experiment": "null",
        "sanity": "none",
        "averaging": "none",
        "finetune": "full",
        "scheduler": "cosine",
        "optimizer": "adamw",
        "loss": "weighted_ce",
        "mixing": "none",
        "batch_augmentation": "none",
        "augmentation": "standard",
        "preprocess": "none",
        "data": "demo",
        "model": "resnet18",
        "optimizer/lr": 0.01,
        "seed": 3,
        "data/batch_size": 16,
        "model/backbone": "resnet18",
        "data/image_size": 64,
        "trainer/max_epochs": cfg.trainer.max_epochs,
        "tta": "none",
    }
    # without a Hydra job (train() called on a composed config): the headline settings
    assert list(job_hparams(compose_train(SWEEP_JOB))) == [key.replace(".", "/") for key in HEADLINE_SETTINGS]


def test_the_hparams_view_is_compact_and_hparams_yaml_complete(compose_train, tmp_path: Path) -> None:
    cfg = compose_train(SWEEP_JOB, return_hydra_config=True)
    compared = compared_hparams(cfg, cfg.hydra.runtime.choices, cfg.hydra.overrides.task)
    logger = TensorBoardLogger(tmp_path, name="tensorboard", version="", default_hp_metric=False)
    # the resolved config, as train() logs it first
    full = OmegaConf.to_container(compose_train([*SWEEP_JOB, f"paths.output_dir={tmp_path}"]), resolve=True)
    logger.log_hyperparams(full)
    log_hparams_view(logger, compared, {"test/acc": 0.5, "test/macro_f1": 0.4}, step=7)
    logger.finalize("success")

    (event_file,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file))
    events.Reload()
    plugin = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/session_start_info"])
    logged = session.session_start_info.hparams
    assert set(logged) == set(compared)
    assert logged["augmentation"].string_value == "standard" and logged["optimizer/lr"].number_value == 0.01
    assert not any("_target_" in key for key in logged)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(plugin["_hparams_/experiment"])
    assert {info.name.tag for info in experiment.experiment.metric_infos} == {"test/acc", "test/macro_f1"}

    saved = yaml.safe_load((tmp_path / "tensorboard" / "hparams.yaml").read_text())
    assert saved == full and saved["augmentation"]["_target_"]
