"""Tables: CSV files of rows and markdown table lines."""

from __future__ import annotations

import csv
from pathlib import Path

from emotionvision.atomic import atomic_open
from emotionvision.rundir import parse_metric_key


def write_csv(path: Path, rows: list[dict[str, object]]) -> None:
    """The rows as a CSV file, its columns in order of first appearance; written whole or not at all."""
    columns = list(dict.fromkeys(column for row in rows for column in row))
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def table_line(cells: list[str]) -> str:
    """A markdown table row."""
    return "| " + " | ".join(cells) + " |"


def metric_label(key: str) -> str:
    """A metric key without its stage, as a column heading: 'test/recall/sad' -> 'recall/sad'."""
    parsed = parse_metric_key(key)
    return parsed.name if parsed.class_name is None else f"{parsed.name}/{parsed.class_name}"
