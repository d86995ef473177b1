"""Training augmentation whose magnitude is one number, for hyperparameter search, and the check that
the batch augmentation's library is installed."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from torchvision.transforms import v2

from emotionvision.errors import UsageError


def scaled_augmentation(strength: float, size: int) -> v2.Compose:
    """The standard augmentation (conf/augmentation/standard.yaml) with every magnitude scaled.

    `strength` 1 gives exactly the standard settings, 0 gives no change to any image, 2 doubles crop
    area loss, aspect change, rotation, colour jitter and blur use; the flip probability stays 0.5
    for any strength above 0. Magnitudes are clipped to what the transforms accept.
    """
    if strength < 0:
        raise UsageError(f"augmentation.strength must be >= 0, got {strength}.")
    return v2.Compose(
        [
            v2.RandomResizedCrop(
                size,
                scale=(max(0.1, 1 - 0.3 * strength), 1.0),
                ratio=(max(0.1, 1 - 0.1 * strength), 1 + 0.1 * strength),
                antialias=True,
            ),
            v2.RandomHorizontalFlip(p=0.5 if strength > 0 else 0.0),
            v2.RandomRotation(degrees=10 * strength),
            v2.ColorJitter(
                brightness=0.2 * strength,
                contrast=0.2 * strength,
                saturation=0.2 * strength,
                hue=min(0.5, 0.02 * strength),
            ),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.1, 1.5))], p=min(1.0, 0.3 * strength)),
        ]
    )


def check_batch_augmentation(batch_augmentation: Mapping | None) -> None:
    """`data.batch_augmentation` (kornia's transforms, batch_augmentation=standard) needs the kornia
    extra: UsageError naming the option and the install command, before anything runs."""
    target = str((batch_augmentation or {}).get("_target_", ""))
    if not target.startswith("kornia."):
        return
    try:
        importlib.import_module("kornia.augmentation")
    except ImportError:
        raise UsageError(
            f'batch_augmentation ({target}) needs kornia: pip install "emotionvision[kornia]", '
            "or train with batch_augmentation=none augmentation=standard."
        ) from None
