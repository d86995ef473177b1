"""Test-time augmentation (`tta=none|flip|ten_crop`): the views of a batch whose class probabilities
are averaged, and the average itself (also of an ensemble's members).

`flip` adds the mirror images. `ten_crop` is the FER2013 literature's protocol (44 x 44 crops of 48 x
48 faces): the four corner crops and the centre crop of side round(S * 44 / 48), and their mirror
images, each resized back to the model's input size S, so that fixed-size backbones take them too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torchvision.transforms.v2 import functional as F

from emotionvision.errors import UsageError

TTA_MODES = ("none", "flip", "ten_crop")
CROP_FRACTION = 44 / 48  # ten_crop's crop side over the image side


def check_tta(mode: str) -> str:
    """`mode`, or a UsageError naming the modes."""
    if mode not in TTA_MODES:
        raise UsageError(f"tta={mode}: choose one of {' | '.join(TTA_MODES)}.")
    return mode


def crop_size(height: int, width: int) -> list[int]:
    """ten_crop's crop height and width: round(side * 44 / 48)."""
    return [round(height * CROP_FRACTION), round(width * CROP_FRACTION)]


def tta_views(images: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a batch of images (N x 3 x H x W) that `mode` averages, each of the batch's size."""
    if check_tta(mode) == "none":
        return [images]
    if mode == "flip":
        return [images, F.horizontal_flip(images)]
    size = list(images.shape[-2:])
    # the five crops of the images, then the five crops of their mirror images
    crops = F.ten_crop(images, crop_size(*size))
    return [F.resize(crop, size, antialias=True) for crop in crops]


def mean_log_probabilities(log_probabilities: Iterable[torch.Tensor]) -> torch.Tensor:
    """The log of the mean of probabilities given as logs (the views of a TTA, the members of an
    ensemble), without leaving log space."""
    stacked = torch.stack(list(log_probabilities))
    return torch.logsumexp(stacked, dim=0) - math.log(len(stacked))
