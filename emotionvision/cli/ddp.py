"""DDP under Hydra: every rank of a job works in that job's run directory."""

from __future__ import annotations

import sys

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write


def keep_ranks_in_job_dir() -> None:
    """Make the processes Lightning starts for ranks 1..N-1 rerun this job, in its run directory.

    Lightning's `ddp` reruns the command line with `hydra.run.dir=<Hydra's run.dir>`, which is the
    job's directory in a single run. In a multirun the command line holds the whole sweep and run.dir
    is not the job's directory, so both are narrowed to this job (the ranks then log to
    `train_ddp_process_<rank>.log` beside its `train.log`).
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hydra_config = HydraConfig.get()
    sys.argv = [sys.argv[0], *hydra_config.overrides.task]
    with read_write(hydra_config.run):
        hydra_config.run.dir = hydra_config.runtime.output_dir
