"""benchmarks/fer2013_gpu.py, the prepared GPU run, works end to end: checked on the CPU with a
FER2013-shaped tree (train/ and test/ with PrivateTest_ and PublicTest_ files), so a lent GPU's
minutes are not spent on a broken script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"angry": 12, "happy": 12, "sad": 12}


@pytest.fixture
def fer2013_like(tmp_path: Path, make_tree) -> Path:
    root = tmp_path / "fer2013"
    make_tree(root / "train", CLASSES, size=48)
    make_tree(root / "test", {name: 6 for name in CLASSES}, size=48, seed=1)
    for index, path in enumerate(sorted((root / "test").rglob("*.png"))):
        path.rename(path.with_name(f"{('PublicTest', 'PrivateTest')[index % 2]}_{path.name}"))
    return root


@pytest.mark.slow
def test_every_pass_prints_throughput_data_wait_epochs_and_private_test(
    fer2013_like: Path, tmp_path: Path
) -> None:
    command = [
        *(sys.executable, str(REPO_ROOT / "benchmarks" / "fer2013_gpu.py"), "--trainer", "cpu"),
        *("--data-root", str(fer2013_like), "--cache-dir", str(tmp_path / "cache")),
        *("--work-dir", str(tmp_path / "work"), "--timing-epochs", "1", "--epochs", "2"),
        *("--timing-augment", "image"),  # and the run on its default, kornia's batches: both data paths
        *("--batch-size", "8", "--workers", "0", "++trainer.limit_train_batches=2"),
        "callbacks.report.explain=null",
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    output, lines = done.stdout, done.stdout.splitlines()
    assert output.count("training images/s: ") == 2 and output.count("% of step time") == 2
    commands = {line.split("]")[0][1:]: line for line in lines if line.startswith("[")}
    assert list(commands) == ["timing-image", "run"]
    assert "augmentation=standard batch_augmentation=none" in commands["timing-image"]
    assert "augmentation=none batch_augmentation=standard" in commands["run"]
    epochs = [line.split() for line in lines if line.split()[:1] in (["0"], ["1"])]
    assert [int(row[0]) for row in epochs] == [0, 0, 1]  # the timing pass's epoch, then the run's two
    assert all(float(row[1]) > 0 and 0 <= float(row[2]) <= 1 for row in epochs)
    for key in ("test/acc", "test/public_test/acc", "test/private_test/acc"):
        assert sum(line.startswith(f"{key}: ") for line in lines) == 1  # the run tests, the timing pass not
    assert "PrivateTest target >= 72%: " in output and "reproduce:" in output
    assert list((tmp_path / "work/run/checkpoints").glob("best-epoch*.ckpt"))  # the one to bring back
