"""The Dataset of decoded images that every loader serves: training, evaluation and the report."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from emotionvision.data.cache import DecodeCache, DecodedImage
from emotionvision.data.images import SkipReport

log = logging.getLogger(__name__)


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


def decoded_dataset(
    samples: list[tuple[Path, int]], cache_dir: str | Path, size: int, source: str
) -> ImageTensorDataset:
    """The dataset of labelled `samples` (path, class index) decoded through the cache at `size` px;
    undecodable files are logged and left out. `source` names where the samples come from."""
    skipped = SkipReport()
    paths, decoded = DecodeCache(cache_dir, size).get_many([path for path, _ in samples], skipped)
    skipped.log_summary(source)
    if not paths:
        raise ValueError(f"None of the images of {source} could be decoded (see the warnings above).")
    label_of = dict(samples)
    return ImageTensorDataset(decoded, [label_of[path] for path in paths], paths)
