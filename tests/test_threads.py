"""torch's thread count from the usable cores (emotionvision/runtime.py): affinity, cgroup v2 quotas."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from emotionvision.errors import UsageError
from emotionvision.runtime import cgroup_cpu_quota, read_cpu_max, set_torch_threads, usable_cpus

AFFINITY = len(os.sched_getaffinity(0))


def cgroup_tree(tmp_path: Path, own: str, cpu_max: dict[str, str]) -> tuple[Path, Path]:
    """A cgroup v2 root with `cpu_max` {folder: cpu.max content} and a /proc/self/cgroup naming `own`."""
    root = tmp_path / "cgroup"
    (root / own).mkdir(parents=True, exist_ok=True)
    for folder, content in cpu_max.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "cpu.max").write_text(content + "\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(f"0::/{own}\n" if own else "0::/\n")
    return root, proc


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """Restores torch's thread count after the test."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("content", "cores"), [("max 100000", None), ("150000 100000", 1.5), ("200000 50000", 4.0), ("", None)]
)
def test_cpu_max_formats(tmp_path: Path, content: str, cores: float | None) -> None:
    (tmp_path / "cpu.max").write_text(content)
    assert read_cpu_max(tmp_path) == cores


def test_no_cpu_max_file_is_no_quota(tmp_path: Path) -> None:
    assert read_cpu_max(tmp_path) is None
    root, proc = cgroup_tree(tmp_path, "", {})
    assert cgroup_cpu_quota(root, proc) is None
    assert usable_cpus(root, proc) == AFFINITY
    assert usable_cpus(root, tmp_path / "no_proc_file") == AFFINITY


def test_tightest_quota_of_own_cgroup_and_ancestors(tmp_path: Path) -> None:
    own = "machine.slice/job.scope"
    root, proc = cgroup_tree(
        tmp_path, own, {"machine.slice": "150000 100000", own: "max 100000", "other.slice": "50000 100000"}
    )
    assert cgroup_cpu_quota(root, proc) == 1.5  # the sibling's 0.5 does not apply to this process
    assert usable_cpus(root, proc) == 1  # 1.5 cores: rounded down


def test_quota_caps_the_affinity_and_never_gives_zero(tmp_path: Path) -> None:
    root, proc = cgroup_tree(tmp_path, "", {"": "50000 100000"})
    assert usable_cpus(root, proc) == 1
    root, proc = cgroup_tree(tmp_path / "big", "", {"": f"{100000 * (AFFINITY + 8)} 100000"})
    assert usable_cpus(root, proc) == AFFINITY


def test_auto_sets_the_usable_cores(monkeypatch, torch_threads) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(AFFINITY + 3)
    assert set_torch_threads("auto") == usable_cpus() == torch.get_num_threads()


def test_omp_num_threads_wins_over_auto_but_not_over_a_number(monkeypatch, torch_threads) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(3)
    assert set_torch_threads("auto") == 3 == torch.get_num_threads()
    assert set_torch_threads(2) == 2 == torch.get_num_threads()
    assert set_torch_threads(None) == 2 == torch.get_num_threads()  # null: left as it is


@pytest.mark.parametrize("threads", [0, -1, "many", True])
def test_bad_thread_counts_are_usage_errors(threads, torch_threads) -> None:
    with pytest.raises(UsageError, match="threads="):
        set_torch_threads(threads)
