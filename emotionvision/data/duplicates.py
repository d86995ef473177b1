"""Grouping exact and near-duplicate images by perceptual-hash distance."""

from __future__ import annotations

import numpy as np


def _find(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def duplicate_groups(hashes: np.ndarray, max_bits: int, chunk: int = 2048) -> np.ndarray:
    """Group ids (0..G-1, in order of first member) joining images whose hashes differ in at most
    `max_bits` bits, transitively. `hashes` is a boolean array (N, bits)."""
    n = len(hashes)
    parent = np.arange(n)
    signed = np.where(hashes, 1.0, -1.0).astype(np.float32)
    bits = hashes.shape[1]
    for start in range(0, n, chunk):
        # Hamming distance = (bits - dot(+-1 vectors)) / 2
        distance = (bits - signed[start : start + chunk] @ signed.T) / 2
        rows, cols = np.nonzero(distance <= max_bits)
        for row, col in zip(rows + start, cols, strict=True):
            if row < col:
                parent[_find(parent, row)] = _find(parent, col)
    roots = np.array([_find(parent, i) for i in range(n)])
    _, group_ids = np.unique(roots, return_inverse=True)
    first_seen = {g: k for k, g in enumerate(dict.fromkeys(group_ids.tolist()))}
    return np.array([first_seen[g] for g in group_ids.tolist()], dtype=np.int64)


def conflicting_groups(groups: np.ndarray, labels: np.ndarray) -> list[int]:
    """Ids of duplicate groups whose members carry more than one label."""
    group_label_pairs = np.unique(np.stack([groups, labels], axis=1), axis=0)
    group_ids, label_counts = np.unique(group_label_pairs[:, 0], return_counts=True)
    return group_ids[label_counts > 1].tolist()
