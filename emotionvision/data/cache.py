"""Decode-once cache: resized uint8 image tensors and perceptual hashes, keyed by file content.

Each image size has its own folder of shards (`<cache_dir>/v<version>-size<S>/shard-*.pt`; with face
crops `...-size<S>-face<key>`, the key a digest of the detector and crop settings). A shard holds
`keys` (SHA-1 of the file bytes), `images` (uint8, N x 3 x S x S), `hashes` (bool, N x 256) and, for
face crops, `boxes` (int, N x 4: the face found, -1 where none).
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

from emotionvision.data.faces import Box, FaceCrop
from emotionvision.data.images import SkipReport, difference_hash, load_rgb, resize_center_crop

log = logging.getLogger(__name__)

# JPEGs are decoded at a reduced scale covering this many pixels for the perceptual hash
HASH_DECODE_SIZE = 64
# and this many for face detection (the detectors look at most at 640 px)
FACE_DECODE_SIZE = 640
# bump when what a shard holds changes, so older caches are not mixed in
CACHE_VERSION = 2
NO_BOX = (-1, -1, -1, -1)


@dataclass
class DecodedImage:
    """A cached image: a (3, S, S) uint8 view, its difference hash and, with face crops, the face box
    (None where no face was found)."""

    pixels: torch.Tensor
    hash_bits: torch.Tensor
    face_box: Box | None = None


def content_key(path: Path) -> str:
    """SHA-1 of the file's bytes."""
    return hashlib.sha1(path.read_bytes()).hexdigest()


def decode_image(path: Path, size: int, face_crop: FaceCrop | None = None) -> tuple[torch.Tensor, Box | None]:
    """The uint8 (3, size, size) tensor of an image file (its face crop, with `face_crop`) and the
    face box found: the one decode path of training, evaluation and prediction. Raises
    UnidentifiedImageError for non-images, OSError / ValueError for unreadable ones."""
    image = load_rgb(path, min_size=max(size, FACE_DECODE_SIZE) if face_crop else size)
    box = None
    if face_crop is not None:
        image, box = face_crop.apply(image)
    return resize_center_crop(image, size), box


def _decode(path: Path, size: int, face_crop: FaceCrop | None) -> DecodedImage | str:
    """`decode_image` and the difference hash of one file, or the reason it is skipped. The hash
    comes from a decode of the whole image at a fixed scale, so duplicate groups (and the split)
    depend neither on `size` nor on the crop."""
    try:
        pixels, box = decode_image(path, size, face_crop)
        hash_image = load_rgb(path, min_size=HASH_DECODE_SIZE)
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, ValueError, SyntaxError):
        return "unreadable image"
    return DecodedImage(pixels, torch.from_numpy(difference_hash(hash_image)), box)


class DecodeCache:
    """Resized images of one size, loaded from and saved to `cache_dir`."""

    def __init__(self, cache_dir: str | Path, size: int, face_crop: FaceCrop | None = None) -> None:
        faces = f"-face{face_crop.key()}" if face_crop else ""
        self.folder = Path(cache_dir) / f"v{CACHE_VERSION}-size{size}{faces}"
        self.size = size
        self.face_crop = face_crop
        self.entries: dict[str, DecodedImage] = {}
        for shard_path in sorted(self.folder.glob("shard-*.pt")):
            shard = torch.load(shard_path, mmap=True, weights_only=True)
            boxes = shard.get("boxes", [None] * len(shard["keys"]))
            for key, pixels, hash_bits, box in zip(
                shard["keys"], shard["images"], shard["hashes"], boxes, strict=True
            ):
                self.entries[key] = DecodedImage(pixels, hash_bits, _box(box))

    def get_many(self, paths: list[Path], report: SkipReport) -> tuple[list[Path], list[DecodedImage]]:
        """Decoded images for `paths` (decoding and saving the missing ones); the files that
        cannot be decoded are left out and added to `report`."""
        workers = 1 if self.face_crop else os.cpu_count() or 1  # one detector, used by one thread
        with ThreadPoolExecutor(workers) as pool:
            keys = list(pool.map(content_key, paths))
            missing = [(p, k) for p, k in zip(paths, keys, strict=True) if k not in self.entries]
            if missing:
                log.info("Decoding %d images to %d px (cache: %s)", len(missing), self.size, self.folder)
            results = list(pool.map(lambda item: _decode(item[0], self.size, self.face_crop), missing))
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

    def _add_shard(self, decoded: list[tuple[str, DecodedImage]]) -> None:
        """Keep newly decoded images and save them as one shard (written atomically)."""
        if not decoded:
            return
        keys = [key for key, _ in decoded]
        shard = {
            "keys": keys,
            "images": torch.stack([image.pixels for _, image in decoded]),
            "hashes": torch.stack([image.hash_bits for _, image in decoded]),
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
        boxes = shard.get("boxes", [None] * len(keys))
        for key, pixels, hash_bits, box in zip(keys, shard["images"], shard["hashes"], boxes, strict=True):
            self.entries[key] = DecodedImage(pixels, hash_bits, _box(box))


def _box(stored: torch.Tensor | None) -> Box | None:
    """A stored face box, None where none was found (or the cache holds no face crops)."""
    if stored is None or int(stored[0]) < 0:
        return None
    return tuple(int(value) for value in stored)
