"""Finding and decoding image files: content decides the format, not the extension."""

from __future__ import annotations

import csv
import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from emotionvision.errors import UsageError

log = logging.getLogger(__name__)

# PIL's default Image.MAX_IMAGE_PIXELS (1024**3 // 4 // 3): the default of data.max_image_pixels
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
# what a failed decode may raise (DecompressionBombError is no OSError)
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
# skipped files named one by one in the log (the rest at DEBUG level, and all in skipped.csv)
SHOWN_SKIPS = 10
# how the log names a skip reason
REASON_TEXT = {"unreadable image": "Unreadable or truncated image", "not an image": "Not an image"}


class ImageTooLargeError(Image.DecompressionBombError):
    """An image with more pixels than the decode allows (`data.max_image_pixels`)."""


@dataclass
class SkipReport:
    """Files the loader skipped, by reason ('hidden file', 'broken link', 'not an image', 'image too
    large', 'unreadable image', ...), and the number of files in nested folders of each listed folder."""

    skipped: dict[str, list[Path]] = field(default_factory=dict)
    nested: dict[Path, int] = field(default_factory=dict)

    def add(self, reason: str, path: Path) -> None:
        self.skipped.setdefault(reason, []).append(path)

    def rows(self) -> list[tuple[Path, str]]:
        """(path, reason) of every skipped file, sorted by path."""
        return sorted((path, reason) for reason, paths in self.skipped.items() for path in paths)

    def log_summary(self, root: Path | str, shown: int = SHOWN_SKIPS) -> None:
        """Log the nested-folder counts, the skip counts and the first `shown` skipped files by path
        (the others at DEBUG level)."""
        for folder, count in self.nested.items():
            log.info("%s: %d files in nested folders, used as part of it", folder, count)
        rows = self.rows()
        if not rows:
            return
        counts = {reason: len(paths) for reason, paths in self.skipped.items()}
        log.info("Skipped files under %s: %s", root, counts)
        for index, (path, reason) in enumerate(rows):
            text = REASON_TEXT.get(reason, reason.capitalize())
            log.log(logging.INFO if index < shown else logging.DEBUG, "%s skipped: %s", text, path)
        if len(rows) > shown:
            log.info("... and %d more skipped files (listed at DEBUG level)", len(rows) - shown)

    def write_csv(self, path: Path) -> None:
        """Write the skipped files (columns path, reason) to `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "reason"])
            writer.writerows((str(path), reason) for path, reason in self.rows())
        if self.skipped:
            log.info("Skipped files listed in %s", path)


def skip_reason(error: BaseException, path: Path) -> str:
    """The SkipReport reason for a file whose decode raised `error`."""
    if isinstance(error, Image.DecompressionBombError):
        return "image too large"
    if isinstance(error, UnidentifiedImageError):
        return "not an image"
    if isinstance(error, FileNotFoundError):
        return "broken link" if path.is_symlink() else "missing file"
    if isinstance(error, PermissionError):
        return "not readable (permissions)"
    return "unreadable image"


def find_files(inputs: Iterable[str | Path]) -> list[Path]:
    """The files named in `inputs`, folders expanded to their files (sorted, nested folders
    included). Hidden files in folders are left out and logged with a count, as training does;
    broken links are kept, so that they get an error row."""
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            listing = SkipReport()
            found = list_class_files(item, listing)
            files += sorted([*found, *listing.skipped.pop("broken link", [])])
            listing.log_summary(item)
        elif item.is_file() or item.is_symlink():
            files.append(item)
        else:
            raise UsageError(f"Input {item} does not exist (inputs=[...] takes image files and folders).")
    return files


def list_class_files(class_dir: Path, report: SkipReport) -> list[Path]:
    """Regular files below `class_dir` in sorted order. Files in nested folders belong to it (their
    count goes to `report.nested`); hidden files, broken links and other non-files go to `report`."""
    files = []
    for path in sorted(class_dir.rglob("*")):
        if path.is_dir():
            continue
        if any(part.startswith(".") for part in path.relative_to(class_dir).parts):
            report.add("hidden file", path)
        elif not path.exists():
            report.add("broken link", path)
        elif not path.is_file():
            report.add("not a regular file", path)
        else:
            files.append(path)
    nested = sum(len(path.relative_to(class_dir).parts) > 1 for path in files)
    if nested:
        report.nested[class_dir] = nested
    return files


class _PilLimitLifted:
    """While any decode runs, PIL's own decompression-bomb check (`Image.MAX_IMAGE_PIXELS`) is off,
    so `data.max_image_pixels` alone decides (also above PIL's limit). PIL's setting is restored when
    the last concurrent decode ends: nothing leaks out of the decodes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.saved: int | None = None

    def __enter__(self) -> None:
        with self.lock:
            if self.users == 0:
                self.saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            self.users += 1

    def __exit__(self, *exc_info: object) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                Image.MAX_IMAGE_PIXELS = self.saved


PIL_LIMIT_LIFTED = _PilLimitLifted()


@contextmanager
def open_image(path: Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Iterator[Image.Image]:
    """`Image.open(path)` (lazy: nothing decoded yet), refused with ImageTooLargeError when it has
    more than `max_pixels` pixels (None: no limit). Decode inside the block: PIL's own limit is
    lifted there (`PIL_LIMIT_LIFTED`), as this one replaces it."""
    with PIL_LIMIT_LIFTED, Image.open(path) as image:
        pixels = image.width * image.height
        if max_pixels is not None and pixels > max_pixels:
            raise ImageTooLargeError(
                f"{path} has {image.width}x{image.height} = {pixels} pixels, more than the limit of "
                f"{max_pixels}: if the file is trusted, raise data.max_image_pixels (max_image_pixels "
                "for emotionvision-predict) or set it to null."
            )
        yield image


def load_rgb(
    path: Path, min_size: int | None = None, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> Image.Image:
    """Decode an image fully, apply its EXIF orientation and convert it to RGB (see `to_rgb`).

    `min_size` lets JPEG decode at a reduced scale that still covers it. Animated and multi-page
    files give their first frame. Raises ImageTooLargeError (a DecompressionBombError) above
    `max_pixels` pixels (None: no limit), UnidentifiedImageError for non-images, OSError for
    unreadable or truncated ones.
    """
    with open_image(path, max_pixels) as image:
        if min_size is not None:
            image.draft("RGB", (min_size, min_size))
        image.load()
        return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB of any mode (see `to_8_bit`); transparent images are composited on white."""
    image = to_8_bit(image)
    if image.has_transparency_data:
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")


def to_8_bit(image: Image.Image) -> Image.Image:
    """Greyscale of more than 8 bits as 8-bit 'L' (PIL would clip it to 0..255: mostly white).

    16-bit modes (I;16*) keep their high byte (>> 8, the inverse of 8-to-16-bit scaling). Mode I
    (32-bit integers) holds 16-bit samples in the files PIL gives it for (16-bit PGM, PNG in older
    PIL): it is clipped to 0..65535 and treated as 16-bit (true 32-bit data saturates). Mode F
    (float) has no fixed white level: white is the first of 1.0, 255 and 65535 that its largest
    value does not exceed (above that, its largest value); negatives and NaN are black.
    Other modes are returned as they are.
    """
    if image.mode.startswith("I;16") or image.mode == "I":
        values = np.clip(np.asarray(image).astype(np.int64), 0, 65535) >> 8
    elif image.mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(values.max(initial=0.0))
        white = next((level for level in (1.0, 255.0, 65535.0) if peak <= level), peak)
        values = np.rint(np.clip(values / white, 0.0, 1.0) * 255)
    else:
        return image
    return Image.fromarray(values.astype(np.uint8), "L")


def resize_center_crop(image: Image.Image, size: int) -> torch.Tensor:
    """Resize the shorter side to `size`, center-crop to size x size; uint8 tensor (3, H, W).

    Not `PIL.ImageOps.fit`: that crops a fractional box before resizing and has no `reducing_gap`, so
    its pixels differ wherever the crop is not whole pixels of the resized image or the image shrinks
    3x or more (tests/test_images.py), and the cache and every checkpoint's preprocessing hold these."""
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
