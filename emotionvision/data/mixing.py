"""Mixup and cutmix of training batches (the `mixing` config group), with torchvision's v2 transforms.

The data module mixes each training batch after it reaches its device (`on_after_batch_transfer`):
images become the mixes, targets rows of class probabilities (summing to 1) that the losses accept
(emotionvision/models/losses.py). Validation, test and prediction batches are never mixed. The
training metrics (train/acc, train/macro_f1, ...) score each mixed image against its dominant
class, the largest entry of its target row (mixup: the image of weight >= 0.5; cutmix: the image
covering most of the pixels; a tie goes to the lower class index); train/loss is the loss against
the mixed targets.

torchvision pairs each image with its neighbour in the batch (`roll(1)`): the training order is
shuffled (EpochShuffle), so the pairs are random.
"""

from __future__ import annotations

from torchvision.transforms import v2

from emotionvision.errors import UsageError


def batch_mixing(
    num_classes: int, mixup_alpha: float | None = None, cutmix_alpha: float | None = None
) -> v2.Transform:
    """The batch transform `(images, class indices) -> (mixed images, target rows)`: MixUp with
    Beta(`mixup_alpha`, `mixup_alpha`) weights, CutMix with Beta(`cutmix_alpha`, `cutmix_alpha`) box
    areas, or, given both, one of the two chosen with equal probability for each batch. The data
    module calls it with the number of classes (the config holds a partial)."""
    transforms: list[v2.Transform] = []
    for name, alpha, transform in (
        ("mixup_alpha", mixup_alpha, v2.MixUp),
        ("cutmix_alpha", cutmix_alpha, v2.CutMix),
    ):
        if alpha is None:
            continue
        if alpha <= 0:
            raise UsageError(f"mixing.{name} must be > 0 (null: not used), got {alpha}.")
        transforms.append(transform(alpha=alpha, num_classes=num_classes))
    if not transforms:
        raise UsageError("mixing needs mixing.mixup_alpha or mixing.cutmix_alpha (or choose mixing=none).")
    return transforms[0] if len(transforms) == 1 else v2.RandomChoice(transforms)
