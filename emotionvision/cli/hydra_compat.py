"""A work-around for hydra-core 1.3 that the commands install before Hydra composes their config.

Hydra 1.3 deep-copies its config repository, and with it the whole `ConfigStore` (Hydra's own configs,
its plugins' and `emotionvision.cli.schemas`), once for every config group it lists: `--help` spent
about 2.5 s of CPU on 2 cores in those copies. Hydra 1.4 reads the store singleton where it is used
instead of holding a copy of it (facebookresearch/hydra pull request 2928); `share_config_store`
gives 1.3 the same behaviour. Drop it with hydra-core>=1.4.
"""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore


def _same_store(store: ConfigStore, memo: dict[int, Any]) -> ConfigStore:
    return store


def share_config_store() -> None:
    """Make a deep copy of Hydra's `ConfigStore` singleton the singleton itself (idempotent): nothing
    copies the store to change it, and the copy Hydra 1.3 makes per config group is what made `--help`
    slow."""
    ConfigStore.__deepcopy__ = _same_store
