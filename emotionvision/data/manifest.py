"""CSV tables of images: the split manifest a run writes (split.csv) and the manifests sources read."""

from __future__ import annotations

import csv
from pathlib import Path

from emotionvision.atomic import atomic_open
from emotionvision.errors import UsageError

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("path", "label", "split", "group")


def read_table(path: Path, required: tuple[str, ...], kind: str) -> list[dict[str, str]]:
    """The rows of the CSV file `path`; UsageError naming it when it is missing or lacks a column of
    `required` (`kind` names what the file should be, e.g. 'split manifest')."""
    if not path.is_file():
        raise UsageError(f"The {kind} {path} does not exist: fix the path.")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(required) - set(reader.fieldnames or [])
        if missing:
            raise UsageError(
                f"{path} is not a {kind}: columns {sorted(missing)} are missing "
                f"(expected {', '.join(required)})."
            )
        return list(reader)


def check_split_names(path: Path, names: list[str | None]) -> None:
    """UsageError naming `path` for a split name other than train, val, test (None: no split)."""
    bad = [name for name in names if name is not None and name not in SPLITS]
    if bad:
        raise UsageError(f"{path}: unknown split name '{bad[0]}' (expected one of {SPLITS}).")


def read_manifest(path: Path) -> list[dict[str, str]]:
    """The rows of a split manifest (columns path, label, split, group); UsageError naming the file
    when it is not one."""
    rows = read_table(path, MANIFEST_COLUMNS, "split manifest")
    check_split_names(path, [row["split"] for row in rows])
    return rows


def write_manifest(path: Path, rows: list[tuple]) -> None:
    """Write (path, label, split, group[, face_box]) rows as CSV, whole or not at all."""
    extra = ("face_box",) if rows and len(rows[0]) > len(MANIFEST_COLUMNS) else ()
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow((*MANIFEST_COLUMNS, *extra))
        writer.writerows(rows)
