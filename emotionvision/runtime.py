"""Process set-up shared by the commands: torch's CPU thread count from the cores this process may use.

torch is imported when the threads are set, not with this module: `--help` and config errors of the
commands answer without it."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from emotionvision.errors import UsageError

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def set_torch_threads(threads: int | str | None = "auto") -> int:
    """Set torch's intra-op CPU threads (the `threads` key of the command configs) and return them.

    `auto`: the usable cores (`usable_cpus`), unless OMP_NUM_THREADS is set in the environment, which
    torch has then already applied and which wins; an int: that many, whatever the environment says;
    null: torch's own default, untouched.
    """
    import torch

    if threads is None or (threads == "auto" and os.environ.get("OMP_NUM_THREADS")):
        return torch.get_num_threads()
    count = usable_cpus() if threads == "auto" else threads
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UsageError(f"threads={threads}: give auto, null or a number of threads >= 1.")
    if count != torch.get_num_threads():
        torch.set_num_threads(count)
    log.debug("torch uses %d CPU threads (threads=%s)", count, threads)
    return count


def usable_cpus(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> int:
    """The cores this process may run on (its CPU affinity), capped by a cgroup v2 CPU quota, rounded
    down (a quota of 1.5 cores gives 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    return cores if quota is None else max(1, min(cores, math.floor(quota)))


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest cgroup v2 CPU quota, in cores, on this process's cgroup and its ancestors (their
    cpu.max files); None where there is none (no quota, cgroup v1, not Linux)."""
    quotas = [quota for folder in cgroup_folders(cgroup_root, proc_cgroup) if (quota := read_cpu_max(folder))]
    return min(quotas, default=None)


def cgroup_folders(cgroup_root: Path, proc_cgroup: Path) -> list[Path]:
    """This process's cgroup v2 folder and its ancestors up to `cgroup_root` (as /proc/self/cgroup's
    `0::/path` line names it); `cgroup_root` alone where that line is missing."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return [cgroup_root]
    own = next((line[3:].strip("/") for line in lines if line.startswith("0::")), "")
    folder = cgroup_root / own
    return [folder, *folder.parents[: len(Path(own).parts)]]


def read_cpu_max(folder: Path) -> float | None:
    """The quota of `folder`/cpu.max in cores: "150000 100000" (quota, period in µs) is 1.5;
    "max 100000" (no quota), a missing or unreadable file: None."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        return None
