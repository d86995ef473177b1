"""Cross-validation runs: `emotionvision-train data.folds=N` (or `loso`) is a multirun of a job per fold.

conf/hydra/train.yaml wires it, for emotionvision-train only: Hydra's mode turns to MULTIRUN
(`${fold_mode:}`); when the sweep starts, the `CrossValidation` callback counts the folds (for loso, the
groups of the data) and puts `data.fold=range(N)` among the sweeper's parameters, so the folds combine
with other swept keys and run under any launcher; every fold runs in `fold<k>/` (under a directory named
by the other swept values, `${fold_subdir:}`); when the sweep ends, the callback writes each
cross-validation's summary.

The reporting modules (scipy, torch) are imported where a sweep uses them, not with the commands:
`emotionvision-train --help` and a config error answer without them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, read_write

from emotionvision.errors import UsageError, usage_error, usage_exit
from emotionvision.rundir import RunDir

log = logging.getLogger(__name__)


def register_sweep_resolvers() -> None:
    """`${fold_mode:folds,fold}` and `${fold_subdir:num,fold,sweep_dir,overrides}` of
    conf/hydra/train.yaml, and `${sweep_version:fold,run_dir}` of conf/logger/tensorboard.yaml."""
    OmegaConf.register_new_resolver("fold_mode", fold_mode, replace=True)
    OmegaConf.register_new_resolver("fold_subdir", fold_subdir, replace=True)
    OmegaConf.register_new_resolver("sweep_version", sweep_version, replace=True)


def runs_every_fold(folds: int | str | None, fold: int | None) -> bool:
    """True for a cross-validation whose fold is not chosen: it runs every fold."""
    return folds is not None and fold is None


def fold_mode(folds: int | str | None, fold: int | None) -> str | None:
    """Hydra's mode: MULTIRUN for a cross-validation that runs every fold, else as the command says."""
    return "MULTIRUN" if runs_every_fold(folds, fold) else None


def fold_subdir(num: int, fold: int | None, sweep_dir: str, overrides: ListConfig | list[str]) -> str:
    """A job's directory in the sweep: its number; a fold's is fold<k>, under a directory named by the
    job's values of the other swept keys when the sweep varies more than the fold."""
    if fold is None:
        return str(num)
    variant = sweep_variant(Path(sweep_dir), overrides)
    return f"{variant}/fold{fold}" if variant else f"fold{fold}"


def sweep_version(fold: int | None, run_dir: str) -> str:
    """The TensorBoard logger's version (its folder in tensorboard/) of the run in `run_dir`: in a
    sweep's job that is not a fold's (`<sweep>/<num>`), its `sweep_variant`, so that `tensorboard
    --logdir <sweep>` lists `0/tensorboard/seed=0`...; '' (tensorboard/ itself) for a single run or
    a fold, whose directories name it. From the job's saved overrides: a resumed job keeps its folder."""
    run = RunDir(run_dir)
    if fold is not None or not run.overrides.is_file():
        return ""
    return sweep_variant(run.path.parent, OmegaConf.load(run.overrides))


def sweep_variant(sweep_dir: Path, overrides: ListConfig | list[str]) -> str:
    """A job's `overrides` of the keys its sweep in `sweep_dir` varies (`sweep_override_keys`, data.fold
    aside), as `key=value,...` with '/' as '_' (a folder's name); '' outside a sweep."""
    swept = sweep_override_keys(sweep_dir / "multirun.yaml")
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    variant = ",".join(override.input_line for override in parsed if override.key_or_group in swept)
    return variant.replace("/", "_")


def sweep_override_keys(multirun_config: Path) -> set[str]:
    """The keys a sweep gives several values (`a,b`, `range(...)`), on its command line or in its
    sweeper parameters, data.fold aside; empty without the sweep's multirun.yaml."""
    from emotionvision.reporting.sweep_runs import FOLD_KEY

    if not multirun_config.is_file():
        return set()
    master = OmegaConf.load(multirun_config)
    params = sweeper_params(master.hydra.sweeper)
    lines = [*master.hydra.overrides.task, *(f"{key}={value}" for key, value in params.items())]
    overrides = OverridesParser.create().parse_overrides(lines)
    return {override.key_or_group for override in overrides if override.is_sweep_override()} - {FOLD_KEY}


def sweeper_params(sweeper: DictConfig) -> dict[str, str]:
    """A sweeper's parameters ({key: values}, unresolved); {} where it has none."""
    params = sweeper.get("params")
    return {} if params is None else OmegaConf.to_container(params, resolve=False)


class CrossValidation(Callback):
    """Hydra callback of emotionvision-train: a sweep with `data.folds` (and no `data.fold`) runs every
    fold, and ends with the summary of each cross-validation in it (of the folds it planned: one that
    failed, or never ran, is named there as missing)."""

    planned_folds: int | None = None  # counted when the sweep starts

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Put `data.fold=range(N)` first among the sweeper's parameters (Hydra instantiates the sweeper
        from `config` next). A usage error ends the program with one line: Hydra would turn an
        exception of a callback into a warning."""
        try:
            count = fold_count(config)
        except (UsageError, InstantiationException) as error:
            usage = usage_error(error)
            if usage is None:
                raise
            raise usage_exit(usage) from None
        self.planned_folds = count
        if count is not None:
            from emotionvision.reporting.sweep_runs import FOLD_KEY

            sweeper = config.hydra.sweeper
            with read_write(sweeper):
                sweeper.params = {FOLD_KEY: f"range({count})", **sweeper_params(sweeper)}

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """The summary of each cross-validation (its folds' runs share all other overrides) in the
        folds' parent directory."""
        from emotionvision.reporting.cv_summary import write_cv_summary  # torch, via TensorBoard's writer

        for parent, fold_dirs in cross_validations(Path(config.hydra.sweep.dir)).items():
            report = write_cv_summary(parent, fold_dirs, self.planned_folds)
            log.info("Cross-validation summary of %d fold runs in %s\n%s", len(fold_dirs), parent, report)


def fold_count(config: DictConfig) -> int | None:
    """How many folds the sweep of `config` adds: those of `data.folds` (for loso, the groups of the
    data) when no `data.fold` is chosen, else None. UsageError under a sweeper other than Hydra's basic
    one (a search, e.g. Optuna's, would sample folds)."""
    folds = OmegaConf.select(config, "data.folds")
    if not runs_every_fold(folds, OmegaConf.select(config, "data.fold")):
        return None
    sweeper = str(config.hydra.sweeper._target_)
    if not sweeper.endswith(".BasicSweeper"):
        raise UsageError(
            f"data.folds={folds} runs every fold under Hydra's basic sweeper, not "
            f"{sweeper.rsplit('.', 1)[-1]}: search on one split (drop data.folds), then cross-validate "
            "the best settings."
        )
    return instantiate(config.data, manifest_path=None).fold_count()


def cross_validations(sweep_dir: Path) -> dict[Path, list[Path]]:
    """{directory holding the folds: fold run directories in fold order} of the fold runs of a sweep."""
    from emotionvision.reporting.sweep_runs import FOLD_KEY

    folds: dict[Path, list[tuple[int, Path]]] = defaultdict(list)
    for config_file in sweep_dir.glob(f"**/{RunDir('.').config}"):  # **/.hydra/config.yaml
        run = RunDir(config_file.parent.parent)
        fold = OmegaConf.select(run.read_config(), FOLD_KEY)
        if fold is not None:
            folds[run.path.parent].append((int(fold), run.path))
    return {parent: [run_dir for _, run_dir in sorted(runs)] for parent, runs in folds.items()}
