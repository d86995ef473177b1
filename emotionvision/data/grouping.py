"""Groups a split keeps whole: exact and near-duplicate images (by perceptual-hash distance) and
subjects (`data.group_by`, or a source's group column), merged into one group id per image."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from emotionvision.data.manifest import read_table
from emotionvision.data.sources import Sample
from emotionvision.errors import UsageError

log = logging.getLogger(__name__)

SHOWN_CONFLICTS = 5  # duplicate groups with conflicting labels named at WARNING level (the rest at DEBUG)


@dataclass(frozen=True)
class Grouping:
    """Near-duplicates: images whose 256-bit difference hashes differ in at most `near_duplicate_bits`
    bits (None: none are joined). Subjects: `group_by`, a regular expression whose first capture group
    names the subject in the file name (e.g. '^(S\\d+)_'), or a CSV file of path,group; without it the
    source's groups (a manifest's group column), if any."""

    near_duplicate_bits: int | None = 20
    group_by: str | None = None

    def subjects(self, samples: list[Sample]) -> np.ndarray | None:
        """A subject id per sample (0..S-1, in the sorted order of their names), or None when nothing
        names subjects. Reads file names and tables only: nothing is decoded."""
        if self.group_by:
            names = subject_names([sample.path for sample in samples], self.group_by)
        elif samples and samples[0].group is not None:
            names = [sample.group for sample in samples]
        else:
            return None
        return np.unique(np.asarray(names, dtype=object), return_inverse=True)[1].astype(np.int64)

    def groups(
        self,
        paths: list[Path],
        labels: np.ndarray,
        hashes: np.ndarray,
        subjects: np.ndarray | None,
        class_names: list[str],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The duplicate group of each image (its own, without duplicate grouping) and the group a
        split keeps whole: duplicate groups merged with `subjects`. Duplicate groups are logged."""
        duplicates = np.arange(len(paths))
        if self.near_duplicate_bits is not None:
            duplicates = duplicate_groups(hashes, self.near_duplicate_bits)
            report_duplicates(paths, labels, duplicates, class_names, self.near_duplicate_bits)
        return duplicates, duplicates if subjects is None else merge_groups(duplicates, subjects)


def subject_names(paths: list[Path], group_by: str) -> list[str]:
    """The subject of each image by `group_by` (see `Grouping`); UsageError naming the images it
    does not cover."""
    if group_by.endswith(".csv"):
        rows = read_table(Path(group_by), ("path", "group"), "data.group_by table")
        table = {str(Path(row["path"]).resolve()): row["group"] for row in rows}
        names = [table.get(str(Path(path).resolve())) for path in paths]
        missing = [path for path, name in zip(paths, names, strict=True) if name is None]
        if missing:
            raise UsageError(
                f"data.group_by={group_by} has no row for {len(missing)} images, e.g. {missing[0]}."
            )
        return names
    pattern = re.compile(group_by)
    matches = [pattern.search(Path(path).name) for path in paths]
    unmatched = [path for path, match in zip(paths, matches, strict=True) if not match or not match.groups()]
    if unmatched:
        raise UsageError(
            f"data.group_by='{group_by}' does not name a subject (first capture group) in the file name "
            f"of {len(unmatched)} images, e.g. {Path(unmatched[0]).name}: fix the regular expression."
        )
    return [match.group(1) for match in matches]


def duplicate_groups(hashes: np.ndarray, max_bits: int, chunk: int = 2048) -> np.ndarray:
    """Group ids (0..G-1, in order of first member) joining images whose hashes differ in at most
    `max_bits` bits, transitively. `hashes` is a boolean array (N, bits)."""
    n = len(hashes)
    signed = np.where(hashes, 1.0, -1.0).astype(np.float32)
    bits = hashes.shape[1]
    rows, cols = [], []
    for start in range(0, n, chunk):
        # Hamming distance = (bits - dot(+-1 vectors)) / 2
        distance = (bits - signed[start : start + chunk] @ signed.T) / 2
        close_rows, close_cols = np.nonzero(distance <= max_bits)
        rows.append(close_rows + start)
        cols.append(close_cols)
    return _components(n, np.concatenate(rows), np.concatenate(cols))


def merge_groups(*groupings: np.ndarray) -> np.ndarray:
    """Group ids joining images that share a group in any of `groupings` (e.g. duplicates and
    subjects), transitively; numbered in order of first member."""
    n = len(groupings[0])
    firsts = []
    for groups in groupings:
        _, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        firsts.append(first[inverse])  # each image joined to its group's first member
    return _components(n, np.tile(np.arange(n), len(groupings)), np.concatenate(firsts))


def _components(n: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Connected components of the graph of edges (rows[i], cols[i]), numbered in order of first member."""
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, components = connected_components(graph, directed=False)
    _, first_member, group_ids = np.unique(components, return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first_member))
    return rank[group_ids].astype(np.int64)


def conflicting_groups(groups: np.ndarray, labels: np.ndarray) -> list[int]:
    """Ids of duplicate groups whose members carry more than one label."""
    group_label_pairs = np.unique(np.stack([groups, labels], axis=1), axis=0)
    group_ids, label_counts = np.unique(group_label_pairs[:, 0], return_counts=True)
    return group_ids[label_counts > 1].tolist()


def report_duplicates(
    paths: list[Path], labels: np.ndarray, groups: np.ndarray, class_names: list[str], max_bits: int
) -> None:
    """Log the duplicate groups and name those whose members carry conflicting labels."""
    sizes = np.bincount(groups)
    log.info(
        "Duplicate groups (exact or within %d bits): %d groups, %d images",
        max_bits, int((sizes > 1).sum()), int(sizes[sizes > 1].sum()),
    )  # fmt: skip
    conflicts = conflicting_groups(groups, labels)
    for rank, group in enumerate(conflicts):
        members = "; ".join(f"{paths[i]} ({class_names[labels[i]]})" for i in np.flatnonzero(groups == group))
        level = logging.WARNING if rank < SHOWN_CONFLICTS else logging.DEBUG
        log.log(level, "Duplicates with conflicting labels: %s", members)
    if len(conflicts) > SHOWN_CONFLICTS:
        log.warning("%d duplicate groups with conflicting labels in all (listed at DEBUG).", len(conflicts))
