"""Structured-config schemas (Hydra's ConfigStore) of `emotionvision-train`: a value of the wrong type
(`seed=abc`, `test=maybe`, `monitor.mode=maximum`, `model.aux_weight=big`) or a key the node does not
have (`model.input_size=48`: the size is `data.image_size`) fails when Hydra composes the config,
before anything runs.

conf/train.yaml extends `schema/train` and conf/model/*.yaml extend `schema/model`, as in Hydra's
structured-config tutorial (`defaults: [/schema/<name>@_here_, _self_]`): the YAML files hold the
values and their comments, the schemas the types. The commands call `register_schemas()` before Hydra
composes.

The data node has no schema yet (typed Any): EmotionDataModule's arguments are being reworked, and a
`schema/data` mirroring them belongs with that change. The other nodes (trainer, callbacks, logger,
optimizer, ...) are keyword arguments of their `_target_`, checked when they are instantiated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class MonitorMode(str, Enum):
    """`monitor.mode`: whether the monitored metric is better high (max) or low (min).

    Its members read and compare as the plain strings "max" and "min", in repr too: Lightning's
    callbacks key their state in a checkpoint by it, so checkpoints of older runs still resume."""

    max = "max"
    min = "min"

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


@dataclass
class MonitorConfig:
    """The one metric the run optimises and its direction."""

    metric: str = MISSING
    mode: MonitorMode = MISSING


@dataclass
class ModelConfig:
    """The keyword arguments of `EmotionClassifier`, but `class_names` and `input_size`: the data give
    them when the model is instantiated (`emotionvision.cli.train.instantiate_run`)."""

    _target_: str = MISSING
    backbone: str = MISSING
    stem: str = "standard"
    name: str | None = None  # the timm architecture of backbone timm (model=timm model.name=...)
    pretrained: bool = False
    weights_path: str | None = None
    aux_weight: float = 0.0
    mean: list[float] = MISSING
    std: list[float] = MISSING
    init_from: str | None = None
    # {its class: ours} or null; Any: OmegaConf cannot merge an override into a typed dict that is None
    init_class_map: Any = None
    face_crop: Any = None  # data.face_crop
    channels_last: bool = False
    monitor: str = MISSING
    loss: Any = None
    optimizer: Any = None
    scheduler: Any = None


@dataclass
class TrainConfig:
    """The top level of `emotionvision-train`'s config; the config groups fill the nodes typed Any.
    A new top-level key of conf/train.yaml (or a new group's node) needs its field here."""

    task_name: str = MISSING
    threads: Any = None  # auto | a number | null
    tags: list[str] = field(default_factory=list)
    seed: int = MISSING
    resume: str | None = None
    ckpt_path: str | None = None
    trusted_targets: list[str] = field(default_factory=list)  # emotionvision/targets.py
    test: bool = MISSING
    keep_training_state: bool = False  # emotionvision.callbacks.DropTrainingState
    tta: str = MISSING  # none | flip | ten_crop (emotionvision.models.tta.check_tta)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    paths: Any = MISSING
    images: Any = MISSING
    model: ModelConfig = MISSING  # model/*.yaml extend schema/model too
    data: Any = MISSING
    augmentation: Any = None
    batch_augmentation: Any = None
    mixing: Any = None
    loss: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = None
    trainer: Any = MISSING
    logger: Any = None
    callbacks: Any = None


def register_schemas() -> None:
    """Store the schemas as `schema/train` and `schema/model` (idempotent)."""
    store = ConfigStore.instance()
    store.store(group="schema", name="train", node=TrainConfig)
    store.store(group="schema", name="model", node=ModelConfig)
