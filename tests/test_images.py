"""Image loading: content decides the format, every mode ends as RGB, bad files are skipped."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from emotionvision.data import EmotionDataModule
from emotionvision.data.cache import DecodeCache
from emotionvision.data.images import (
    SkipReport,
    difference_hash,
    list_class_files,
    load_rgb,
    resize_center_crop,
)


def noise(size: tuple[int, int], seed: int = 0, channels: int = 3) -> np.ndarray:
    width, height = size
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def smooth_image(seed: int, size: int = 96) -> Image.Image:
    """A smooth random RGB image (a 6x6 grid upsampled): its structure survives resizing."""
    return Image.fromarray(noise((6, 6), seed)).resize((size, size), Image.Resampling.BICUBIC)


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(noise((64, 64))).save(buffer, format="JPEG", quality=95)
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_webp_content_named_jpg_loads_by_content(tmp_path: Path) -> None:
    pixels = noise((20, 12))
    path = tmp_path / "photo.jpg"
    Image.fromarray(pixels).save(path, format="WEBP", lossless=True)
    with Image.open(path) as raw:
        assert raw.format == "WEBP"
    image = load_rgb(path)
    assert image.mode == "RGB"
    assert image.size == (20, 12)
    np.testing.assert_array_equal(np.asarray(image), pixels)


def test_rgba_png_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[:2] = (200, 10, 10, 255)  # opaque red top half; bottom half fully transparent black
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    pixels = np.asarray(load_rgb(path))
    assert pixels.shape == (4, 4, 3)
    assert (pixels[:2] == (200, 10, 10)).all()
    assert (pixels[2:] == 255).all()


def test_palette_png_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 black, index 1 blue
    image.paste(1, (0, 0, 4, 2))  # top half blue, bottom half index 0
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    with Image.open(path) as raw:
        assert raw.mode == "P" and "transparency" in raw.info
    pixels = np.asarray(load_rgb(path))
    assert (pixels[:2] == (0, 0, 255)).all()
    assert (pixels[2:] == 255).all()  # transparent black became white, not black


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path: Path) -> None:
    grey = noise((10, 8), channels=1)
    path = tmp_path / "grey.png"
    Image.fromarray(grey, "L").save(path)
    pixels = np.asarray(load_rgb(path))
    assert pixels.shape == (8, 10, 3)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], grey)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": stored 40x20, shown 20x40
    path = tmp_path / "rotated.jpg"
    Image.fromarray(noise((40, 20))).save(path, format="JPEG", exif=exif.tobytes())
    with Image.open(path) as raw:
        assert raw.size == (40, 20)
    assert load_rgb(path).size == (20, 40)


def test_truncated_jpeg_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        load_rgb(truncated_jpeg(tmp_path / "cut.jpg"))


@pytest.mark.parametrize("content", [b"", b"not an image, just some text\n"], ids=["empty", "text"])
def test_non_image_raises_unidentified(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(UnidentifiedImageError):
        load_rgb(path)


def test_decode_cache_skips_bad_files_by_reason(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    Image.fromarray(noise((30, 20))).save(good)
    cut = truncated_jpeg(tmp_path / "cut.jpg")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("hello\n")
    report = SkipReport()
    kept, images = DecodeCache(tmp_path / "cache", 16).get_many([good, cut, empty, text], report)
    assert kept == [good]
    assert images[0].pixels.shape == (3, 16, 16)
    assert report.skipped == {"unreadable image": [cut], "not an image": [empty, text]}


def test_hidden_files_are_skipped_and_counted(tmp_path: Path) -> None:
    class_dir = tmp_path / "happy"
    (class_dir / ".thumbs").mkdir(parents=True)
    (class_dir / "sub").mkdir()
    for name in ("b.png", "a.png", ".DS_Store", ".thumbs/a.png", "sub/c.png"):
        (class_dir / name).write_bytes(b"x")
    report = SkipReport()
    files = list_class_files(class_dir, report)
    assert files == [class_dir / "a.png", class_dir / "b.png", class_dir / "sub/c.png"]
    assert sorted(report.skipped["hidden file"]) == [class_dir / ".DS_Store", class_dir / ".thumbs/a.png"]


def test_datamodule_survives_every_kind_of_bad_file(tmp_path: Path, caplog, make_tree) -> None:
    root = make_tree(tmp_path / "images", {"anger": 8, "happy": 8})
    happy = root / "happy"
    bad = [truncated_jpeg(happy / "cut.jpg"), happy / "empty.jpg", happy / "readme.txt"]
    bad[1].write_bytes(b"")
    bad[2].write_text("not an image\n")
    (happy / ".hidden.png").write_bytes((happy / "happy_000.png").read_bytes())
    Image.fromarray(noise((20, 30), 5)).save(happy / "disguised.jpg", format="WEBP")
    datamodule = EmotionDataModule(
        root, image_size=16, cache_dir=tmp_path / "cache", num_workers=0, split_ratios=[0.5, 0.25, 0.25]
    )
    with caplog.at_level("INFO", logger="emotionvision"):
        datamodule.setup()
    listed = {Path(path) for path, *_ in datamodule.manifest}
    assert not listed & {*bad, happy / ".hidden.png"}
    assert happy / "disguised.jpg" in listed
    assert len(listed) == 17
    assert sum(len(dataset) for dataset in datamodule.datasets.values()) == 17
    assert "'hidden file': 1" in caplog.text
    assert f"Unreadable or truncated image skipped: {bad[0]}" in caplog.text


@pytest.mark.parametrize("size", [(60, 30), (30, 60), (10, 7), (32, 32)])
def test_resize_center_crop_shape(size: tuple[int, int]) -> None:
    tensor = resize_center_crop(Image.fromarray(noise(size)), 16)
    assert tensor.shape == (3, 16, 16)
    assert tensor.dtype == torch.uint8


def test_resize_center_crop_keeps_the_centre() -> None:
    pixels = np.zeros((30, 90, 3), dtype=np.uint8)
    pixels[:, :30] = (255, 0, 0)  # red left third
    pixels[:, 30:60] = (0, 0, 255)  # blue centre square
    pixels[:, 60:] = (0, 255, 0)  # green right third
    tensor = resize_center_crop(Image.fromarray(pixels), 10)
    assert (tensor[2] > 200).all() and (tensor[0] < 50).all() and (tensor[1] < 50).all()


@pytest.mark.parametrize(
    ("size", "side"), [((64, 32), 16), ((300, 200), 224), ((48, 48), 64), ((32, 32), 16)]
)
def test_resize_center_crop_is_imageops_fit_where_the_crop_falls_on_whole_pixels(
    size: tuple[int, int], side: int
) -> None:
    """Where the centre crop falls on whole pixels of the resized image and it shrinks less than 3x,
    the pixels equal PIL.ImageOps.fit's (the same geometry and filter)."""
    image = Image.fromarray(noise(size, seed=3))
    fitted = ImageOps.fit(image, (side, side), Image.Resampling.BILINEAR)
    tensor = resize_center_crop(image, side)
    np.testing.assert_array_equal(tensor.permute(1, 2, 0).numpy(), np.asarray(fitted))


@pytest.mark.parametrize(("size", "side"), [((10, 7), 16), ((640, 480), 224)], ids=["fractional crop", "4x"])
def test_imageops_fit_differs_elsewhere(size: tuple[int, int], side: int) -> None:
    """Why the cache keeps its own resize: a fractional crop box or a 3x-and-more shrink (reducing_gap)
    give other pixels, and cached images and checkpoints' preprocessing hold these."""
    image = Image.fromarray(noise(size, seed=3))
    fitted = np.asarray(ImageOps.fit(image, (side, side), Image.Resampling.BILINEAR))
    assert not np.array_equal(resize_center_crop(image, side).permute(1, 2, 0).numpy(), fitted)


@pytest.mark.parametrize(
    ("size", "side", "tolerance"),
    [
        ((512, 32), 16, 0),  # 16:1, the longest resized whole: its pixels as ever
        ((3000, 20), 48, 1),  # 150:1 upscaled
        ((20, 3000), 16, 1),  # 150:1 shrunk 1.25x
        ((6000, 100), 16, 1),  # 60:1 shrunk 6x: reduced 2x first
        ((90, 4000), 48, 1),  # 44:1 shrunk
    ],
)
def test_long_images_resize_only_the_crop(size: tuple[int, int], side: int, tolerance: int) -> None:
    """Beyond 16:1 only the part of the image the centre crop reads is resized: within one level of
    resizing the whole image and cropping (PIL passes the box in single precision)."""
    image = Image.fromarray(noise(size, seed=5))
    scale = side / min(size)
    whole = image.resize(
        (max(side, round(size[0] * scale)), max(side, round(size[1] * scale))),
        Image.Resampling.BILINEAR,
        reducing_gap=3.0,
    )
    left, top = (whole.width - side) // 2, (whole.height - side) // 2
    expected = np.asarray(whole.crop((left, top, left + side, top + side))).astype(int)
    pixels = resize_center_crop(image, side).permute(1, 2, 0).numpy().astype(int)
    assert np.abs(pixels - expected).max() <= tolerance


# the most a process may grow decoding each strip below, at the default size (224 px)
STRIP_PEAK_MB = 32


# run in a fresh interpreter (a fork of the test process inherits its threads, handlers and address space)
STRIP_DECODE = """
import json, resource, sys
from pathlib import Path
from emotionvision.data.cache import DecodeCache
from emotionvision.data.images import SkipReport
folder = Path(sys.argv[1])
paths = [folder / name for name in ("40x30.png", "100000x1.png", "1x100000.png")]
cache = DecodeCache(folder / "cache", 224)
cache.get_many(paths[:1], SkipReport())
start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
status = Path("/proc/self/status").read_text().splitlines()
virtual = int(next(line for line in status if line.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (virtual + 2**31, resource.RLIM_INFINITY))
growth = {}
for path in paths[1:]:
    kept, _ = cache.get_many([path], SkipReport())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    growth[path.stem], start = ((peak - start) / 1024 if kept == [path] else -1.0), peak
print(json.dumps(growth))
"""


def _strip_peak_growth(folder: Path) -> dict[str, float]:
    """Peak RSS growth (MB, ru_maxrss) of a fresh process while the decode cache takes a 100000x1
    and a 1x100000 PNG at 224 px, after an ordinary image (what any decode allocates). The process's
    address space is capped 2 GB above that point, so a regression fails fast instead of swapping."""
    for width, height in ((40, 30), (100_000, 1), (1, 100_000)):
        ramp = (np.arange(width * height) % 251).astype(np.uint8)
        image = Image.fromarray(np.stack([ramp] * 3, axis=-1).reshape(height, width, 3))
        image.save(folder / f"{width}x{height}.png")
    environment = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", STRIP_DECODE, str(folder)], capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, f"the decoding process failed (out of memory?):\n{result.stderr[-2000:]}"
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc and ru_maxrss in kB")
def test_strip_images_decode_in_bounded_memory(tmp_path: Path) -> None:
    """A 100000x1 PNG was resized whole before its crop (to 22.4M x 224 at 224 px: 20 GB; 1.87 GB at
    48 px). Now each strip adds a few MB to the process's peak."""
    growth = _strip_peak_growth(tmp_path)
    assert set(growth) == {"100000x1", "1x100000"}
    assert all(0 <= mb < STRIP_PEAK_MB for mb in growth.values()), growth


def test_difference_hash_resized_copy_and_unrelated_image() -> None:
    image = smooth_image(0)
    reference = difference_hash(image)
    assert reference.shape == (256,) and reference.dtype == bool
    np.testing.assert_array_equal(difference_hash(image.copy()), reference)
    for copy in (image.resize((64, 64), Image.Resampling.BILINEAR), image.resize((150, 150))):
        assert (difference_hash(copy) != reference).sum() <= 4  # far below the 20-bit threshold
    assert (difference_hash(smooth_image(1)) != reference).sum() > 60
