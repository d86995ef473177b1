"""The Dataset of decoded images that every loader serves: training, evaluation and the report."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from emotionvision.data.cache import DecodeCache, DecodedImage
from emotionvision.data.faces import FaceCrop
from emotionvision.data.images import DEFAULT_MAX_IMAGE_PIXELS, SkipReport
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


def decoded_dataset(
    samples: list[tuple[Path, int]],
    cache_dir: str | Path,
    size: int,
    source: str,
    class_names: list[str],
    face_crop: FaceCrop | None = None,
    skipped: SkipReport | None = None,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> ImageTensorDataset:
    """The dataset of labelled `samples` (path, class index) decoded through the cache at `size` px
    (face crops with `face_crop`, at most `max_pixels` pixels per file); undecodable files are left
    out and added to `skipped` (which may hold the listing's skips already), whose summary is logged.
    `source` names where the samples come from."""
    skipped = SkipReport() if skipped is None else skipped
    cache = DecodeCache(cache_dir, size, face_crop, max_pixels)
    paths, decoded = cache.get_many([path for path, _ in samples], skipped)
    label_of = dict(samples)
    labels = [label_of[path] for path in paths]
    if face_crop is not None:
        paths, decoded, labels = apply_face_policy(paths, decoded, labels, face_crop, class_names, skipped)
    skipped.log_summary(source)
    if not paths:
        raise UsageError(f"None of the images of {source} could be decoded (see the skipped files above).")
    return ImageTensorDataset(decoded, labels, paths)
