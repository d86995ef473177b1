"""Hostile data settings (issue 16, items 3 and 8): each refused in one line naming `data.<key>`, by
the data module's constructor, before the images are listed or decoded; and the near-duplicate warning
that misfired on flat images and on one subject's expressions (item 11)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotionvision.data import EmotionDataModule
from emotionvision.errors import UsageError

HOSTILE = [
    ("batch_size", -8, "data.batch_size=-8: give 1 or more images per batch"),
    ("batch_size", 0, "data.batch_size=0: give 1 or more images per batch"),
    ("split_ratios", [1.0, 0, 0], "data.split_ratios=[1.0, 0, 0]: the val share must be above 0"),
    ("split_ratios", [0, 0.5, 0.5], "data.split_ratios=[0, 0.5, 0.5]: the train share must be above 0"),
    ("split_ratios", [0.9, 0.2, 0.1], "data.split_ratios=[0.9, 0.2, 0.1] sums to 1.2, not 1"),
    ("split_ratios", [-0.5, 1.0, 0.5], "data.split_ratios=[-0.5, 1.0, 0.5]: a share cannot be negative"),
    ("split_ratios", [0.8, 0.2], "data.split_ratios=[0.8, 0.2]: give three fractions"),
    ("split_ratios", [0.7, "a", 0.15], "data.split_ratios=[0.7, 'a', 0.15]: give three fractions"),
    ("max_image_pixels", -1, "data.max_image_pixels=-1: give a pixel count of 1 or more"),
    ("split_seed", -1, "data.split_seed=-1: give a seed from 0 to 4294967295"),
    ("split_seed", 2**32, "data.split_seed=4294967296: give a seed from 0"),
    ("near_duplicate_bits", 300, "data.near_duplicate_bits=300: give 0 to 127 bits"),
    ("near_duplicate_bits", -1, "data.near_duplicate_bits=-1: give 0 to 127 bits"),
    ("image_size", 0, "data.image_size=0: give a size in pixels of 1 or more"),
    ("num_workers", -2, "data.num_workers=-2: give 0 or more loader processes"),
    ("batch_size", 8.5, "data.batch_size=8.5: give 1 or more images per batch"),
]


def unlisted_source(root, class_map):
    raise AssertionError("the data were listed before the settings were checked")


@pytest.mark.parametrize(("key", "value", "message"), HOSTILE, ids=[f"{k}={v}" for k, v, _ in HOSTILE])
def test_hostile_settings_are_refused_before_the_data_are_read(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(UsageError) as raised:
        EmotionDataModule(tmp_path / "nowhere", cache_dir=cache, source=unlisted_source, **{key: value})
    line = str(raised.value)
    assert line.startswith(message) and "\n" not in line, line
    assert not cache.exists()


@pytest.mark.parametrize(
    "ratios", [[0.7, 0.15, 0.15], [0.7, 0.2, 0.1], [0.85, 0.15, 0.0], (0.6, 0.2, 0.2), [1, 1e-9, 0]]
)
def test_ratios_that_sum_to_one_are_kept(ratios: list[float]) -> None:
    from emotionvision.data.settings import check_split_ratios

    assert check_split_ratios(ratios) == tuple(float(r) for r in ratios)  # not rescaled


def test_usual_values_pass(tmp_path: Path, make_tree) -> None:
    root = make_tree(tmp_path / "images", {"anger": 2, "happy": 2})
    for options in (
        {"near_duplicate_bits": None, "max_image_pixels": None, "split_seed": 0, "num_workers": None},
        {"near_duplicate_bits": 0, "max_image_pixels": 1, "split_seed": 2**32 - 1, "batch_size": 1},
    ):
        module = EmotionDataModule(root, cache_dir=tmp_path / "cache", **options)
        assert module.class_names == ["anger", "happy"]


@pytest.fixture
def train_command(tmp_path: Path, monkeypatch, make_tree, quick_run_overrides):
    """`emotionvision-train data=folder data.root=<tree> ...` run in this process (a console-script
    process costs 10-25 s here): returns its exit status, stderr and the run directories it left."""
    from emotionvision.cli import train

    tree = make_tree(tmp_path / "three", dict.fromkeys(["anger", "happy", "sad"], 4))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMOTIONVISION_ROOT", raising=False)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)

    def _run(capsys, *args: str) -> tuple[object, str, list[Path]]:
        argv = ["emotionvision-train", *quick_run_overrides, "data=folder", f"data.root={tree}", *args]
        monkeypatch.setattr(sys, "argv", argv)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            train.main()
        runs = tmp_path / "logs" / "train"
        return exited.value.code, capsys.readouterr().err, sorted(runs.rglob("split.csv"))

    return _run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data.batch_size=-8"], "data.batch_size=-8: give 1 or more images per batch (32 is the default)."),
        (
            ["data.split_ratios=[0.9,0.2,0.1]"],
            "data.split_ratios=[0.9, 0.2, 0.1] sums to 1.2, not 1: give train, val and test fractions that "
            "sum to 1 (e.g. [0.7, 0.15, 0.15]); they are not rescaled.",
        ),
        (["images.max_pixels=-1"], "data.max_image_pixels=-1: give a pixel count of 1 or more"),
    ],
    ids=["batch_size", "split_ratios", "max_pixels"],
)
def test_the_command_line_ends_in_one_line(train_command, capsys, args: list[str], message: str) -> None:
    status, stderr, manifests = train_command(capsys, *args)
    assert status == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert stderr.splitlines()[-1:] == [line for line in stderr.splitlines() if "error:" in line]
    assert stderr.splitlines()[-1].startswith(f"emotionvision-train: error: {message}"), stderr[-3000:]
    assert manifests == []  # refused before the split (and so before any decode)


def flat(colour: tuple[int, int, int], size: tuple[int, int]) -> Image.Image:
    return Image.new("RGB", size, colour)


def test_flat_images_of_different_colours_are_not_duplicates(tmp_path: Path, make_tree, caplog) -> None:
    """A flat GIF, a 1x1 PNG and a strip: the difference hash of each is all zeros (nothing gets
    brighter to the right), but they are different pictures; two copies of one flat frame still are
    duplicates."""
    root = make_tree(tmp_path / "images", dict.fromkeys(["anger", "happy", "sad"], 6))
    flat((200, 30, 30), (1, 1)).save(root / "anger" / "one_pixel.png")
    flat((30, 30, 200), (64, 64)).save(root / "happy" / "blank.gif")
    flat((128, 128, 128), (300, 1)).save(root / "sad" / "strip.png")
    flat((128, 128, 128), (40, 40)).save(root / "happy" / "grey_frame.png")  # the strip's colour
    module = EmotionDataModule(root, image_size=16, cache_dir=tmp_path / "cache", num_workers=0)
    with caplog.at_level(logging.INFO, logger="emotionvision"):
        module.setup()
    group = {Path(path).name: row[2] for path, *row in module.manifest}
    assert len({group["one_pixel.png"], group["blank.gif"], group["strip.png"]}) == 3
    assert group["strip.png"] == group["grey_frame.png"]  # the same grey: a real conflict
    conflicts = [r.getMessage() for r in caplog.records if "conflicting labels" in r.getMessage()]
    assert len(conflicts) == 1 and "strip.png" in conflicts[0] and "grey_frame.png" in conflicts[0]
    assert "one_pixel" not in conflicts[0] and "blank.gif" not in conflicts[0]


def subject_image(subject: int, label: int) -> Image.Image:
    """Subject `subject`'s face in class `label`: the subject's own noise with a class tint, so one
    subject's expressions hash alike (as CK+'s posers do) while other subjects differ."""
    pixels = np.random.default_rng(subject).uniform(0, 150, (24, 24, 3))
    pixels[..., label] += 60
    return Image.fromarray(pixels.astype(np.uint8), "RGB")


def test_one_subjects_expressions_are_not_label_conflicts(tmp_path: Path, caplog) -> None:
    root = tmp_path / "images"
    for label, name in enumerate(("anger", "happy", "sad")):
        (root / name).mkdir(parents=True)
        for subject in range(6):
            subject_image(subject, label).save(root / name / f"S{subject:03d}_{name}.png")
    subject_image(1, 0).save(root / "happy" / "S002_copied.png")  # S001's anger, labelled happy by S002
    common = {"image_size": 16, "cache_dir": tmp_path / "cache", "num_workers": 0}

    def conflicts(**options) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="emotionvision"):
            EmotionDataModule(root, **common, **options).setup()
        return [r.getMessage() for r in caplog.records if "conflicting labels" in r.getMessage()]

    # without subjects every poser's expressions look like conflicts: 5 named, then the count
    assert conflicts()[-1] == "6 duplicate groups with conflicting labels in all (listed at DEBUG)."
    (line,) = conflicts(group_by=r"^(S\d+)_")  # with subjects, only the pair across subjects
    assert "S002_copied.png (happy)" in line and "S001_anger.png (anger)" in line
