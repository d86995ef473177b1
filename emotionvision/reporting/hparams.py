"""What TensorBoard's HParams view compares: a run's config group choices, the overrides of its job
and a few headline settings, not every key of the resolved config (that is in hparams.yaml)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:  # the caller's logger: reporting/ does not import Lightning
    from lightning.pytorch.loggers import TensorBoardLogger

# config groups that say where and how a run is written, not what is trained
PLUMBING_GROUPS = frozenset({"paths", "images", "logger", "callbacks", "trainer", "hparams_search", "hydra"})
# settings every run shows, whether or not its job overrides them
HEADLINE_SETTINGS = (
    "model.backbone",
    "optimizer.lr",
    "data.batch_size",
    "data.image_size",
    "trainer.max_epochs",
    "seed",
    "tta",
)
HParam = bool | int | float | str


def compared_hparams(
    cfg: DictConfig, choices: Mapping[str, str | None], overrides: Sequence[str]
) -> dict[str, HParam]:
    """The hyperparameters a researcher compares first, named as TensorBoard flattens configs
    ('optimizer/lr'): the group `choices` (Hydra's runtime.choices: 'model', 'augmentation', ...; not
    the PLUMBING_GROUPS or hydra/*), the keys the job's `overrides` set (Hydra's overrides.task: a
    sweep's swept keys; hydra.* aside) and the HEADLINE_SETTINGS, with their values in `cfg`."""
    chosen = {
        group: choice for group, choice in choices.items() if group.split("/")[0] not in PLUMBING_GROUPS
    }
    keys = [override.key_or_group for override in OverridesParser.create().parse_overrides(list(overrides))]
    settings = [
        key for key in (*keys, *HEADLINE_SETTINGS) if key not in choices and not key.startswith("hydra.")
    ]
    values = {key: OmegaConf.select(cfg, key, default=None) for key in settings}
    return {key.replace(".", "/"): _hparam(value) for key, value in (chosen | values).items()}


def job_hparams(cfg: DictConfig) -> dict[str, HParam]:
    """`compared_hparams` of the running Hydra job (without one: of the config alone)."""
    if not HydraConfig.initialized():
        return compared_hparams(cfg, {}, [])
    hydra = HydraConfig.get()
    return compared_hparams(cfg, hydra.runtime.choices, hydra.overrides.task)


def log_hparams_view(
    logger: TensorBoardLogger, hparams: dict[str, HParam], metrics: dict[str, float], step: int
) -> None:
    """Log `hparams` beside the final `metrics` for TensorBoard's HParams view; the logger's own
    hyperparameters (its hparams.yaml: the full config logged before) stay as they are."""
    kept = logger.hparams
    logger.hparams = {}  # log_hyperparams adds `hparams` to these
    logger.log_hyperparams(hparams, metrics=metrics, step=step)
    logger.hparams = kept


def _hparam(value: object) -> HParam:
    """A value TensorBoard's HParams view takes: numbers, strings and booleans as they are, None as
    'null', containers as text."""
    if value is None:
        return "null"
    if OmegaConf.is_config(value):
        return str(OmegaConf.to_container(value, resolve=True))
    return value if isinstance(value, bool | int | float | str) else str(value)
