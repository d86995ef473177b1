"""The FER2013 recipe at full speed on a GPU: images/s, data-wait share, accuracy per epoch, PrivateTest.

Reproduce (from the repository root, on a machine with a CUDA GPU and FER2013 at --data-root):

    python benchmarks/fer2013_gpu.py --timing-epochs 2 --epochs 0        # the timing passes alone
    python benchmarks/fer2013_gpu.py --timing-epochs 2 --epochs 60       # timing passes, then the run
    python benchmarks/fer2013_gpu.py --epochs 60 --augment image --timing-augment image  # per image only
    python benchmarks/fer2013_gpu.py --epochs 60 model=resnet18 model.stem=small   # another recipe
    python benchmarks/fer2013_gpu.py --epochs 1 --batch-size 64 --workers 0 --trainer cpu \
        ++trainer.limit_train_batches=3 ++trainer.limit_val_batches=3      # a CPU check of the script

A stopped run continues with `emotionvision-train resume=<work dir>/run` (its history.csv keeps every
epoch; the throughput printed here needs one uninterrupted pass).

Every pass runs `emotionvision-train experiment=fer2013_recipe trainer=gpu` (16-bit mixed precision)
with Lightning's SimpleProfiler. The recipe's augmentation runs on one of two data paths:
- image: image by image in the loader workers (`augmentation=standard`, as the recipe trains on CPUs);
- batch: on whole batches on the GPU (`augmentation=none batch_augmentation=standard`, kornia), each
  image its own draw. The loader then only stacks cached images.
The timing passes (--timing-augment, both by default: --work-dir/timing-image, timing-batch) train
without testing, so their data wait shows whether a path starves the GPU; the run (--augment, batch by
default: --work-dir/run) tests its best checkpoint (chosen on the validation split carved from
train/, never on test/) on test/ and its PublicTest_/PrivateTest_ halves. Printed, from the run's own
files:
- images/s: training images x epochs / the profiler's training-step time (next batch + step);
- data wait: the share of that time blocked on the next batch (the profiler rows
  `[_TrainingEpochLoop].train_dataloader_next` and `run_training_batch`); above 5% the data path
  starves the GPU;
- per epoch (history.csv): seconds, val/acc, val/macro_f1;
- test accuracy, PublicTest and PrivateTest accuracy (metrics.json); the target is >= 72% PrivateTest.
The checkpoint to bring back is --work-dir/run/checkpoints/best-epochNNN.ckpt.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
from pathlib import Path

from plain_loop import REPO_ROOT
from train_speed import TRAIN_BATCH_ROW, TRAIN_NEXT_ROW, history_epoch_seconds, profile_totals, run_logged

FER2013 = REPO_ROOT.parent / "shared" / "datasets" / "fer2013"
DATA_WAIT_TARGET = 0.05
PRIVATE_TEST_TARGET = 0.72
# where the recipe's augmentation runs: image by image in the loader, or on whole batches on the device
DATA_PATHS = {
    "image": ["augmentation=standard", "batch_augmentation=none"],
    "batch": ["augmentation=none", "batch_augmentation=standard"],
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=FER2013)
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "data" / "cache")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "logs" / "fer2013_gpu")
    parser.add_argument("--timing-epochs", type=int, default=2, help="0: no timing pass")
    parser.add_argument("--epochs", type=int, default=60, help="of the full run; 0: no full run")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers")
    parser.add_argument("--trainer", default="gpu", help="trainer config: gpu | cpu (to check the script)")
    parser.add_argument("--augment", choices=sorted(DATA_PATHS), default="batch", help="the run's data path")
    parser.add_argument(
        "--timing-augment", default="image,batch", help="the data paths to time, comma-separated"
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both passes")
    args = parser.parse_args()
    args.timing_augment = args.timing_augment.split(",")
    if not set(args.timing_augment) <= set(DATA_PATHS):
        parser.error(f"--timing-augment takes {' and '.join(sorted(DATA_PATHS))}, got {args.timing_augment}")
    for name in ("data_root", "cache_dir", "work_dir"):
        setattr(args, name, getattr(args, name).resolve())
    return args


def train_command(
    run_dir: Path, epochs: int, test: bool, data_path: str, args: argparse.Namespace
) -> list[str]:
    return [
        *(
            sys.executable,
            "-m",
            "emotionvision.cli.train",
            "experiment=fer2013_recipe",
            f"trainer={args.trainer}",
        ),
        *(
            f"trainer.max_epochs={epochs}",
            f"data.batch_size={args.batch_size}",
            f"data.num_workers={args.workers}",
        ),
        *(f"data.root={args.data_root}", f"paths.cache_dir={args.cache_dir}", f"test={str(test).lower()}"),
        *(f"hydra.run.dir={run_dir}", "++trainer.enable_progress_bar=false"),
        "+trainer.profiler._target_=lightning.pytorch.profilers.SimpleProfiler",
        *(f"+trainer.profiler.dirpath={run_dir}", "+trainer.profiler.filename=profile"),
        *DATA_PATHS[data_path],
        *args.overrides,
    ]


def train_images(run_dir: Path) -> int:
    with (run_dir / "split.csv").open(newline="") as handle:
        return sum(row["split"] == "train" for row in csv.DictReader(handle))


def report(name: str, run_dir: Path) -> None:
    """Print what the run measured: throughput, data wait, accuracy per epoch and on test."""
    epoch_seconds = history_epoch_seconds(run_dir / "history.csv")
    profile = profile_totals(run_dir / "fit-profile.txt")
    step_seconds = profile[TRAIN_NEXT_ROW] + profile[TRAIN_BATCH_ROW]
    wait_share = profile[TRAIN_NEXT_ROW] / step_seconds
    images_per_second = train_images(run_dir) * len(epoch_seconds) / step_seconds
    print(f"\n== {name}: {run_dir}")
    print(f"training images/s: {images_per_second:.0f}   data wait: {wait_share:.1%} of step time", end="")
    print("  (above 5%: the data path starves the GPU)" if wait_share > DATA_WAIT_TARGET else "")
    with (run_dir / "history.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    print(f"{'epoch':>5} {'seconds':>8} {'val/acc':>8} {'val/macro_f1':>12}")
    for row, seconds in zip(rows, epoch_seconds, strict=True):
        accuracy, macro_f1 = float(row["val/acc"]), float(row["val/macro_f1"])
        print(f"{int(float(row['epoch'])):>5} {seconds:>8.1f} {accuracy:>8.4f} {macro_f1:>12.4f}")
    print(f"total: {sum(epoch_seconds) / 60:.1f} min for {len(epoch_seconds)} epochs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if "test/private_test/acc" in metrics:
        for key in ("test/acc", "test/public_test/acc", "test/private_test/acc"):
            print(f"{key}: {metrics[key]:.4f}")
        verdict = "met" if metrics["test/private_test/acc"] >= PRIVATE_TEST_TARGET else "not met"
        print(f"PrivateTest target >= {PRIVATE_TEST_TARGET:.0%}: {verdict}")


def run_pass(
    name: str, run_dir: Path, epochs: int, test: bool, data_path: str, args: argparse.Namespace
) -> bool:
    """Train (and with `test`, test) one pass with the augmentation on `data_path` and print what it
    measured; False where it failed."""
    command = train_command(run_dir, epochs, test, data_path, args)
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"[{name}] {shlex.join(command)}", flush=True)
    passed = run_logged(command, run_dir.parent / f"{name}.log")
    if passed:
        report(name, run_dir)
    return passed


def main() -> int:
    args = parse_args()
    passed = True
    for data_path in args.timing_augment if args.timing_epochs else []:
        name = f"timing-{data_path}"
        passed &= run_pass(name, args.work_dir / name, args.timing_epochs, False, data_path, args)
    if args.epochs:
        passed &= run_pass("run", args.work_dir / "run", args.epochs, True, args.augment, args)
    print("\nreproduce:\n  " + shlex.join([sys.executable, *sys.argv]))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
