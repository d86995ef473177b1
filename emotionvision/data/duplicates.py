"""Grouping exact and near-duplicate images by perceptual-hash distance."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


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
