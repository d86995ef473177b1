"""Decode-once cache: resized uint8 image tensors and perceptual hashes, keyed by file content.

Each image size has its own folder of shards (`<cache_dir>/v<version>-size<S>/shard-*.pt`; with face
crops `...-size<S>-face<key>`, the key a digest of the detector and crop settings). A shard holds
`keys` (SHA-1 of the file bytes), `images` (uint8, N x 3 x S x S), `hashes` (bool, N x 256),
`source_pixels` (int, N: width x height of the file's image, checked against the pixel limit of each
run) and, for face crops, `boxes` (int, N x 4: the face found, -1 where none).
Shards are memory-mapped on load, so a large set costs page cache, not process memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from emotionvision.data.faces import Box, FaceCrop
from emotionvision.data.images import (
    DECODE_ERRORS,
    DEFAULT_MAX_IMAGE_PIXELS,
    PIL_LIMIT_LIFTED,
    SkipReport,
    difference_hash,
    load_rgb,
    open_image,
    resize_center_crop,
    skip_reason,
)

log = logging.getLogger(__name__)

# JPEGs are decoded at a reduced scale covering this many pixels for the perceptual hash
HASH_DECODE_SIZE = 64
# and this many for face detection (the detectors look at most at 640 px)
FACE_DECODE_SIZE = 640
# bump when what a shard holds or how images decode changes, so older caches are not mixed in
# (3: 16-bit and float greyscale scaled to 8 bit, source_pixels)
CACHE_VERSION = 3
NO_BOX = (-1, -1, -1, -1)


@dataclass
class DecodedImage:
    """A cached image: a (3, S, S) uint8 view, its difference hash, the pixel count of the file's
    image and, with face crops, the face box (None where no face was found)."""

    pixels: torch.Tensor
    hash_bits: torch.Tensor
    face_box: Box | None = None
    source_pixels: int = 0


def content_key(path: Path) -> str:
    """SHA-1 of the file's bytes."""
    return hashlib.sha1(path.read_bytes()).hexdigest()


def decode_image(
    path: Path,
    size: int,
    face_crop: FaceCrop | None = None,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[torch.Tensor, Box | None]:
    """The uint8 (3, size, size) tensor of an image file (its face crop, with `face_crop`) and the
    face box found: the one decode path of training, evaluation and prediction. Raises
    ImageTooLargeError above `max_pixels` pixels (None: no limit), UnidentifiedImageError for
    non-images, OSError / ValueError for unreadable ones (`skip_reason` names each)."""
    with PIL_LIMIT_LIFTED:  # PIL checks crop boxes against its own limit too: lifted for the crop
        image = load_rgb(path, max(size, FACE_DECODE_SIZE) if face_crop else size, max_pixels)
        box = None
        if face_crop is not None:
            image, box = face_crop.apply(image)
        return resize_center_crop(image, size), box


def source_pixels(path: Path) -> int:
    """Width x height of an image file, read from its header."""
    with open_image(path, max_pixels=None) as image:
        return image.width * image.height


def _decode(path: Path, size: int, face_crop: FaceCrop | None, max_pixels: int | None) -> DecodedImage | str:
    """`decode_image` and the difference hash of one file, or the reason it is skipped. The hash
    comes from a decode of the whole image at a fixed scale, so duplicate groups (and the split)
    depend neither on `size` nor on the crop."""
    try:
        pixels, box = decode_image(path, size, face_crop, max_pixels)
        hash_image = load_rgb(path, HASH_DECODE_SIZE, max_pixels)
        count = source_pixels(path)
    except DECODE_ERRORS as error:
        return skip_reason(error, path)
    return DecodedImage(pixels, torch.from_numpy(difference_hash(hash_image)), box, count)


def _content_key(path: Path) -> tuple[str | None, str | None]:
    """(content_key, None), or (None, the reason to skip) where the file cannot be read."""
    try:
        return content_key(path), None
    except OSError as error:
        return None, skip_reason(error, path)


class DecodeCache:
    """Resized images of one size, loaded from and saved to `cache_dir`. Images of more than
    `max_pixels` pixels (None: no limit) are skipped, whether in the cache already or not."""

    def __init__(
        self,
        cache_dir: str | Path,
        size: int,
        face_crop: FaceCrop | None = None,
        max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        faces = f"-face{face_crop.key()}" if face_crop else ""
        self.folder = Path(cache_dir) / f"v{CACHE_VERSION}-size{size}{faces}"
        self.size = size
        self.face_crop = face_crop
        self.max_pixels = max_pixels
        self.entries: dict[str, DecodedImage] = {}
        for shard_path in sorted(self.folder.glob("shard-*.pt")):
            self._load_shard(torch.load(shard_path, mmap=True, weights_only=True))

    def get_many(self, paths: list[Path], report: SkipReport) -> tuple[list[Path], list[DecodedImage]]:
        """Decoded images for `paths` (decoding and saving the missing ones); the files that
        cannot be decoded are left out and added to `report`."""
        workers = 1 if self.face_crop else os.cpu_count() or 1  # one detector, used by one thread
        with ThreadPoolExecutor(workers) as pool:
            read = list(pool.map(_content_key, paths))
            keys, reasons = [key for key, _ in read], [reason for _, reason in read]
            missing = [(p, k) for p, k in zip(paths, keys, strict=True) if k and k not in self.entries]
            if missing:
                log.info("Decoding %d images to %d px (cache: %s)", len(missing), self.size, self.folder)
            decode = partial(_decode, size=self.size, face_crop=self.face_crop, max_pixels=self.max_pixels)
            results = list(pool.map(decode, [path for path, _ in missing]))
        self._add_shard(
            [(key, r) for (_, key), r in zip(missing, results, strict=True) if not isinstance(r, str)]
        )
        failures = {key: r for (_, key), r in zip(missing, results, strict=True) if isinstance(r, str)}
        kept_paths, kept_images = [], []
        for path, key, reason in zip(paths, keys, reasons, strict=True):
            reason = reason or failures.get(key) or self._too_large(key)
            if reason:
                report.add(reason, path)
            else:
                kept_paths.append(path)
                kept_images.append(self.entries[key])
        return kept_paths, kept_images

    def _too_large(self, key: str) -> str | None:
        """'image too large' where a cached image has more pixels than this cache allows."""
        too_large = self.max_pixels is not None and self.entries[key].source_pixels > self.max_pixels
        return "image too large" if too_large else None

    def _add_shard(self, decoded: list[tuple[str, DecodedImage]]) -> None:
        """Keep newly decoded images and save them as one shard (written atomically)."""
        if not decoded:
            return
        keys = [key for key, _ in decoded]
        shard = {
            "keys": keys,
            "images": torch.stack([image.pixels for _, image in decoded]),
            "hashes": torch.stack([image.hash_bits for _, image in decoded]),
            "source_pixels": torch.tensor([image.source_pixels for _, image in decoded], dtype=torch.int64),
        }
        if self.face_crop is not None:
            shard["boxes"] = torch.tensor(
                [image.face_box or NO_BOX for _, image in decoded], dtype=torch.int32
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        shard_path = self.folder / f"shard-{uuid.uuid4().hex}.pt"
        temporary = shard_path.with_suffix(".tmp")
        torch.save(shard, temporary)
        temporary.rename(shard_path)
        self._load_shard(shard)

    def _load_shard(self, shard: dict) -> None:
        """Add the entries of a shard."""
        boxes = shard.get("boxes", [None] * len(shard["keys"]))
        columns = (shard["keys"], shard["images"], shard["hashes"], shard["source_pixels"], boxes)
        for key, pixels, hash_bits, count, box in zip(*columns, strict=True):
            self.entries[key] = DecodedImage(pixels, hash_bits, _box(box), int(count))


def _box(stored: torch.Tensor | None) -> Box | None:
    """A stored face box, None where none was found (or the cache holds no face crops)."""
    if stored is None or int(stored[0]) < 0:
        return None
    return tuple(int(value) for value in stored)
