"""Performance harness: the framework's training speed against a hand-written PyTorch loop.

Reproduce (from the repository root; each side at each size, --repeats rounds):

    python benchmarks/train_speed.py --sizes 96 224 --epochs 3 --repeats 3 --workers 2
    python benchmarks/train_speed.py --sizes 96 --sides framework model.channels_last=true  # an option
    python benchmarks/train_speed.py --sides framework,plain trainer.plugins=null  # synchronous checkpoints

Each round runs every size and side in turn (96px framework, plain, naive, 224px framework, plain,
naive, then the next round), so that drifts in machine load hit all of them alike; all use the same
data, split, seed and torch threads (--threads, as the commands' `threads` key; default auto):
- framework: `emotionvision-train experiment=resnet18_augmented data.image_size=S ...` with
  Lightning's SimpleProfiler; epoch seconds are the differences of `time` in its history.csv.
- plain: benchmarks/plain_loop.py, the same work as one bare loop over the same cached uint8 images.
- naive: benchmarks/plain_loop.py --loader naive: ImageFolder, PIL decode + resize every epoch.

s/epoch is the median over rounds of the mean epoch time (train + validation) without the first
epoch (warm-up); vs plain is its ratio to plain's, paired the median over rounds of the ratio to
plain's run of the same round. The framework's epochs include its checkpoints (best and last.ckpt,
written in the background by default: the write of the last epoch's, waited for when fit ends, is
outside the epochs); the loops save none. Data wait is the share of training-step time spent
blocked on the next batch, over all epochs: for the framework the profiler rows
`[_TrainingEpochLoop].train_dataloader_next` / (that + `run_training_batch`), for the loops the
time in next(loader) / the whole step time.

Targets: framework <= 1.05x the plain loop's s/epoch; data wait <= 5% of step time.
Every run's log, JSON and run directory stay in --work-dir (a new temporary folder by default).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from plain_loop import DEFAULT_ROOT, REPO_ROOT, split_digest

PLAIN_LOOP = REPO_ROOT / "benchmarks" / "plain_loop.py"
TRAIN_NEXT_ROW = "[_TrainingEpochLoop].train_dataloader_next"
TRAIN_BATCH_ROW = "run_training_batch"
SIDES = ("framework", "plain", "naive")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path(DEFAULT_ROOT))
    parser.add_argument("--cache-dir", type=Path, default=REPO_ROOT / "data" / "cache")
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 224])
    parser.add_argument("--epochs", type=int, default=3, help="per run; the first is left out (>= 2)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of alternating runs")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers, every side")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated, of " + ",".join(SIDES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", default="auto", help="torch threads, every side: auto | a number")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the framework side")
    args = parser.parse_args()
    args.sides = args.sides.split(",")
    if args.epochs < 2 or not set(args.sides) <= set(SIDES):
        parser.error(f"--epochs must be >= 2 and --sides a subset of {','.join(SIDES)}")
    args.data_root, args.cache_dir = args.data_root.resolve(), args.cache_dir.resolve()
    args.work_dir = (args.work_dir or Path(tempfile.mkdtemp(prefix="train_speed-"))).resolve()
    return args


def framework_command(size: int, args: argparse.Namespace, run_dir: Path) -> list[str]:
    return [
        *(sys.executable, "-m", "emotionvision.cli.train", "experiment=resnet18_augmented"),
        *(f"data.image_size={size}", f"trainer.max_epochs={args.epochs}"),
        f"data.num_workers={args.workers}",
        *("test=false", "logger=csv", f"seed={args.seed}", f"threads={args.threads}"),
        f"hydra.run.dir={run_dir}",
        "++trainer.enable_progress_bar=false",
        "+trainer.profiler._target_=lightning.pytorch.profilers.SimpleProfiler",
        *(f"+trainer.profiler.dirpath={run_dir}", "+trainer.profiler.filename=profile"),
        *(f"data.root={args.data_root}", f"paths.cache_dir={args.cache_dir}"),
        *args.overrides,
    ]


def loop_command(side: str, size: int, args: argparse.Namespace, split_csv: Path, out: Path) -> list[str]:
    return [
        *(sys.executable, str(PLAIN_LOOP), "--loader", "cached" if side == "plain" else "naive"),
        *("--size", str(size), "--epochs", str(args.epochs), "--workers", str(args.workers)),
        *("--seed", str(args.seed), "--threads", args.threads),
        *("--data-root", str(args.data_root), "--cache-dir", str(args.cache_dir)),
        *("--split-csv", str(split_csv), "--out", str(out)),
    ]


def write_split(size: int, args: argparse.Namespace) -> Path:
    """The data module's split (and cache at `size`), written once for the plain and naive loops."""
    from emotionvision.data import EmotionDataModule

    path = args.work_dir / f"split-{size}.csv"
    options = {"image_size": size, "cache_dir": args.cache_dir, "manifest_path": path}
    EmotionDataModule(args.data_root, **options).setup("fit")
    return path


def history_epoch_seconds(path: Path) -> list[float]:
    """Seconds of each epoch from history.csv (`time`: seconds since fit start at the epoch's end)."""
    with path.open(newline="") as handle:
        end_of = {int(float(row["epoch"])): float(row["time"]) for row in csv.DictReader(handle)}
    ends = [end_of[epoch] for epoch in sorted(end_of)]
    return [end - start for start, end in zip([0.0, *ends[:-1]], ends, strict=True)]


def profile_totals(path: Path) -> dict[str, float]:
    """{action: total seconds} from a SimpleProfiler text report."""
    totals = {}
    for line in path.read_text().splitlines():
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) >= 6 and cells[0] == "" and cells[1] not in ("Action", "Total"):
            totals[cells[1]] = float(cells[4])
    return totals


def run_logged(command: list[str], log_path: Path) -> bool:
    """Run `command` from the repository root, output to `log_path`; report failures."""
    with log_path.open("w") as log:
        code = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-15:])
        print(f"FAILED (exit {code}, log {log_path}):\n{tail}", file=sys.stderr)
    return code == 0


def framework_measurements(run_dir: Path) -> dict:
    """Epoch seconds (history.csv), data wait and step seconds (profiler), split digest of a run."""
    result, history = {}, run_dir / "history.csv"
    if history.is_file():
        result["epoch_seconds"] = history_epoch_seconds(history)
    else:
        print(f"no {history}: framework s/epoch not measured", file=sys.stderr)
    profile = profile_totals(run_dir / "fit-profile.txt")
    result["wait"] = profile[TRAIN_NEXT_ROW]
    result["step"] = profile[TRAIN_NEXT_ROW] + profile[TRAIN_BATCH_ROW]
    with (run_dir / "split.csv").open(newline="") as handle:
        result["split_digest"] = split_digest(list(csv.DictReader(handle)))
    return result


def loop_measurements(out: Path) -> dict:
    """The same values from plain_loop.py's JSON."""
    loop = json.loads(out.read_text())
    return {
        "epoch_seconds": [epoch["seconds"] for epoch in loop["epochs"]],
        "wait": sum(epoch["data_wait_seconds"] for epoch in loop["epochs"]),
        "step": sum(epoch["step_seconds"] for epoch in loop["epochs"]),
        "split_digest": loop["split_digest"],
    }


def measure(side: str, size: int, round_: int, args: argparse.Namespace, split_csv: Path) -> dict:
    """One run of `side`: its command and measurements (none where it failed)."""
    run_dir = args.work_dir / f"{side}-{size}px-round{round_}"
    run_dir.mkdir(parents=True)
    out = run_dir / "result.json"
    if side == "framework":
        command = framework_command(size, args, run_dir)
    else:
        command = loop_command(side, size, args, split_csv, out)
    result = {"side": side, "size": size, "round": round_, "command": command}
    print(f"[round {round_}] {side} {size}px ...", flush=True)
    if run_logged(command, run_dir / "output.log"):
        result |= framework_measurements(run_dir) if side == "framework" else loop_measurements(out)
    return result


def median_or_none(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def round_seconds(results: list[dict], side: str, size: int) -> dict[int, float]:
    """{round: mean epoch seconds without the first epoch} of the runs of `side` at `size` that ran."""
    return {
        r["round"]: statistics.mean(r["epoch_seconds"][1:])
        for r in results
        if r["side"] == side and r["size"] == size and "epoch_seconds" in r
    }


def summary_rows(results: list[dict], sides: list[str], sizes: list[int]) -> list[dict]:
    """Per side and size: median s/epoch (first epoch left out), its ratio to plain's (of the medians,
    and the median of the same round's ratios), data wait share."""
    rows = []
    for size in sizes:
        plain = round_seconds(results, "plain", size)
        for side in sides:
            runs = [r for r in results if r["side"] == side and r["size"] == size]
            per_round = round_seconds(results, side, size)
            shares = [r["wait"] / r["step"] for r in runs if r.get("step")]
            row = {"side": side, "size": size, "s_per_epoch": median_or_none(list(per_round.values())),
                   "rounds": list(per_round.values()), "data_wait_share": median_or_none(shares)}  # fmt: skip
            if plain and row["s_per_epoch"] is not None:
                row["vs_plain"] = row["s_per_epoch"] / statistics.median(plain.values())
                paired = [seconds / plain[round_] for round_, seconds in per_round.items() if round_ in plain]
                row["vs_plain_paired"] = median_or_none(paired)
            rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    def fmt(value: float | None, pattern: str) -> str:
        return "n/a" if value is None else pattern.format(value)

    header = f"{'side':<10} {'size':>5} {'s/epoch':>9} {'vs plain':>9} {'paired':>8} {'data wait':>10}"
    print(f"\n{header}  per round")
    for row in rows:
        rounds = ", ".join(f"{s:.2f}" for s in row["rounds"])
        print(
            f"{row['side']:<10} {row['size']:>5} {fmt(row['s_per_epoch'], '{:.2f}'):>9} "
            f"{fmt(row.get('vs_plain'), '{:.3f}x'):>9} {fmt(row.get('vs_plain_paired'), '{:.3f}x'):>8} "
            f"{fmt(row['data_wait_share'], '{:.1%}'):>10}  {rounds}"
        )


def main() -> None:
    args = parse_args()
    print(f"work dir: {args.work_dir}")
    splits = {size: write_split(size, args) for size in args.sizes}
    results = [
        measure(side, size, round_, args, splits[size])
        for round_ in range(args.repeats)
        for size in args.sizes
        for side in args.sides
    ]
    for size, split_csv in splits.items():
        expected = split_digest(list(csv.DictReader(split_csv.open(newline=""))))
        if any(r.get("split_digest", expected) != expected for r in results if r["size"] == size):
            print(f"WARNING: not every side at {size}px trained on the split of {split_csv}", file=sys.stderr)
    rows = summary_rows(results, args.sides, args.sizes)
    (args.work_dir / "results.json").write_text(json.dumps({"runs": results, "summary": rows}, indent=2))
    print_table(rows)
    print("targets: framework <= 1.05x plain s/epoch; data wait <= 5% of step time")
    print("\nreproduce:\n  " + shlex.join([sys.executable, *sys.argv]))
    for size in args.sizes:
        for result in results:
            if result["size"] == size and result["round"] == 0:
                print(f"  # {result['side']} {size}px\n  " + shlex.join(result["command"]))


if __name__ == "__main__":
    main()
