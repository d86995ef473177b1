"""The Dataset of decoded images and the loaders that serve it: training, evaluation and the report."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch

# Not public API (lightning.pytorch 2.x, checked with 2.6; pyproject allows >=2.4,<3), but no public
# sampler shards without repeats: torch's DistributedSampler pads ranks with repeated images, or drops
# images with drop_last. Covered by tests/test_datamodule.py (unit) and tests/test_ddp.py (two ranks).
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from emotionvision.data.cache import DecodeCache, DecodedImage
from emotionvision.data.faces import FaceCrop
from emotionvision.data.images import SkipReport
from emotionvision.errors import UsageError

log = logging.getLogger(__name__)


class EpochShuffle(Sampler[int]):
    """A random order that depends only on `seed` and the epoch (Lightning calls `set_epoch`), not on
    the global random state: a resumed run shuffles each epoch as an uninterrupted one did."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class ImageTensorDataset(Dataset):
    """Cached uint8 images of `paths` with labels; `transform` runs on the uint8 tensor. An item is
    (float image in [0, 1], label, index): the index names the item's path for the report."""

    def __init__(
        self,
        images: list[DecodedImage],
        labels: list[int],
        paths: list[Path],
        transform: v2.Transform | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.paths = paths
        self.transform = transform
        self.to_float = v2.ToDtype(torch.float32, scale=True)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        pixels = self.images[index].pixels
        if self.transform is not None:
            pixels = self.transform(pixels)
        return self.to_float(pixels), self.labels[index], index


def apply_face_policy(
    paths: list[Path],
    images: list[DecodedImage],
    labels: list[int],
    face_crop: FaceCrop,
    class_names: list[str],
    report: SkipReport,
) -> tuple[list[Path], list[DecodedImage], list[int]]:
    """Log per class how many images had a face; with `no_face='skip'` leave the others out (counted
    in `report`), else they stay whole."""
    if face_crop.detector is None:  # grey whole images: nothing detected
        return paths, images, labels
    found = Counter(label for label, image in zip(labels, images, strict=True) if image.face_box)
    totals = Counter(labels)
    counts = ", ".join(f"{name} {found[i]}/{totals[i]}" for i, name in enumerate(class_names) if totals[i])
    policy = "left out" if face_crop.no_face == "skip" else "used whole"
    log.info(
        "Face found (%s detector), per class: %s; images without a face are %s",
        face_crop.detector,
        counts,
        policy,
    )
    if face_crop.no_face == "whole":
        return paths, images, labels
    kept = [i for i, image in enumerate(images) if image.face_box is not None]
    for i in sorted(set(range(len(images))) - set(kept)):
        report.add("no face found (data.face_crop.no_face=skip)", paths[i])
    return [paths[i] for i in kept], [images[i] for i in kept], [labels[i] for i in kept]


def decode_labelled(
    paths: list[Path], labels: list[int], cache: DecodeCache, class_names: list[str], report: SkipReport
) -> tuple[list[Path], list[DecodedImage], list[int]]:
    """The files of `paths` (labelled `labels`) that decode through `cache` (decoding the missing ones),
    their images and labels; with face crops, `apply_face_policy` applies. Files left out are added to
    `report`. The one decode path of training and evaluation."""
    kept, images = cache.get_many(paths, report)
    label_of = dict(zip(paths, labels, strict=True))
    kept_labels = [label_of[path] for path in kept]
    if cache.face_crop is None:
        return kept, images, kept_labels
    return apply_face_policy(kept, images, kept_labels, cache.face_crop, class_names, report)


def decoded_dataset(
    paths: list[Path],
    labels: list[int],
    cache: DecodeCache,
    class_names: list[str],
    report: SkipReport,
    source: str,
) -> ImageTensorDataset:
    """The dataset of the files of `paths` (labelled `labels`) that `decode_labelled` keeps; the
    summary of `report` (which may hold the listing's skips already) is logged. `source` names where
    the files come from."""
    paths, images, labels = decode_labelled(paths, labels, cache, class_names, report)
    report.log_summary(source)
    if not paths:
        raise UsageError(f"None of the images of {source} could be decoded (see the skipped files above).")
    return ImageTensorDataset(images, labels, paths)


def make_loader(dataset: Dataset, batch_size: int, num_workers: int, train: bool = False) -> DataLoader:
    """The loader of training and evaluation. Training: an order fixed by the seed and the epoch, so a
    resumed run sees the batches an uninterrupted one does. Evaluation: every image once, also under
    DDP (Lightning's default sampler would pad ranks with repeats)."""
    seed = torch.initial_seed()  # set by seed_everything
    if train:
        sampler = EpochShuffle(len(dataset), seed)
    elif torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
    else:
        sampler = None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        # a last training batch of one image would break BatchNorm: drop the incomplete batch
        drop_last=train and len(dataset) > batch_size,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),  # worker seeds: not drawn from the global RNG
    )
