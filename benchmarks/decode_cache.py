"""Benchmark: data-module start-up with a cold vs a warm decode cache, side by side.

    python benchmarks/decode_cache.py [DATA_ROOT] [IMAGE_SIZE]

DATA_ROOT defaults to ../shared/datasets/six_emotions, IMAGE_SIZE to 224. Each pass builds the
data module (scan, decode or cache load, duplicate grouping, split) in a fresh temporary cache
folder for the cold pass and reuses it for the warm passes; it prints the seconds measured.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from emotionvision.data import EmotionDataModule


def time_setup(root: Path, image_size: int, cache_dir: Path) -> float:
    """Seconds to prepare and set up the data module once."""
    start = time.perf_counter()
    datamodule = EmotionDataModule(root, image_size=image_size, cache_dir=cache_dir)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return time.perf_counter() - start


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


if __name__ == "__main__":
    main()
