"""Cross-validation runs: `emotionvision-train data.folds=N` (or `loso`) is a multirun of a job per fold.

conf/hydra/default.yaml wires it: Hydra's mode turns to MULTIRUN (`${fold_mode:}`), the sweep gains
`data.fold=range(N)` (`${fold_range:}`, a sweeper parameter, so it combines with other swept keys and
runs under any launcher), every fold runs in `fold<k>/` (under a directory named by the other swept
values, `${fold_subdir:}`), and `FoldSummary` writes each cross-validation's summary when the sweep ends.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from emotionvision.errors import UsageError, usage_error, usage_exit
from emotionvision.reporting.cv_summary import write_cv_summary

log = logging.getLogger(__name__)

FOLD_KEY = "data.fold"


def register_fold_resolvers() -> None:
    """`${fold_mode:folds,fold}`, `${fold_range:folds}` and `${fold_subdir:num,fold,sweep_dir,overrides}`."""
    OmegaConf.register_new_resolver("fold_mode", fold_mode, replace=True)
    OmegaConf.register_new_resolver("fold_range", fold_range, replace=True)
    OmegaConf.register_new_resolver("fold_subdir", fold_subdir, replace=True)


def fold_mode(folds: int | str | None, fold: int | None) -> str | None:
    """Hydra's mode: MULTIRUN for a cross-validation whose fold is not chosen, else as the command says."""
    return "MULTIRUN" if folds is not None and fold is None else None


def fold_range(folds: int | str | None, _root_: DictConfig) -> str:
    """The sweep of `data.fold`: every fold of `data.folds` (for loso, one per group of the data), or
    null (no cross-validation). Only Hydra's basic sweeper runs every fold (a search, e.g. Optuna's,
    would sample folds): with another, `data.folds` ends the program with one line."""
    if folds is None:
        return "null"
    sweeper = str(OmegaConf.select(_root_, "hydra.sweeper._target_", default=""))
    try:
        if not sweeper.endswith(".BasicSweeper"):
            raise UsageError(
                f"data.folds={folds} runs every fold under Hydra's basic sweeper, not "
                f"{sweeper.rsplit('.', 1)[-1]}: search on one split (drop data.folds), then cross-validate "
                "the best settings."
            )
        return f"range({instantiate(_root_.data, manifest_path=None).fold_count()})"
    except Exception as error:  # instantiate wraps the data module's errors
        usage = usage_error(error)
        if usage is None:
            raise
        raise usage_exit(usage) from None


def fold_subdir(num: int, fold: int | None, sweep_dir: str, overrides: ListConfig) -> str:
    """A job's directory in the sweep: its number; a fold's is fold<k>, under a directory named by the
    job's values of the other swept keys when the sweep varies more than the fold."""
    if fold is None:
        return str(num)
    swept = swept_keys(Path(sweep_dir) / "multirun.yaml")
    variant = ",".join(line for line in overrides if _key(line) in swept)
    return f"{variant.replace('/', '_')}/fold{fold}" if variant else f"fold{fold}"


def swept_keys(multirun_config: Path) -> set[str]:
    """Keys a sweep varies, other than the fold: from its command line and its sweeper parameters."""
    if not multirun_config.is_file():
        return set()
    master = OmegaConf.load(multirun_config)
    params = OmegaConf.to_container(master.hydra.sweeper.get("params") or {}, resolve=False)
    lines = [*master.hydra.overrides.task, *(f"{k}={v}" for k, v in params.items() if k != FOLD_KEY)]
    overrides = OverridesParser.create().parse_overrides([line for line in lines if _key(line) != FOLD_KEY])
    return {override.get_key_element() for override in overrides if override.is_sweep_override()}


def _key(line: str) -> str:
    return line.split("=", 1)[0].lstrip("+~")


class FoldSummary(Callback):
    """Hydra callback: when a sweep ends, the summary of each cross-validation in it (its folds' runs
    share all other overrides) goes into the folds' parent directory."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        for parent, fold_dirs in cross_validations(Path(config.hydra.sweep.dir)).items():
            report = write_cv_summary(parent, fold_dirs)
            log.info("Cross-validation summary of %d folds in %s\n%s", len(fold_dirs), parent, report)


def cross_validations(sweep_dir: Path) -> dict[Path, list[Path]]:
    """{directory holding the folds: fold run directories in fold order} of the fold runs of a sweep."""
    folds: dict[Path, list[tuple[int, Path]]] = defaultdict(list)
    for overrides_file in sweep_dir.glob("**/.hydra/overrides.yaml"):
        run_dir = overrides_file.parent.parent
        config = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
        fold = OmegaConf.select(config, FOLD_KEY)
        if fold is not None:
            folds[run_dir.parent].append((int(fold), run_dir))
    return {parent: [run_dir for _, run_dir in sorted(runs)] for parent, runs in folds.items()}
