"""Stratified, duplicate-aware train/val/test splits and the split manifest (CSV)."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np

from emotionvision.errors import UsageError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MANIFEST_COLUMNS = ("path", "label", "split", "group")


def _group_labels(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Majority label of each group (smallest label on ties)."""
    num_labels = int(labels.max()) + 1
    votes = np.zeros((int(groups.max()) + 1, num_labels), dtype=np.int64)
    np.add.at(votes, (groups, labels), 1)
    return votes.argmax(axis=1)


def deal_groups(labels: np.ndarray, groups: np.ndarray, ratios: list[float], seed: int) -> np.ndarray:
    """A part index per image; each group goes whole to one part, and every class is shared out by
    `ratios` (a zero fraction gets nothing). Deterministic in `seed`. Each class's groups (a group
    counts as its majority class) are dealt to the part furthest below its target count."""
    ratios_array = np.asarray(ratios, dtype=np.float64) / np.sum(ratios)
    group_label = _group_labels(groups, labels)
    group_size = np.bincount(groups)
    rng = np.random.default_rng(seed)
    group_part = np.zeros(len(group_size), dtype=np.int64)
    for label in np.unique(labels):
        class_groups = rng.permutation(np.flatnonzero(group_label == label))
        target = ratios_array * group_size[class_groups].sum()
        assigned = np.zeros(len(ratios_array))
        for group in class_groups:
            # every part with a share gets one group first, then the one furthest below its target
            empty = (target > 0) & (assigned == 0)
            shortfall = np.where(empty if empty.any() else target > 0, target - assigned, -np.inf)
            choice = int(np.argmax(shortfall))
            group_part[group] = choice
            assigned[choice] += group_size[group]
    return group_part[groups]


def stratified_group_split(
    labels: np.ndarray, groups: np.ndarray, ratios: list[float], seed: int
) -> np.ndarray:
    """Split names per image (`ratios`: train, val, test fractions), dealt by `deal_groups`."""
    return np.array(SPLITS)[deal_groups(labels, groups, ratios, seed)]


def carve_validation(labels: np.ndarray, groups: np.ndarray, ratios: list[float], seed: int) -> np.ndarray:
    """'train' or 'val' per image of a training part, by the train and val shares of `ratios`."""
    _, part_groups = np.unique(groups, return_inverse=True)
    return stratified_group_split(labels, part_groups, [ratios[0], ratios[1], 0.0], seed)


def fold_parts(labels: np.ndarray, groups: np.ndarray, folds: int | str, seed: int) -> np.ndarray:
    """The fold of each image: `folds` stratified group-aware folds, or one fold per group ('loso')."""
    _, dense_groups = np.unique(groups, return_inverse=True)
    if folds == "loso":
        return dense_groups
    return deal_groups(labels, dense_groups, [1.0] * int(folds), seed)


def fold_splits(
    labels: np.ndarray, groups: np.ndarray, folds: int | str, fold: int, ratios: list[float], seed: int
) -> np.ndarray:
    """Split names of cross-validation fold `fold`: it is the test split, and validation is carved
    from the other folds by the train and val shares of `ratios`."""
    splits = np.full(len(labels), "test", dtype=object)
    rest = fold_parts(labels, groups, folds, seed) != fold
    splits[rest] = carve_validation(labels[rest], groups[rest], ratios, seed)
    return splits.astype(str)


def fold_ratios(folds: int, ratios: list[float]) -> list[float]:
    """The train, val and test shares of one of `folds` folds, validation carved as `ratios` say."""
    train, val = ratios[0] / (ratios[0] + ratios[1]), ratios[1] / (ratios[0] + ratios[1])
    rest = 1 - 1 / folds
    return [rest * train, rest * val, 1 / folds]


def check_stratifiable(
    labels: np.ndarray, groups: np.ndarray, ratios: list[float], class_names: list[str], root: Path
) -> None:
    """Raise ValueError naming the class and counts when a class cannot reach every split."""
    shares = np.asarray(ratios, dtype=np.float64) / np.sum(ratios)
    needed_splits = int((shares > 0).sum())
    for label, name in enumerate(class_names):
        members = labels == label
        num_images, num_groups = int(members.sum()), len(np.unique(groups[members]))
        if num_groups < needed_splits or num_images * shares[shares > 0].min() < 0.5:
            raise UsageError(
                f"Class '{name}' under {root} has {num_images} images in {num_groups} distinct "
                f"(non-duplicate) groups: too few to stratify into splits {list(ratios)}. "
                "Add images, drop the class with data.classes=[...], or change data.split_ratios."
            )


def write_manifest(path: Path, rows: list[tuple]) -> None:
    """Write (path, label, split, group[, face_box]) rows as CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = ("face_box",) if rows and len(rows[0]) > len(MANIFEST_COLUMNS) else ()
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow((*MANIFEST_COLUMNS, *extra))
        writer.writerows(rows)


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of a split manifest; ValueError naming the file when it is not one."""
    if not path.is_file():
        raise UsageError(f"Split manifest {path} does not exist (data.split_file).")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise UsageError(
                f"{path} is not a split manifest: columns {sorted(missing)} are missing "
                f"(expected {', '.join(MANIFEST_COLUMNS)})."
            )
        rows = list(reader)
    bad = [row["split"] for row in rows if row["split"] not in SPLITS]
    if bad:
        raise UsageError(f"{path}: unknown split name '{bad[0]}' (expected one of {SPLITS}).")
    return rows


def subject_groups(paths: list[Path], group_by: str) -> np.ndarray:
    """A group id per image from `group_by`: a CSV file (columns path, group) or a regular expression
    whose first capture group, searched in the file name, names the subject (e.g. '^(S\\d+)_')."""
    if group_by.endswith(".csv"):
        with Path(group_by).open(newline="") as handle:
            table = {str(Path(row["path"]).resolve()): row["group"] for row in csv.DictReader(handle)}
        names = [table.get(str(Path(path).resolve())) for path in paths]
        missing = [path for path, name in zip(paths, names, strict=True) if name is None]
        if missing:
            raise UsageError(
                f"data.group_by={group_by} has no row for {len(missing)} images, e.g. {missing[0]}."
            )
    else:
        pattern = re.compile(group_by)
        matches = [pattern.search(Path(path).name) for path in paths]
        unmatched = [
            path for path, match in zip(paths, matches, strict=True) if not match or not match.groups()
        ]
        if unmatched:
            raise UsageError(
                f"data.group_by='{group_by}' does not name a subject (first capture group) in the file name "
                f"of {len(unmatched)} images, e.g. {Path(unmatched[0]).name}: fix the regular expression."
            )
        names = [match.group(1) for match in matches]
    return np.unique(np.asarray(names, dtype=object), return_inverse=True)[1]


def log_split_summary(
    labels: np.ndarray,
    groups: np.ndarray,
    splits: np.ndarray,
    ratios: list[float] | None,
    class_names: list[str],
) -> None:
    """Log the groups and per-class images of each split; with `ratios` (a split made here), warn when
    a split's size is off its target share by more than 2 points of the total or one image per
    class (whichever is larger)."""
    shares = np.asarray(ratios or [0, 0, 0], dtype=np.float64) / np.sum(ratios or [1])
    tolerance = max(0.02 * len(labels), len(class_names))
    for split, share in zip(SPLITS, shares, strict=True):
        members = splits == split
        counts = np.bincount(labels[members], minlength=len(class_names))
        per_class = ", ".join(f"{name} {count}" for name, count in zip(class_names, counts, strict=True))
        log.info(
            "%s: %d images in %d groups (%s)",
            split,
            members.sum(),
            len(np.unique(groups[members])),
            per_class,
        )
        target = share * len(labels)
        if ratios and abs(members.sum() - target) > tolerance:
            log.warning(
                "The %s split holds %d images, %.0f off its target of %.0f (data.split_ratios=%s): groups "
                "too large to share out evenly; fewer groups per split or other ratios may help.",
                split, members.sum(), members.sum() - target, target, list(ratios),
            )  # fmt: skip
