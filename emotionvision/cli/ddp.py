"""DDP under Hydra: every rank of a job works in that job's run directory, and rank zero alone writes it.

Lightning's own launcher (`trainer=ddp` on one machine) starts ranks 1..N-1 itself (`keep_ranks_in_job_dir`).
A cluster launcher starts every rank as a process of its own (torchrun; SLURM's srun, under Hydra's
submitit launcher): each composes its config, so they agree on one run directory (`shared_run_name`),
and only rank zero saves the config there (emotionvision/cli/resume.py) and logs to its `<job>.log`.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

# the global rank a cluster launcher gives each process it starts: torchrun, SLURM's srun
RANK_VARIABLES = ("RANK", "SLURM_PROCID")
# how long ranks 1..N-1 wait for rank zero to name the run directory
NAME_TIMEOUT = timedelta(minutes=10)


def launched_rank() -> int:
    """This process's global rank where a cluster launcher started every rank (torchrun: RANK; srun:
    SLURM_PROCID); 0 for a lone process and for the ranks Lightning's own launcher starts."""
    value = next((os.environ[name] for name in RANK_VARIABLES if name in os.environ), "0")
    return int(value)


def shared_run_name(name: str) -> str:
    """The name of a new run directory for every process of a torchrun job: rank zero's `name`, passed
    to the others through torchrun's store (each composes its own config, and names made of the time
    and a random suffix differ); `name` itself where torchrun did not start this process. (Under
    Hydra's submitit launcher the ranks share the sweep's cached time and suffix already.)"""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":  # torchrun's store at MASTER_ADDR:PORT
        return name
    from torch.distributed import TCPStore  # torch's start-up cost: under torchrun only

    store = TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=NAME_TIMEOUT
    )
    key = f"emotionvision/run_name/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    if launched_rank() == 0:
        store.set(key, name)
        return name
    return store.get(key).decode()


def keep_ranks_in_job_dir() -> None:
    """Make the processes Lightning starts for ranks 1..N-1 rerun this job, in its run directory; move a
    cluster-launched rank's log out of rank zero's `<job>.log`.

    Lightning's `ddp` reruns the command line with `hydra.run.dir=<Hydra's run.dir>`, which is the
    job's directory in a single run. In a multirun the command line holds the whole sweep and run.dir
    is not the job's directory, so both are narrowed to this job (the ranks then log to
    `train_ddp_process_<rank>.log` beside its `train.log`).
    """
    log_to_rank_file()
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hydra_config = HydraConfig.get()
    sys.argv = [sys.argv[0], *hydra_config.overrides.task]
    with read_write(hydra_config.run):
        hydra_config.run.dir = hydra_config.runtime.output_dir


def log_to_rank_file() -> None:
    """On rank k > 0 of a cluster launcher, send the log that Hydra opened in `<job>.log` of the run
    directory to `<job>_rank<k>.log` beside it."""
    rank = launched_rank()
    if rank == 0 or not HydraConfig.initialized():
        return
    job_log = Path(HydraConfig.get().runtime.output_dir, f"{HydraConfig.get().job.name}.log").resolve()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == job_log:
            rank_handler = logging.FileHandler(job_log.with_name(f"{job_log.stem}_rank{rank}.log"))
            rank_handler.setFormatter(handler.formatter)
            rank_handler.setLevel(handler.level)
            for log_filter in handler.filters:
                rank_handler.addFilter(log_filter)
            root.removeHandler(handler)
            handler.close()
            root.addHandler(rank_handler)
