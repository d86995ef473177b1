"""Run directories: unique names, and resuming an interrupted run (or sweep) in its own directory.

`resume=null` starts a new run; `resume=PATH` continues the run in PATH with its saved config from
its checkpoints/last.ckpt; `resume=last` does so for the newest run of this task; `resume=auto`
(for re-running a sweep with `hydra.sweep.dir=` its old directory) skips a job whose run finished,
resumes one that was interrupted and starts the others.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from emotionvision.cli.ddp import launched_rank, shared_run_name
from emotionvision.errors import UsageError, usage_exit
from emotionvision.rundir import RunDir, metric_key
from emotionvision.targets import trusted_config

FRESH = (None, "auto")


def register_resolvers() -> None:
    """`${unique:}`, `${run_dir:resume,runs_root,name}` and `${config_subdir:resume}` for
    conf/hydra/default.yaml."""
    OmegaConf.register_new_resolver("unique", lambda: uuid.uuid4().hex[:6], use_cache=True, replace=True)
    OmegaConf.register_new_resolver("run_dir", run_dir, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("config_subdir", config_subdir, use_cache=True, replace=True)


def run_dir(resume: str | None, runs_root: str, name: str) -> str:
    """The run directory: a new one, `runs_root`/`name`, or the one `resume` names. Hydra resolves it
    before any task runs, so a bad `resume` ends the program here with one line naming the fix."""
    try:
        return _run_dir(resume, runs_root, name)
    except UsageError as error:
        raise usage_exit(error) from None


def _run_dir(resume: str | None, runs_root: str, name: str) -> str:
    if resume in FRESH:
        return f"{runs_root}/{shared_run_name(name)}"
    if resume == "last":
        return str(last_run(Path(runs_root)))
    path = Path(resume)
    if not RunDir(path).config.is_file():
        raise UsageError(
            f"resume={resume}: not a run directory (no .hydra/config.yaml); name a run under logs/."
        )
    return str(path)


def config_subdir(resume: str | None) -> str | None:
    """Where Hydra writes the composed config: .hydra, or, when resuming, a folder of its own inside
    it, so that the run's original config is kept; None (not written) on ranks 1..N-1 of a cluster
    launcher (emotionvision/cli/ddp.py)."""
    if launched_rank() > 0:
        return None
    return ".hydra" if resume in FRESH else f".hydra/resumed_{datetime.now():%Y-%m-%d_%H-%M-%S}"


def last_run(runs_root: Path) -> Path:
    """The newest run under `runs_root` that has a checkpoints/last.ckpt."""
    lasts = [RunDir(path).last_checkpoint for path in runs_root.glob("*")]
    runs = sorted((last for last in lasts if last.is_file()), key=lambda path: path.stat().st_mtime)
    if not runs:
        raise UsageError(f"resume=last: no run with checkpoints/last.ckpt under {runs_root}.")
    return runs[-1].parent.parent


def resume_config(cfg: DictConfig, run: RunDir) -> tuple[DictConfig, bool]:
    """The config to train with and whether the run in `run` already finished.

    Resuming a named run: its saved config (resolved, and instantiating only trusted targets:
    emotionvision/targets.py), from its last checkpoint, on the split it wrote (split.csv): a resumed
    run never re-splits, so a change of the splitting code or of the data between the two starts cannot
    move images between train, val and test. `resume=auto`: this config, from the last
    checkpoint where one exists."""
    if cfg.resume in FRESH:
        if cfg.resume == "auto" and finished(run, cfg.test):
            return cfg, True
        if cfg.resume == "auto" and run.last_checkpoint.is_file():
            cfg = cfg.copy()
            with open_dict(cfg):
                cfg.ckpt_path = str(run.last_checkpoint)
        return cfg, False
    # a run directory may come from elsewhere: its config instantiates trusted targets only
    trusted = cfg.get("trusted_targets") or ()
    saved = trusted_config(run.config, f"resume={cfg.resume}", trusted)
    if not run.last_checkpoint.is_file():
        raise UsageError(
            f"resume={cfg.resume}: {run.last_checkpoint} does not exist; nothing to resume from."
        )
    with open_dict(saved):
        saved.ckpt_path = str(run.last_checkpoint)
        saved.resume = None
        if run.split.is_file():  # the run's own split, whatever today's splitting code would deal
            saved.data.split_file = str(run.split)
        saved.trusted_targets = list(trusted)  # the command line's, never the file's
    return saved, finished(run, saved.test)


def finished(run: RunDir, tested: bool) -> bool:
    """True when `run` wrote its final metrics (test metrics, if it tests)."""
    metrics = run.read_metrics()
    if tested:
        return metric_key("test", "acc") in metrics
    return "epochs_trained" in metrics
