"""Decode-once cache: resized uint8 image tensors and perceptual hashes, keyed by file content.

Each image size has its own folder of shards (`<cache_dir>/v<version>-size<S>/shard-*.pt`). A shard holds
`keys` (SHA-1 of the file bytes), `images` (uint8, N x 3 x S x S) and `hashes` (bool, N x 256).
Shards are memory-mapped on load, so a large set costs page cache, not process memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import UnidentifiedImageError

from emotionvision.data.images import SkipReport, difference_hash, load_rgb, resize_center_crop

log = logging.getLogger(__name__)

# JPEGs are decoded at a reduced scale covering this many pixels for the perceptual hash
HASH_DECODE_SIZE = 64
# bump when what a shard holds changes, so older caches are not mixed in
CACHE_VERSION = 2


@dataclass
class DecodedImage:
    """A cached image: a (3, S, S) uint8 view and its difference hash."""

    pixels: torch.Tensor
    hash_bits: torch.Tensor


def content_key(path: Path) -> str:
    """SHA-1 of the file's bytes."""
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _decode(path: Path, size: int) -> tuple[torch.Tensor, torch.Tensor] | str:
    """Pixels and hash of one file, or the reason it is skipped. The hash comes from a decode of
    its own at a fixed scale, so duplicate groups (and the split) do not depend on `size`."""
    try:
        image = load_rgb(path, min_size=size)
        hash_image = load_rgb(path, min_size=HASH_DECODE_SIZE)
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, ValueError, SyntaxError):
        return "unreadable image"
    return resize_center_crop(image, size), torch.from_numpy(difference_hash(hash_image))


class DecodeCache:
    """Resized images of one size, loaded from and saved to `cache_dir`."""

    def __init__(self, cache_dir: str | Path, size: int) -> None:
        self.folder = Path(cache_dir) / f"v{CACHE_VERSION}-size{size}"
        self.size = size
        self.entries: dict[str, DecodedImage] = {}
        for shard_path in sorted(self.folder.glob("shard-*.pt")):
            shard = torch.load(shard_path, mmap=True, weights_only=True)
            for key, pixels, hash_bits in zip(shard["keys"], shard["images"], shard["hashes"], strict=True):
                self.entries[key] = DecodedImage(pixels, hash_bits)

    def get_many(self, paths: list[Path], report: SkipReport) -> tuple[list[Path], list[DecodedImage]]:
        """Decoded images for `paths` (decoding and saving the missing ones); the files that
        cannot be decoded are left out and added to `report`."""
        workers = os.cpu_count() or 1
        with ThreadPoolExecutor(workers) as pool:
            keys = list(pool.map(content_key, paths))
            missing = [(p, k) for p, k in zip(paths, keys, strict=True) if k not in self.entries]
            if missing:
                log.info("Decoding %d images to %d px (cache: %s)", len(missing), self.size, self.folder)
            results = list(pool.map(lambda item: _decode(item[0], self.size), missing))
        self._add_shard(
            [(key, r) for (_, key), r in zip(missing, results, strict=True) if not isinstance(r, str)]
        )
        failures = {key: r for (_, key), r in zip(missing, results, strict=True) if isinstance(r, str)}
        kept_paths, kept_images = [], []
        for path, key in zip(paths, keys, strict=True):
            if key in failures:
                report.add(failures[key], path)
            else:
                kept_paths.append(path)
                kept_images.append(self.entries[key])
        return kept_paths, kept_images

    def _add_shard(self, decoded: list[tuple[str, tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """Keep newly decoded images and save them as one shard (written atomically)."""
        if not decoded:
            return
        keys = [key for key, _ in decoded]
        images = torch.stack([pixels for _, (pixels, _) in decoded])
        hashes = torch.stack([hash_bits for _, (_, hash_bits) in decoded])
        self.folder.mkdir(parents=True, exist_ok=True)
        shard_path = self.folder / f"shard-{uuid.uuid4().hex}.pt"
        temporary = shard_path.with_suffix(".tmp")
        torch.save({"keys": keys, "images": images, "hashes": hashes}, temporary)
        temporary.rename(shard_path)
        for key, pixels, hash_bits in zip(keys, images, hashes, strict=True):
            self.entries[key] = DecodedImage(pixels, hash_bits)
