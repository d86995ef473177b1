"""Checks of the data module's numeric settings, made in its constructor before anything is listed,
generated or decoded: a bad value ends in one line naming `data.<key>` and what to set (the data node
has no config schema yet: emotionvision/cli/schemas.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from emotionvision.errors import UsageError

HASH_BITS = 256  # bits of the difference hash (emotionvision/data/images.py: a 16 x 16 hash)
SEED_LIMIT = 2**32  # numpy's and scikit-learn's seeds: 0 to 2**32 - 1
SUM_TOLERANCE = 1e-6  # [0.7, 0.2, 0.1] sums to 0.9999999999999999
EXAMPLE = "e.g. [0.7, 0.15, 0.15]"


def check_data_settings(
    split_ratios: Sequence[float],
    split_seed: int,
    near_duplicate_bits: int | None,
    image_size: int,
    batch_size: int,
    num_workers: int | None,
    max_image_pixels: int | None,
) -> tuple[float, float, float]:
    """UsageError naming the first setting out of its range; the split ratios as a tuple of floats."""
    ratios = check_split_ratios(split_ratios)
    check_whole("split_seed", split_seed, 0, SEED_LIMIT - 1, f"a seed from 0 to {SEED_LIMIT - 1} (e.g. 42)")
    if near_duplicate_bits is not None:
        check_whole(
            "near_duplicate_bits",
            near_duplicate_bits,
            0,
            HASH_BITS // 2 - 1,
            f"0 to {HASH_BITS // 2 - 1} bits of the {HASH_BITS}-bit difference hash (unrelated images differ "
            "in about half of them; 20 is the default), or null to join no near-duplicates",
        )
    check_whole("image_size", image_size, 1, None, "a size in pixels of 1 or more (e.g. 224)")
    check_whole("batch_size", batch_size, 1, None, "1 or more images per batch (32 is the default)")
    if num_workers is not None:
        wanted = "0 or more loader processes, or null to choose from the cores"
        check_whole("num_workers", num_workers, 0, None, wanted)
    if max_image_pixels is not None:
        check_whole(
            "max_image_pixels",
            max_image_pixels,
            1,
            None,
            "a pixel count of 1 or more (images.max_pixels sets it; 89478485 is the default), or null for no "
            "limit",
        )
    return ratios


def check_whole(key: str, value: object, low: int, high: int | None, wanted: str) -> None:
    """UsageError unless `value` is a whole number from `low` to `high` (None: no upper bound)."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if not whole or value < low or (high is not None and value > high):
        raise UsageError(f"data.{key}={value}: give {wanted}.")


def check_split_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """The train, val and test shares as floats; UsageError unless they are three numbers, none
    negative, train and val above 0 (validation picks the checkpoints), summing to 1."""
    sequence = isinstance(ratios, Sequence) and not isinstance(ratios, str)
    values = list(ratios) if sequence else [ratios]
    shown = f"data.split_ratios={values if sequence else ratios}"
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if len(values) != 3 or not numbers:
        raise UsageError(f"{shown}: give three fractions, train, val and test, that sum to 1 ({EXAMPLE}).")
    if any(value < 0 for value in values):
        raise UsageError(f"{shown}: a share cannot be negative; give fractions that sum to 1 ({EXAMPLE}).")
    if values[0] == 0 or values[1] == 0:
        raise UsageError(
            f"{shown}: the {'train' if values[0] == 0 else 'val'} share must be above 0 (training learns "
            f"from train; early stopping and the best checkpoint watch val): {EXAMPLE}."
        )
    total = math.fsum(values)
    if abs(total - 1) > SUM_TOLERANCE:
        raise UsageError(
            f"{shown} sums to {total:g}, not 1: give train, val and test fractions that sum to 1 "
            f"({EXAMPLE}); they are not rescaled."
        )
    return float(values[0]), float(values[1]), float(values[2])
