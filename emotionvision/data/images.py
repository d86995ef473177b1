"""Finding and decoding image files: content decides the format, not the extension."""

from __future__ import annotations

import csv
import logging
import math
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from emotionvision.atomic import atomic_open
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
        """Write the skipped files (columns path, reason) to `path`, whole or not at all."""
        with atomic_open(path, "w", newline="") as handle:
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
    if path.is_symlink() and not path.exists():  # a dangling link or a loop of links (ELOOP)
        return "broken link"
    if isinstance(error, FileNotFoundError):
        return "missing file"
    if isinstance(error, PermissionError):
        return "not readable (permissions)"
    return "unreadable image"


def find_inputs(inputs: Iterable[str | Path]) -> list[tuple[Path, str | None]]:
    """Every file named in `inputs` or found in its folders (sorted, nested folders included), with
    the reason it is not read, or None: in folders, as training lists them (hidden file, broken link,
    not a regular file, link to a folder; `list_class_files`, logged with a count); a named file that
    is no regular file (a FIFO, which reading would block on: not a regular file) or a broken link.
    Each gets a row, so that every file the user gave shows in the output. A folder's count of files
    to read, and of those in its subfolders, is logged."""
    found: list[tuple[Path, str | None]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            listing = SkipReport()
            files = list_class_files(item, listing)
            found += sorted([*((path, None) for path in files), *((path, r) for r, path in _skips(listing))])
            in_subfolders = listing.nested.pop(item, 0)  # said here, not as training's class-folder note
            subfolders = f" ({in_subfolders} of them in subfolders)" if in_subfolders else ""
            log.info("%s: %d files to read%s", item, len(files), subfolders)
            listing.log_summary(item)
        elif item.is_symlink() and not item.exists():
            log.warning("%s skipped: broken link", item)
            found.append((item, "broken link"))
        elif item.exists() and not item.is_file():
            log.warning("%s skipped: not a regular file", item)
            found.append((item, "not a regular file"))
        elif item.is_file():
            found.append((item, None))
        else:
            raise UsageError(f"Input {item} does not exist (inputs=[...] takes image files and folders).")
    return found


def _skips(report: SkipReport) -> list[tuple[str, Path]]:
    return [(reason, path) for reason, paths in report.skipped.items() for path in paths]


def find_files(inputs: Iterable[str | Path]) -> list[Path]:
    """The files named in `inputs`, folders expanded to their files (sorted, nested folders
    included). Hidden files, links to folders and other non-files in folders are left out and logged
    with a count, as training does; broken links are kept (their decode fails with a reason)."""
    return [path for path, reason in find_inputs(inputs) if reason in (None, "broken link")]


def list_class_files(class_dir: Path, report: SkipReport) -> list[Path]:
    """Regular files below `class_dir` in sorted order. Files in nested folders belong to it (their
    count goes to `report.nested`); hidden files, broken links, links to folders (not followed) and
    other non-files go to `report`."""
    files = []
    for path in sorted(class_dir.rglob("*")):
        if path.is_dir():
            if path.is_symlink():  # rglob does not follow it (a link to a parent folder would loop)
                report.add("link to a folder (not followed)", path)
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


# resize_center_crop's reducing_gap (see Image.resize)
REDUCING_GAP = 3.0
# resize_center_crop resizes the whole image where that makes at most this many crops (an aspect ratio
# up to 16:1), and beyond that only the part of the image the crop reads
WHOLE_RESIZE_CROPS = 16


def resize_center_crop(image: Image.Image, size: int) -> torch.Tensor:
    """Resize the shorter side to `size`, center-crop to size x size; uint8 tensor (3, H, W).

    Not `PIL.ImageOps.fit`: that crops a fractional box before resizing and has no `reducing_gap`, so
    its pixels differ wherever the crop is not whole pixels of the resized image or the image shrinks
    3x or more (tests/test_images.py), and the cache and every checkpoint's preprocessing hold these.

    Memory is bounded whatever the aspect ratio: beyond `image`, a call takes at most about
    4 x WHOLE_RESIZE_CROPS x size**2 bytes (3.2 MB at size 224). Up to an aspect ratio of 16:1
    (`WHOLE_RESIZE_CROPS`) the whole image is resized, then cropped. Longer images would take 4 x size**2
    bytes per unit of aspect ratio that way (a 100000x1 strip at size 224: 20 GB), so only the part
    the crop reads is reduced and resized (`_resize_crop_part`): its pixels differ from resizing the
    whole by at most 1. With the decoded image itself (4 bytes per pixel, bounded by the pixel limit),
    that bounds a decode's peak memory (tests/test_images.py measures it for strip images).
    """
    width, height = image.size
    scale = size / min(width, height)
    full = (max(size, round(width * scale)), max(size, round(height * scale)))
    if full[0] * full[1] > WHOLE_RESIZE_CROPS * size * size:
        cropped = _resize_crop_part(image, full, size)
    else:
        resized = image.resize(full, Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
        left = (resized.width - size) // 2
        top = (resized.height - size) // 2
        cropped = resized.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(cropped, dtype=np.uint8).copy()).permute(2, 0, 1)


def _resize_crop_part(image: Image.Image, full: tuple[int, int], size: int) -> Image.Image:
    """The centre size x size crop of `image.resize(full, BILINEAR, reducing_gap=REDUCING_GAP)`,
    resampling only the part of `image` that the crop reads: Image.resize's reducing step is taken
    on that part, its blocks aligned as for the whole image, then the part is resized by a box. The
    result differs from the whole resize by at most 1 (PIL passes a box in single precision)."""
    factors = tuple(
        int(length / out / REDUCING_GAP) or 1 for length, out in zip(image.size, full, strict=True)
    )
    spans = [_crop_span(*axis, size) for axis in zip(image.size, full, factors, strict=True)]
    (x_first, x_end, x0, x1), (y_first, y_end, y0, y1) = spans
    part = image.reduce(factors, box=(x_first, y_first, x_end, y_end))
    return part.resize((size, size), Image.Resampling.BILINEAR, box=(x0, y0, x1, y1))


def _crop_span(length: int, out: int, factor: int, size: int) -> tuple[int, int, float, float]:
    """Along one axis of `_resize_crop_part`: an image `length` pixels long, reduced by `factor`
    and resized to `out` pixels, of which the centre `size` are kept. Returns the (first, end)
    source pixels those read (widened to the filter's support plus a pixel, and to whole reduced
    blocks) and the box (start, end) that resizes the reduced span to them."""
    reduced = length / factor  # the box's end after Image.resize's reducing step
    step = reduced / out  # reduced pixels per output pixel
    offset = (out - size) // 2
    support = max(step, 1.0)  # the bilinear filter's, in reduced pixels
    first = max(0, math.floor((offset + 0.5) * step - support) - 1)
    end = min(-(-length // factor), math.ceil((offset + size - 0.5) * step + support) + 1)
    box_end = reduced if offset + size == out else (offset + size) * step
    return first * factor, min(length, end * factor), offset * step - first, box_end - first


def difference_hash(image: Image.Image, hash_size: int = 16) -> np.ndarray:
    """Perceptual difference hash: hash_size**2 bits comparing horizontally adjacent pixels."""
    grey = image.convert("L").resize((hash_size + 1, hash_size), Image.Resampling.BILINEAR)
    pixels = np.asarray(grey, dtype=np.int16)
    return (pixels[:, 1:] > pixels[:, :-1]).reshape(-1)
