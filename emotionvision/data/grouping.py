"""Groups a split keeps whole: exact and near-duplicate images (by perceptual-hash distance) and
subjects (`data.group_by`, or a source's group column), merged into one group id per image."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from emotionvision.data.manifest import read_table
from emotionvision.data.sources import Sample
from emotionvision.errors import UsageError

log = logging.getLogger(__name__)

SHOWN_CONFLICTS = 5  # duplicate groups with conflicting labels named at WARNING level (the rest at DEBUG)
# Flat images (one colour: a blank frame, a 1x1 or a strip) all hash to all zeros (no pixel brighter
# than its left neighbour), so the hash cannot tell them apart: a pair with a flat hash is joined only
# where the images' THUMBNAIL_SIZE-square thumbnails differ by at most FLAT_TOLERANCE (of 255) on
# average (`same_picture`)
THUMBNAIL_SIZE = 4
FLAT_TOLERANCE = 8.0


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
        pixels: Sequence[torch.Tensor] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The duplicate group of each image (its own, without duplicate grouping) and the group a
        split keeps whole: duplicate groups merged with `subjects`. `pixels`: the decoded images
        (uint8, 3 x S x S), which confirm the pairs of flat images (`near_duplicate_pairs`). Duplicate
        groups are logged, and label conflicts among them, pairs of one subject aside."""
        duplicates = np.arange(len(paths))
        if self.near_duplicate_bits is not None:
            pairs = near_duplicate_pairs(hashes, self.near_duplicate_bits, pixels)
            duplicates = _components(len(paths), *pairs)
            bits = self.near_duplicate_bits
            report_duplicates(paths, labels, duplicates, class_names, bits, pairs, subjects)
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


def duplicate_groups(
    hashes: np.ndarray, max_bits: int, chunk: int = 2048, pixels: Sequence[torch.Tensor] | None = None
) -> np.ndarray:
    """Group ids (0..G-1, in order of first member) joining the `near_duplicate_pairs` of images,
    transitively. `hashes` is a boolean array (N, bits)."""
    return _components(len(hashes), *near_duplicate_pairs(hashes, max_bits, pixels, chunk))


def near_duplicate_pairs(
    hashes: np.ndarray, max_bits: int, pixels: Sequence[torch.Tensor] | None = None, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (rows, cols: both orders, and each image with itself) of images whose hashes (a
    boolean array, N x bits) differ in at most `max_bits` bits. A pair where either hash is flat (within
    `max_bits` of no change, or of all change: the hash of a flat image, or of a plain gradient, which
    says little about the picture) counts only where `pixels` (the decoded images) show the same
    picture (`same_picture`); without `pixels`, by the hash alone."""
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
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    if pixels is None:
        return rows, cols
    ones = hashes.sum(axis=1)
    flat = (ones <= max_bits) | (ones >= bits - max_bits)
    check = (flat[rows] | flat[cols]) & (rows != cols)
    keep = ~check
    keep[check] = same_picture(pixels, rows[check], cols[check])
    return rows[keep], cols[keep]


def same_picture(pixels: Sequence[torch.Tensor], rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether the images of each pair (rows[i], cols[i]) look the same: their `THUMBNAIL_SIZE`-square
    thumbnails differ by at most `FLAT_TOLERANCE` grey levels on average (a flat red image and a flat
    blue one differ; two copies of one blank frame do not)."""
    members = np.unique(np.concatenate([rows, cols]))  # thumbnails of these images only
    thumbnails = np.zeros((len(members), 3 * THUMBNAIL_SIZE**2), dtype=np.float32)
    for slot, index in enumerate(members):
        image = pixels[index].float().unsqueeze(0)
        thumbnails[slot] = F.adaptive_avg_pool2d(image, THUMBNAIL_SIZE).flatten().numpy()
    first, second = thumbnails[np.searchsorted(members, rows)], thumbnails[np.searchsorted(members, cols)]
    return np.abs(first - second).mean(axis=1) <= FLAT_TOLERANCE


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


def conflicting_groups(
    groups: np.ndarray,
    labels: np.ndarray,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
    subjects: np.ndarray | None = None,
) -> list[int]:
    """Ids of duplicate groups holding a label conflict: two images joined as near-duplicates (`pairs`:
    rows and cols; None: any two members of a group) that carry different labels and, with `subjects`,
    belong to different subjects: one person's expressions may hash alike, and a subject's images go
    to one split whole anyway."""
    if pairs is None:
        # two members of different labels (and subjects) exist where a group holds two labels (and two
        # subjects: of two members of different labels, one differs in subject from a third member)
        several = _counts_above_one(groups, labels)
        if subjects is not None:
            several &= _counts_above_one(groups, subjects)
        return np.flatnonzero(several).tolist()
    rows, cols = pairs
    conflict = labels[rows] != labels[cols]
    if subjects is not None:
        conflict &= subjects[rows] != subjects[cols]
    return np.unique(groups[rows[conflict]]).tolist()


def _counts_above_one(groups: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per group id (0..max), whether its members carry more than one of `values`."""
    group_values = np.unique(np.stack([groups, values], axis=1), axis=0)
    return np.bincount(group_values[:, 0], minlength=int(groups.max()) + 1) > 1


def report_duplicates(
    paths: list[Path],
    labels: np.ndarray,
    groups: np.ndarray,
    class_names: list[str],
    max_bits: int,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
    subjects: np.ndarray | None = None,
) -> None:
    """Log the duplicate groups and name those holding conflicting labels (`conflicting_groups`)."""
    sizes = np.bincount(groups)
    log.info(
        "Duplicate groups (exact or within %d bits): %d groups, %d images",
        max_bits, int((sizes > 1).sum()), int(sizes[sizes > 1].sum()),
    )  # fmt: skip
    conflicts = conflicting_groups(groups, labels, pairs, subjects)
    for rank, group in enumerate(conflicts):
        members = "; ".join(f"{paths[i]} ({class_names[labels[i]]})" for i in np.flatnonzero(groups == group))
        level = logging.WARNING if rank < SHOWN_CONFLICTS else logging.DEBUG
        log.log(level, "Duplicates with conflicting labels: %s", members)
    if len(conflicts) > SHOWN_CONFLICTS:
        log.warning("%d duplicate groups with conflicting labels in all (listed at DEBUG).", len(conflicts))
