"""Finding and decoding image files: content decides the format, not the extension."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

log = logging.getLogger(__name__)


@dataclass
class ImageRecord:
    """One labelled image file; `split` is set by a predefined split folder or the splitter."""

    path: Path
    label: int
    split: str | None = None


@dataclass
class SkipReport:
    """Files the loader skipped, by reason ('hidden file', 'not an image', 'unreadable image')."""

    skipped: dict[str, list[Path]] = field(default_factory=dict)

    def add(self, reason: str, path: Path) -> None:
        self.skipped.setdefault(reason, []).append(path)

    def log_summary(self, root: Path | str) -> None:
        """Log the counts, and every unreadable image by path."""
        counts = {reason: len(paths) for reason, paths in self.skipped.items()}
        if counts:
            log.info("Skipped files under %s: %s", root, counts)
        for path in self.skipped.get("unreadable image", []):
            log.warning("Unreadable or truncated image skipped: %s", path)


def list_class_files(class_dir: Path, report: SkipReport) -> list[Path]:
    """Regular files below `class_dir` in sorted order; hidden ones go to `report`."""
    files = []
    for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(class_dir).parts):
            report.add("hidden file", path)
        else:
            files.append(path)
    return files


def load_rgb(path: Path, min_size: int | None = None) -> Image.Image:
    """Decode an image fully, apply its EXIF orientation and convert it to RGB.

    `min_size` lets JPEG decode at a reduced scale that still covers it. Transparent images are
    composited on white. Raises UnidentifiedImageError for non-images, OSError for unreadable or
    truncated ones.
    """
    with Image.open(path) as image:
        if min_size is not None:
            image.draft("RGB", (min_size, min_size))
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA"):
            background = Image.new("RGBA", image.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, image.convert("RGBA"))
        return image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> torch.Tensor:
    """Resize the shorter side to `size`, center-crop to size x size; uint8 tensor (3, H, W)."""
    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))),
        Image.Resampling.BILINEAR,
        reducing_gap=3.0,
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    cropped = resized.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(cropped, dtype=np.uint8).copy()).permute(2, 0, 1)


def difference_hash(image: Image.Image, hash_size: int = 16) -> np.ndarray:
    """Perceptual difference hash: hash_size**2 bits comparing horizontally adjacent pixels."""
    grey = image.convert("L").resize((hash_size + 1, hash_size), Image.Resampling.BILINEAR)
    pixels = np.asarray(grey, dtype=np.int16)
    return (pixels[:, 1:] > pixels[:, :-1]).reshape(-1)


def describe_counts(records: list[ImageRecord], class_names: list[str]) -> str:
    """'anger=214, disgust=159, ...' for error messages and logs."""
    counts = Counter(r.label for r in records)
    return ", ".join(f"{name}={counts.get(i, 0)}" for i, name in enumerate(class_names))
