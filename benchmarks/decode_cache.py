"""Benchmark: data-module start-up with a cold vs a warm decode cache, side by side, and the cost of
checking each cache shard's checksum against decoding the same images.

    python benchmarks/decode_cache.py [DATA_ROOT] [IMAGE_SIZE]

DATA_ROOT defaults to ../shared/datasets/six_emotions, IMAGE_SIZE to 224. Each pass builds the
data module (scan, decode or cache load, duplicate grouping, split) in a fresh temporary cache
folder for the cold pass and reuses it for the warm passes; it prints the seconds measured. Then
every file under DATA_ROOT is decoded into one shard of another fresh cache folder (as a cold
cache does), and the shard's checksum is computed once more as a load does (`shard_checksum`,
on the memory-mapped shard, so the page cache serves it), with the speeds of other checksums.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
import zlib
from pathlib import Path

import torch

from emotionvision.data import EmotionDataModule
from emotionvision.data.cache import DecodeCache, shard_checksum
from emotionvision.data.images import SkipReport, find_files


def time_setup(root: Path, image_size: int, cache_dir: Path) -> float:
    """Seconds to prepare and set up the data module once."""
    start = time.perf_counter()
    datamodule = EmotionDataModule(root, image_size=image_size, cache_dir=cache_dir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return time.perf_counter() - start


def checksum_cost(root: Path, image_size: int, cache_dir: Path) -> None:
    """Print the seconds to decode every file under `root` into a shard and to checksum that shard."""
    paths = find_files([root])
    start = time.perf_counter()
    kept, _ = DecodeCache(cache_dir, image_size).get_many(paths, SkipReport())
    decode = time.perf_counter() - start
    (shard_path,) = DecodeCache(cache_dir, image_size).folder.glob("shard-*.pt")
    shard = torch.load(shard_path, mmap=True, weights_only=True)
    shard_checksum(shard)  # the first pass pages the shard in, as a load after the decode would find it
    start = time.perf_counter()
    shard_checksum(shard)
    check = time.perf_counter() - start
    megabytes = shard_path.stat().st_size / 1e6
    each = decode / len(kept) * 1e3
    print(f"decode {len(kept)} images into one shard: {decode:.1f} s ({each:.2f} ms an image)")
    print(
        f"checksum of that shard ({megabytes:.0f} MB): {check * 1e3:.0f} ms "
        f"({check / len(kept) * 1e6:.0f} us an image, {megabytes / 1e3 / check:.2f} GB/s), "
        f"{check / decode:.2%} of decoding the same images"
    )
    data = memoryview(shard["images"].numpy()).cast("B")
    speeds = []
    for name, checksum in (
        ("crc32", zlib.crc32),
        ("adler32", zlib.adler32),
        ("blake2b", lambda data: hashlib.blake2b(data).digest()),
        ("sha1", lambda data: hashlib.sha1(data).digest()),
    ):
        start = time.perf_counter()
        checksum(data)
        speeds.append(f"{name} {len(data) / 1e9 / (time.perf_counter() - start):.2f}")
    print(f"checksum speeds on this machine (GB/s): {', '.join(speeds)}")


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/six_emotions")
    image_size = int(sys.argv[2]) if len(sys.argv) > 2 else 224
    with tempfile.TemporaryDirectory() as cache_dir:
        cold = time_setup(root, image_size, Path(cache_dir))
        warm = [time_setup(root, image_size, Path(cache_dir)) for _ in range(2)]
    print(f"data: {root}  image size: {image_size}")
    print(f"cold cache (decode every file): {cold:.1f} s")
    print(f"warm cache (2 passes):          {warm[0]:.1f} s, {warm[1]:.1f} s")
    print(f"speed-up cold/warm:             {cold / min(warm):.1f}x")
    with tempfile.TemporaryDirectory() as cache_dir:
        checksum_cost(root, image_size, Path(cache_dir))


if __name__ == "__main__":
    main()
