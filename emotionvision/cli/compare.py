"""`emotionvision-compare MULTIRUN_DIR...`: tables, paired statistics and a figure of sweeps' runs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    parser = argparse.ArgumentParser(
        description="Compare the runs of a multirun sweep (emotionvision-train -m ...): mean ± std per "
        "variant, differences paired by seed (and fold by fold for cross-validations, data.folds=N) "
        "with bootstrap intervals and paired tests, a figure, and TensorBoard HParams. Variants are the "
        "override keys whose values differ between runs."
    )
    parser.add_argument(
        "multirun_dirs",
        type=Path,
        nargs="+",
        metavar="MULTIRUN_DIR",
        help="sweep directories (each holds one directory per run; a cross-validation one per fold)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where to write the results (default: the first MULTIRUN_DIR/compare)",
    )
    parser.add_argument("--confidence", type=float, default=0.95, help="level of intervals and tests")
    args = parser.parse_args(argv)
    from emotionvision.reporting.comparison import compare  # torch (TensorBoard's writer): after --help

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    output_dir = args.output or args.multirun_dirs[0] / "compare"
    try:
        report = compare(args.multirun_dirs, output_dir, args.confidence)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"emotionvision-compare: error: {error}\n")
    print(report)
    print(
        f"Written to {output_dir} (compare.md, summary.csv, paired.csv, runs.csv, compare.png, tensorboard/)"
    )


if __name__ == "__main__":
    main()
