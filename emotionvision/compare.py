"""`emotionvision-compare MULTIRUN_DIR`: tables, paired statistics and a figure of a sweep's runs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from emotionvision.reporting.compare import compare


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    parser = argparse.ArgumentParser(
        description="Compare the runs of a multirun sweep (emotionvision-train -m ...): mean ± std per "
        "variant, differences paired by seed with bootstrap intervals and paired tests, a figure, and "
        "TensorBoard HParams. Variants are the override keys whose values differ between runs."
    )
    parser.add_argument("multirun_dir", type=Path, help="the sweep directory (holds one directory per run)")
    parser.add_argument(
        "--output", type=Path, default=None, help="where to write the results (default: MULTIRUN_DIR/compare)"
    )
    parser.add_argument("--confidence", type=float, default=0.95, help="level of intervals and tests")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    output_dir = args.output or args.multirun_dir / "compare"
    try:
        report = compare(args.multirun_dir, output_dir, args.confidence)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"emotionvision-compare: error: {error}\n")
    print(report)
    print(
        f"Written to {output_dir} (compare.md, summary.csv, paired.csv, runs.csv, compare.png, tensorboard/)"
    )


if __name__ == "__main__":
    main()
