"""Bad and unusual files (issue "Trust", part "Bad files"): each is used or skipped by path, through
the one decode path of training, evaluation and prediction. The corpus is generated here."""

from __future__ import annotations

import csv
import io
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose
from PIL import Image

from emotionvision.cli.train import train
from emotionvision.data.cache import DecodeCache
from emotionvision.data.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageTooLargeError,
    SkipReport,
    find_files,
    list_class_files,
    load_rgb,
)
from emotionvision.errors import UsageError
from emotionvision.evaluation import evaluate
from emotionvision.inference import Predictor
from emotionvision.models import EmotionClassifier

BOMB_SIDE = 20_000  # 400 M pixels: more than twice PIL's limit, in a file of about 50 kB


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(path: Path, side: int = BOMB_SIDE) -> Path:
    """A valid 1-bit black PNG of side x side pixels, written without ever holding it in memory."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + side // 8)  # filter byte 0, then the packed pixels
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def noise(seed: int, size: int = 24) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def truncated_jpeg(path: Path, seed: int = 0) -> Path:
    buffer = io.BytesIO()
    noise(seed, 64).save(buffer, format="JPEG", quality=95)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def gradient_16_bit() -> np.ndarray:
    """4 rows of a horizontal 0..65535 gradient, uint16."""
    return np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))


def cmyk_jpeg(path: Path, colour: tuple[int, int, int] = (200, 50, 100)) -> Path:
    Image.new("RGB", (16, 16), colour).convert("CMYK").save(path, format="JPEG", quality=95)
    return path


def palette_png_with_alpha(path: Path) -> Path:
    """Top half blue (opaque), third row red at alpha 128, last row index 0 (fully transparent)."""
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 0, 0, 255, 255, 0, 0] + [0] * 759)
    image.paste(1, (0, 0, 4, 2))
    image.paste(2, (0, 2, 4, 3))
    image.save(path, transparency=bytes([0, 255, 128]))
    return path


def frames(seed: int = 0) -> list[Image.Image]:
    """Three frames: noise, then plain green and plain blue."""
    return [noise(seed), Image.new("RGB", (24, 24), (0, 255, 0)), Image.new("RGB", (24, 24), (0, 0, 255))]


def animated_gif(path: Path, seed: int = 0) -> Path:
    first, *rest = frames(seed)
    first.save(path, format="GIF", save_all=True, append_images=rest, duration=100, loop=0)
    return path


def multipage_tiff(path: Path, seed: int = 0) -> Path:
    first, *rest = frames(seed)
    first.save(path, format="TIFF", save_all=True, append_images=rest)
    return path


def skip_reasons(
    paths: list[Path], tmp_path: Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> dict:
    """{reason: [paths]} of the files the decode cache skips."""
    report = SkipReport()
    DecodeCache(tmp_path / "cache", 16, max_pixels=max_pixels).get_many(paths, report)
    return report.skipped


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained two-class 32 px checkpoint, for predict."""
    torch.manual_seed(0)
    model = EmotionClassifier("resnet18", ["anger", "happy"], input_size=32)
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_skipped_by_path(tmp_path: Path) -> None:
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000
    good = tmp_path / "good.png"
    noise(0).save(good)
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png has 20000x20000 = 400000000 pixels"):
        load_rgb(bomb)
    assert skip_reasons([bomb, good], tmp_path) == {"image too large": [bomb]}
    assert Image.MAX_IMAGE_PIXELS == DEFAULT_MAX_IMAGE_PIXELS  # PIL's own setting untouched


def test_pixel_limit_is_the_setting_not_pils(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL alone would refuse 20x20 = 400 pixels
    path = tmp_path / "small.png"
    noise(0, 20).save(path)
    assert load_rgb(path, max_pixels=None).size == (20, 20)
    assert load_rgb(path, max_pixels=400).size == (20, 20)
    with pytest.raises(ImageTooLargeError, match="more than the limit of 399"):
        load_rgb(path, max_pixels=399)
    assert Image.MAX_IMAGE_PIXELS == 100
    assert skip_reasons([path], tmp_path, max_pixels=None) == {}
    # now in the cache: a lower limit still skips it
    assert skip_reasons([path], tmp_path, max_pixels=399) == {"image too large": [path]}


@pytest.mark.parametrize("fmt", ["I;16 PNG", "I PGM", "F TIFF unit range", "F TIFF 8-bit range"])
def test_high_bit_depth_greyscale_scales_to_8_bit(tmp_path: Path, fmt: str) -> None:
    gradient = gradient_16_bit()
    expected = (gradient >> 8).astype(np.uint8)
    path = tmp_path / "grey"
    if fmt == "I;16 PNG":
        Image.fromarray(gradient).save(path, format="PNG")
    elif fmt == "I PGM":
        Image.fromarray(gradient).save(path, format="PPM")
    else:
        scale = 1.0 if fmt == "F TIFF unit range" else 255.0
        expected = np.linspace(0, 255, 256).round().astype(np.uint8)[None].repeat(4, 0)
        Image.fromarray(np.linspace(0, scale, 256, dtype=np.float32)[None].repeat(4, 0), "F").save(
            path, format="TIFF"
        )
    with Image.open(path) as raw:
        assert raw.mode == fmt.split()[0]
    pixels = np.asarray(load_rgb(path))
    for channel in range(3):
        np.testing.assert_array_equal(pixels[..., channel], expected)


def test_broken_symlink_is_counted_as_skipped(tmp_path: Path) -> None:
    class_dir = tmp_path / "happy"
    class_dir.mkdir()
    noise(0).save(class_dir / "a.png")
    (class_dir / "b.jpg").symlink_to(tmp_path / "gone.jpg")
    report = SkipReport()
    assert list_class_files(class_dir, report) == [class_dir / "a.png"]
    assert report.skipped == {"broken link": [class_dir / "b.jpg"]}


def test_broken_symlink_given_to_predict_is_an_error_row(tmp_path: Path, checkpoint: Path) -> None:
    link = tmp_path / "broken_link.jpg"
    link.symlink_to(tmp_path / "gone.jpg")
    good = tmp_path / "good.png"
    noise(0).save(good)
    predictions = Predictor(checkpoint, device="cpu").predict([link, good])
    assert [p.path for p in predictions] == [str(link), str(good)]
    assert predictions[0].error.startswith("broken link: ") and predictions[0].labels == []
    assert predictions[1].error is None
    with pytest.raises(UsageError, match=r"nowhere\.jpg does not exist"):
        find_files([tmp_path / "nowhere.jpg"])  # a missing input is still an error


def test_hidden_file_given_to_predict_is_logged_and_counted(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    noise(0).save(folder / "a.png")
    noise(1).save(folder / ".hidden.png")
    with caplog.at_level(logging.INFO, logger="emotionvision"):
        assert find_files([folder]) == [folder / "a.png"]
    assert f"Skipped files under {folder}: {{'hidden file': 1}}" in caplog.text
    assert f"Hidden file skipped: {folder / '.hidden.png'}" in caplog.text


def test_nested_folders_belong_to_the_class_and_are_counted(tmp_path: Path, caplog) -> None:
    class_dir = tmp_path / "sad"
    (class_dir / "2019" / "march").mkdir(parents=True)
    for name in ("top.png", "2019/a.png", "2019/march/b.png"):
        noise(0).save(class_dir / name)
    report = SkipReport()
    files = list_class_files(class_dir, report)
    assert files == [class_dir / "2019/a.png", class_dir / "2019/march/b.png", class_dir / "top.png"]
    assert report.nested == {class_dir: 2} and report.skipped == {}
    with caplog.at_level(logging.INFO, logger="emotionvision"):
        report.log_summary(tmp_path)
    assert f"{class_dir}: 2 files in nested folders, used as part of it" in caplog.text


@pytest.mark.parametrize(
    ("name", "reason"),
    [("empty.jpg", "not an image"), ("cut.jpg", "unreadable image"), ("notes.jpg", "not an image")],
    ids=["zero-byte", "truncated", "text named .jpg"],
)
def test_damaged_file_is_skipped_by_reason(tmp_path: Path, name: str, reason: str) -> None:
    path = tmp_path / name
    if name == "empty.jpg":
        path.write_bytes(b"")
    elif name == "cut.jpg":
        truncated_jpeg(path)
    else:
        path.write_text("not an image, just some text\n")
    assert skip_reasons([path], tmp_path) == {reason: [path]}


def test_cmyk_jpeg_becomes_its_rgb_colour(tmp_path: Path) -> None:
    path = cmyk_jpeg(tmp_path / "cmyk.jpg")
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    pixels = np.asarray(load_rgb(path)).astype(int)
    assert np.abs(pixels - (200, 50, 100)).max() <= 3


def test_palette_png_with_alpha_is_composited_on_white(tmp_path: Path) -> None:
    path = palette_png_with_alpha(tmp_path / "palette.png")
    with Image.open(path) as raw:
        assert raw.mode == "P" and raw.info["transparency"] == bytes([0, 255, 128])
    pixels = np.asarray(load_rgb(path)).astype(int)
    assert (pixels[:2] == (0, 0, 255)).all()
    assert (np.abs(pixels[2] - (255, 127, 127)) <= 1).all()  # red at half alpha over white
    assert (pixels[3] == 255).all()


@pytest.mark.parametrize("write", [animated_gif, multipage_tiff], ids=["animated GIF", "multi-page TIFF"])
def test_first_frame_of_a_many_frame_file(tmp_path: Path, write) -> None:
    path = write(tmp_path / "many", seed=3)
    with Image.open(path) as raw:
        assert raw.n_frames == 3
    pixels = np.asarray(load_rgb(path)).astype(int)
    first = np.asarray(frames(3)[0]).astype(int)
    assert pixels.shape == (24, 24, 3)
    assert np.abs(pixels - first).mean() < 20  # the noise frame (GIF quantises it), not green or blue


def test_skip_summary_names_the_first_files_then_counts(tmp_path: Path, caplog) -> None:
    report = SkipReport()
    paths = [tmp_path / f"{i:02d}.jpg" for i in range(12)]
    for path in paths:
        report.add("not an image", path)
    with caplog.at_level(logging.INFO, logger="emotionvision"):
        report.log_summary(tmp_path)
    named = [record for record in caplog.records if record.getMessage().startswith("Not an image skipped")]
    assert [record.getMessage() for record in named] == [f"Not an image skipped: {p}" for p in paths[:10]]
    assert "... and 2 more skipped files" in caplog.text
    report.write_csv(tmp_path / "out" / "skipped.csv")
    assert read_rows(tmp_path / "out" / "skipped.csv") == [(str(p), "not an image") for p in paths]


def read_rows(path: Path) -> list[tuple[str, str]]:
    with path.open() as handle:
        reader = csv.reader(handle)
        assert next(reader) == ["path", "reason"]
        return [tuple(row) for row in reader]


def bad_corpus(root: Path, make_tree) -> tuple[set[Path], list[tuple[str, str]]]:
    """A two-class tree of 8 plain PNGs per class plus odd-but-usable and bad files. Returns the
    files that must be used and the (path, reason) rows skipped.csv must hold."""
    make_tree(root, {"anger": 8, "happy": 8}, size=24)
    anger, happy = root / "anger", root / "happy"
    (anger / "nested").mkdir()
    noise(10).save(anger / "nested" / "deep.png")
    Image.fromarray((np.random.default_rng(11).integers(0, 65536, (24, 24))).astype(np.uint16)).save(
        anger / "grey16.png"
    )
    Image.fromarray(np.asarray(noise(12))).convert("CMYK").save(anger / "cmyk.jpg", quality=95)
    palette = noise(13).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(happy / "palette.png", transparency=bytes([0, 255, 128, 255, 255, 255, 255, 255]))
    animated_gif(happy / "animated.gif", seed=14)
    multipage_tiff(happy / "pages.tif", seed=15)
    used = {p for p in root.rglob("*") if p.is_file()}
    skipped = [
        (bomb_png(anger / "bomb.png"), "image too large"),
        (anger / ".hidden.png", "hidden file"),
        (anger / "empty.jpg", "not an image"),
        (truncated_jpeg(happy / "cut.jpg"), "unreadable image"),
        (happy / "notes.jpg", "not an image"),
        (happy / "link.jpg", "broken link"),
    ]
    noise(16).save(anger / ".hidden.png")
    (anger / "empty.jpg").write_bytes(b"")
    (happy / "notes.jpg").write_text("not an image\n")
    (happy / "link.jpg").symlink_to(root / "gone.jpg")
    return used, sorted((str(path), reason) for path, reason in skipped)


def test_bad_corpus_through_train_eval_and_predict(
    tmp_path: Path, make_tree, compose_train, quick_run_overrides: list[str], caplog
) -> None:
    root = tmp_path.resolve() / "corpus"
    used, skipped = bad_corpus(root, make_tree)
    assert len(used) == 22 and len(skipped) == 6
    run = tmp_path / "run"
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    cfg = compose_train(
        [
            *quick_run_overrides,
            "data=folder",
            f"data.root={root}",
            cache,
            "data.batch_size=8",
            "trainer.accelerator=cpu",
            f"paths.output_dir={run}",
        ]
    )
    with caplog.at_level(logging.INFO, logger="emotionvision"):
        train(cfg)
    with (run / "split.csv").open() as handle:
        assert {Path(row["path"]) for row in csv.DictReader(handle)} == used
    assert read_rows(run / "skipped.csv") == skipped
    assert f"{root / 'anger'}: 1 files in nested folders" in caplog.text
    assert f"Image too large skipped: {root / 'anger' / 'bomb.png'}" in caplog.text

    (best,) = (run / "checkpoints").glob("best-*.ckpt")
    report = tmp_path / "eval"
    eval_cfg = compose(
        config_name="eval",
        overrides=[
            f"paths.root_dir={tmp_path}",
            f"output_dir={report}",
            f"ckpt_path={best}",
            f"data.root={root}",
            cache,
            "trainer.accelerator=cpu",
            "+trainer.enable_progress_bar=false",
        ],
    )
    metrics = evaluate(eval_cfg)
    assert metrics["num_images"] == len(used)
    assert read_rows(report / "skipped.csv") == skipped

    predictions = Predictor(best, device="cpu").predict([root])
    errors = {p.path: p.error.split(":")[0] for p in predictions if p.error}
    assert {Path(p.path) for p in predictions if not p.error} == used
    assert errors == dict(skipped)  # every file training skips has its row, with the same reason


def test_a_folder_of_non_images_ends_in_one_line_naming_the_kept_skipped_csv(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    """`emotionvision-train data=folder data.root=<non-images>` (a traceback in issue 17): one line,
    and the skipped.csv it names is kept, though the run directory holds nothing else of use."""
    from emotionvision.cli.train import main

    root = tmp_path.resolve() / "files"
    for name in ("anger", "happy"):
        (root / name).mkdir(parents=True)
        (root / name / "photo.jpg").write_text("not an image\n")
        (root / name / "notes.txt").write_text("notes\n")
    run = tmp_path / "run"
    argv = ["emotionvision-train", "data=folder", f"data.root={root}", "data.image_size=32", "logger=csv"]
    monkeypatch.setattr("sys.argv", [*argv, f"paths.root_dir={tmp_path}", f"hydra.run.dir={run}"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        f"emotionvision-train: error: No readable images for classes ['anger', 'happy'] under {root} (the "
        f"files skipped and why: {run / 'skipped.csv'}): add images, or leave the classes out with "
        "data.classes.\n"
    )
    files = sorted(str(path) for path in root.rglob("*") if path.is_file())
    assert read_rows(run / "skipped.csv") == [(path, "not an image") for path in files]
