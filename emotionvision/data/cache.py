"""Decode-once cache: resized uint8 image tensors and perceptual hashes, keyed by file content.

Each image size has its own folder of shards (`<cache_dir>/v<version>-size<S>/shard-*.pt`; with face
crops `...-size<S>-face<key>`, the key a digest of the detector and crop settings). A shard holds
`keys` (SHA-1 of the file bytes), `images` (uint8, N x 3 x S x S), `hashes` (bool, N x 256),
`source_pixels` (int, N: width x height of the file's image, checked against the pixel limit of each
run), for face crops `boxes` (int, N x 4: the face found, -1 where none), and `checksum` (a CRC-32 of
all the rest, `shard_checksum`).
Shards are memory-mapped on load, so a large set costs page cache, not process memory. Each is checked
on load (its fields, their shapes, its checksum): a damaged one (truncated, emptied, overwritten,
edited) is named in one warning, removed and never used; its images are decoded again from their
files. A shard is written to a temporary file in its folder, synced, then renamed into place, so a
crash or a full disk never leaves part of one under a shard's name.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from emotionvision.atomic import atomic_open
from emotionvision.data.faces import DETECT, Box, FaceCrop
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
from emotionvision.progress import progress

log = logging.getLogger(__name__)

# JPEGs are decoded at a reduced scale covering this many pixels for the perceptual hash
HASH_DECODE_SIZE = 64
# and this many for face detection (the detectors look at most at 640 px)
FACE_DECODE_SIZE = 640
# bump when what a shard holds or how images decode changes, so older caches are not mixed in
# (3: 16-bit and float greyscale scaled to 8 bit, source_pixels; 4: a checksum in each shard)
CACHE_VERSION = 4
NO_BOX = (-1, -1, -1, -1)
# what each shard holds: name -> dtype and dimensions (after N, the number of keys)
SHARD_TENSORS = {
    "images": (torch.uint8, 3),  # N x 3 x size x size
    "hashes": (torch.bool, 1),  # N x hash bits
    "source_pixels": (torch.int64, 0),  # N
}
FACE_BOXES = (torch.int32, 1)  # N x 4, in shards of face crops


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
    face_box: Box | str | None = DETECT,
) -> tuple[torch.Tensor, Box | None]:
    """The uint8 (3, size, size) tensor of an image file (its face crop, with `face_crop`) and the
    face box found (or the `face_box` found before, see `FaceCrop.apply`): the one decode path of
    training, evaluation and prediction. Raises
    ImageTooLargeError above `max_pixels` pixels (None: no limit), UnidentifiedImageError for
    non-images, OSError / ValueError for unreadable ones (`skip_reason` names each).

    Peak memory is the decoded image (a few copies of 4 bytes a pixel, at most `max_pixels` pixels)
    plus a resize bounded by `size` alone, whatever the aspect ratio (`resize_center_crop`): a
    100000x1 or 1x100000 PNG adds under 5 MB at 224 px (tests/test_images.py allows 32 MB)."""
    with PIL_LIMIT_LIFTED:  # PIL checks crop boxes against its own limit too: lifted for the crop
        image = load_rgb(path, max(size, FACE_DECODE_SIZE) if face_crop else size, max_pixels)
        box = None
        if face_crop is not None:
            image, box = face_crop.apply(image, face_box)
        return resize_center_crop(image, size), box


def source_pixels(path: Path) -> int:
    """Width x height of an image file, read from its header."""
    with open_image(path, max_pixels=None) as image:
        return image.width * image.height


def _decode(
    path: Path, face_box: Box | str | None, size: int, face_crop: FaceCrop | None, max_pixels: int | None
) -> DecodedImage | str:
    """`decode_image` and the difference hash of one file, or the reason it is skipped. The hash
    comes from a decode of the whole image at a fixed scale, so duplicate groups (and the split)
    depend neither on `size` nor on the crop."""
    try:
        pixels, box = decode_image(path, size, face_crop, max_pixels, face_box)
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
        name_older_versions(self.folder.parent)
        self.size = size
        self.face_crop = face_crop
        self.max_pixels = max_pixels
        self.entries: dict[str, DecodedImage] = {}
        damaged = []
        for shard_path in sorted(self.folder.glob("shard-*.pt")):
            shard, problem = self._read_shard(shard_path)
            if shard is not None:
                self._load_shard(shard)
            elif problem is not None:
                damaged.append((shard_path, problem))
        if damaged:
            self._drop_damaged(damaged)

    def get_many(self, paths: list[Path], report: SkipReport) -> tuple[list[Path], list[DecodedImage]]:
        """Decoded images for `paths` (decoding and saving the missing ones); the files that
        cannot be decoded are left out and added to `report`."""
        workers = 1 if self.face_crop else os.cpu_count() or 1  # one detector, used by one thread
        with ThreadPoolExecutor(workers) as pool:
            read = list(pool.map(_content_key, paths))
            keys, reasons = [key for key, _ in read], [reason for _, reason in read]
            missing = [(p, k) for p, k in zip(paths, keys, strict=True) if k and k not in self.entries]
            found_before = self._faces_found_before() if missing else {}
            boxes = [found_before.get(key, DETECT) for _, key in missing]
            if missing:
                log.info("Decoding %d images to %d px (cache: %s)", len(missing), self.size, self.folder)
            if reused := sum(box != DETECT for box in boxes):
                log.info("Their faces found before, at another size: %d", reused)
            decode = partial(_decode, size=self.size, face_crop=self.face_crop, max_pixels=self.max_pixels)
            decoded = pool.map(decode, [path for path, _ in missing], boxes)
            results = list(progress(decoded, len(missing), self._step(), log))
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

    def _faces_found_before(self) -> dict[str, Box | None]:
        """The face boxes, by content key, that caches of these crop settings at other sizes hold:
        up to FACE_DECODE_SIZE, detection sees the same decoded image at every size."""
        if self.face_crop is None or self.size > FACE_DECODE_SIZE:
            return {}
        boxes = {}
        name = re.compile(rf"v{CACHE_VERSION}-size(\d+)-face{self.face_crop.key()}")
        for folder in sorted(self.folder.parent.glob(f"v{CACHE_VERSION}-size*")):
            match = name.fullmatch(folder.name)
            if folder != self.folder and match and int(match[1]) <= FACE_DECODE_SIZE:
                other = DecodeCache(self.folder.parent, int(match[1]), self.face_crop, self.max_pixels)
                boxes |= {key: image.face_box for key, image in other.entries.items()}
        return boxes

    def _step(self) -> str:
        """What decoding an image involves, for its progress: with face crops, face detection."""
        detector = self.face_crop.detector if self.face_crop else None
        return f"Face detection ({detector}) and decoding" if detector else "Decoding"

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
        shard["checksum"] = shard_checksum(shard)
        self.folder.mkdir(parents=True, exist_ok=True)
        # a new name per shard: processes sharing the cache never write the same file
        with atomic_open(self.folder / f"shard-{uuid.uuid4().hex}.pt", "wb") as handle:
            torch.save(shard, handle)
        self._load_shard(shard)

    def _read_shard(self, path: Path) -> tuple[dict | None, str | None]:
        """(the shard saved at `path`, None), (None, what is wrong with it), or (None, None) where it
        is gone (a damaged shard that another process has just removed)."""
        try:
            shard = torch.load(path, mmap=True, weights_only=True)
        except FileNotFoundError:
            return None, None
        except Exception as error:  # any failure to read it: truncated, empty, not a shard
            first = (str(error).strip().splitlines() or [""])[0].split(". ")[0][:160]
            return None, f"unreadable, {type(error).__name__}: {first}"
        problem = shard_problem(shard, self.size, self.face_crop is not None)
        return (None, problem) if problem else (shard, None)

    def _drop_damaged(self, damaged: list[tuple[Path, str]]) -> None:
        """Remove the damaged shards and say so in one warning: their images are decoded again."""
        named = []
        for path, problem in damaged:
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                problem += f"; not removed: {error.strerror}"
            named.append(f"{path.name} ({problem})")
        log.warning(
            "Decode cache %s: %d damaged shard(s) not used and removed, their images are decoded again "
            "from their files: %s",
            self.folder,
            len(damaged),
            "; ".join(named),
        )

    def _load_shard(self, shard: dict) -> None:
        """Add the entries of a shard."""
        boxes = shard.get("boxes", [None] * len(shard["keys"]))
        columns = (shard["keys"], shard["images"], shard["hashes"], shard["source_pixels"], boxes)
        for key, pixels, hash_bits, count, box in zip(*columns, strict=True):
            self.entries[key] = DecodedImage(pixels, hash_bits, _box(box), int(count))


@functools.cache
def name_older_versions(cache_dir: Path) -> None:
    """Say once per process which folders of `cache_dir` hold an older cache version (never read
    again) and how much space deleting them frees."""
    older = [folder for folder in sorted(cache_dir.glob("v*-size*")) if folder.is_dir()]
    older = [folder for folder in older if not folder.name.startswith(f"v{CACHE_VERSION}-")]
    if older:
        megabytes = sum(path.stat().st_size for folder in older for path in folder.rglob("*.pt")) / 1e6
        log.info(
            "Decode cache %s: %s hold an older cache version, no longer read; deleting them frees %.0f MB",
            cache_dir, ", ".join(folder.name for folder in older), megabytes,
        )  # fmt: skip


def shard_checksum(shard: dict) -> str:
    """CRC-32 of everything a shard holds but its checksum: its keys, then each tensor's name, dtype,
    shape and bytes (tensors by name). Checking it reads the whole shard, about as fast as the page
    cache gives it (benchmarks/decode_cache.py measures it against decoding)."""
    crc = zlib.crc32("\n".join(shard["keys"]).encode())
    for name in sorted(set(shard) - {"keys", "checksum"}):
        tensor = shard[name].contiguous()
        crc = zlib.crc32(f"|{name}:{tensor.dtype}:{tuple(tensor.shape)}|".encode(), crc)
        crc = zlib.crc32(tensor.numpy(), crc)
    return f"crc32:{crc:08x}"


def shard_problem(shard: object, size: int, face_boxes: bool) -> str | None:
    """What is wrong with a loaded shard of `size`-pixel images (with `face_boxes`: of face crops):
    missing or unexpected fields, tensors of another type or shape than its keys call for, or a
    checksum that does not match; None for a sound one."""
    if not isinstance(shard, dict):
        return f"holds a {type(shard).__name__}, not a shard"
    tensors = {**SHARD_TENSORS, **({"boxes": FACE_BOXES} if face_boxes else {})}
    fields = {"keys", "checksum", *tensors}
    if set(shard) != fields:
        return f"fields {sorted(map(str, shard))} where a shard has {sorted(fields)}"
    keys = shard["keys"]
    if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
        return "its keys are not a list of strings"
    for name, (dtype, dims) in tensors.items():
        tensor = shard[name]
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else None
        ok = shape is not None and tensor.dtype == dtype and len(shape) == dims + 1 and shape[0] == len(keys)
        ok = ok and (name != "images" or shape[1:] == (3, size, size)) and (name != "boxes" or shape[1] == 4)
        if not ok:
            found = f"{tensor.dtype} {list(shape)}" if shape is not None else type(tensor).__name__
            return f"{name}: {found} for {len(keys)} keys"
    if shard["checksum"] != shard_checksum(shard):
        return "checksum mismatch: what it stores has changed since it was written"
    return None


def _box(stored: torch.Tensor | None) -> Box | None:
    """A stored face box, None where none was found (or the cache holds no face crops)."""
    if stored is None or int(stored[0]) < 0:
        return None
    return tuple(int(value) for value in stored)
