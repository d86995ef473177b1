"""Tests for the synthetic demo face set (emotionvision.data.demo)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import emotionvision.data.demo as demo
from emotionvision.data.demo import EMOTIONS, generate_demo_dataset
from emotionvision.data.images import SkipReport
from emotionvision.data.sources import DemoSource
from emotionvision.errors import UsageError

PER_CLASS = 50
SIZE = 64


def _files(root: Path) -> list[Path]:
    """All regular files under root, marker included, in sorted order."""
    return sorted(p for p in root.rglob("*") if p.is_file())


def _pixels(path: Path) -> np.ndarray:
    """An image file decoded to an RGB array."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A set of 50 images per class at 64 px, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("demo") / "set"
    return generate_demo_dataset(root, images_per_class=PER_CLASS, image_size=SIZE, seed=0)


def test_emotions_are_the_six_classes() -> None:
    assert EMOTIONS == ("anger", "disgust", "fear", "happy", "pain", "sad")


def test_layout_names_modes_and_sizes(demo_root: Path) -> None:
    assert sorted(p.name for p in demo_root.iterdir() if p.is_dir()) == list(EMOTIONS)
    assert (demo_root / ".complete").is_file()
    assert [p.name for p in demo_root.parent.iterdir()] == ["set"]  # no staging folder left
    formats: Counter[str] = Counter()
    for emotion in EMOTIONS:
        files = sorted((demo_root / emotion).iterdir())
        assert [p.name for p in files] == [f"{emotion}_{i:04d}.png" for i in range(PER_CLASS)]
        for path in files:
            with Image.open(path) as image:
                formats[image.format] += 1
                assert image.mode == "RGB"
                assert image.size == (SIZE, SIZE)
    assert set(formats) <= {"PNG", "JPEG"}
    assert formats["PNG"] >= 0.75 * sum(formats.values())


def test_same_seed_same_bytes_other_seed_other_pixels(tmp_path: Path) -> None:
    first = generate_demo_dataset(tmp_path / "a", images_per_class=4, image_size=32, seed=3)
    again = generate_demo_dataset(tmp_path / "b", images_per_class=4, image_size=32, seed=3)
    other = generate_demo_dataset(tmp_path / "c", images_per_class=4, image_size=32, seed=4)
    names = [p.relative_to(first) for p in _files(first) if p.suffix == ".png"]
    assert len(names) == 6 * 4
    assert [p.relative_to(again) for p in _files(again) if p.suffix == ".png"] == names
    for name in names:
        assert (first / name).read_bytes() == (again / name).read_bytes()
        assert not np.array_equal(_pixels(first / name), _pixels(other / name))


def test_an_image_does_not_depend_on_the_set_size(tmp_path: Path) -> None:
    small = generate_demo_dataset(tmp_path / "small", images_per_class=2, image_size=32)
    large = generate_demo_dataset(tmp_path / "large", images_per_class=3, image_size=32)
    for path in _files(small):
        if path.suffix == ".png":
            assert path.read_bytes() == (large / path.relative_to(small)).read_bytes()


def test_second_call_rewrites_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = generate_demo_dataset(tmp_path / "set", images_per_class=3, image_size=32)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in _files(root)}
    assert generate_demo_dataset(root, images_per_class=3, image_size=32) == root
    with caplog.at_level(logging.WARNING, logger=demo.__name__):
        assert generate_demo_dataset(str(root), images_per_class=5, image_size=48) == root
    assert "other settings" in caplog.text
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in _files(root)} == before


def test_fills_an_existing_empty_folder(tmp_path: Path) -> None:
    root = tmp_path / "set"
    root.mkdir()
    generate_demo_dataset(root, images_per_class=1, image_size=32)
    assert len([p for p in _files(root) if p.suffix == ".png"]) == 6


def test_refuses_a_folder_holding_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        generate_demo_dataset(tmp_path, images_per_class=1, image_size=32)
    assert _files(tmp_path) == [tmp_path / "notes.txt"]


def test_interrupted_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    render = demo.render_face
    calls = []

    def fail_on_the_fifth(emotion: str, image_size: int, *generators: np.random.Generator) -> Image.Image:
        calls.append(emotion)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return render(emotion, image_size, *generators)

    monkeypatch.setattr(demo, "render_face", fail_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        generate_demo_dataset(tmp_path / "set", images_per_class=3, image_size=32)
    assert list(tmp_path.iterdir()) == []


def _standardised_thumbnails(root: Path, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Grey side x side thumbnails, each scaled to zero mean and unit variance, with labels."""
    rows, labels = [], []
    for label, emotion in enumerate(EMOTIONS):
        for path in sorted((root / emotion).iterdir()):
            with Image.open(path) as image:
                thumb = image.convert("L").resize((side, side), Image.Resampling.BOX)
            row = np.asarray(thumb, dtype=np.float64).ravel()
            rows.append((row - row.mean()) / (row.std() + 1e-6))
            labels.append(label)
    return np.stack(rows), np.asarray(labels)


def _softmax_regression(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, steps: int = 1000
) -> np.ndarray:
    """Multinomial logistic regression by full-batch gradient descent; predicted test labels."""
    mean, std = x_train.mean(0), x_train.std(0) + 1e-3
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    targets = np.eye(len(EMOTIONS))[y_train]
    weights = np.zeros((x_train.shape[1], len(EMOTIONS)))
    bias = np.zeros(len(EMOTIONS))
    for _ in range(steps):
        logits = x_train @ weights + bias
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        grad = (probs - targets) / len(x_train)
        weights -= 0.5 * (x_train.T @ grad + 1e-3 * weights)
        bias -= 0.5 * grad.sum(0)
    return (x_test @ weights + bias).argmax(1)


def test_classes_are_learnable_from_pixels(demo_root: Path) -> None:
    # Logistic regression on 12x12 grey thumbnails, trained on even and tested on odd indices,
    # reached 0.55-0.65 over seeds 0-5 (chance: 1/6); identical faces would stay near 0.17.
    x, y = _standardised_thumbnails(demo_root, side=12)
    train = np.arange(len(y)) % 2 == 0
    predicted = _softmax_regression(x[train], y[train], x[~train])
    accuracy = float((predicted == y[~train]).mean())
    assert accuracy > 0.4, f"accuracy {accuracy:.3f} on held-out demo images"


def test_subjects_name_people_drawn_in_every_class(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "set", images_per_class=6, image_size=32, subjects=3)
    people = {
        path.parent.name: sorted({path.name[:3] for path in path.parent.glob("*.png")})
        for path in root.rglob("*.png")
    }
    assert people == {emotion: ["S00", "S01", "S02"] for emotion in EMOTIONS}
    plain = generate_demo_dataset(tmp_path / "plain", images_per_class=6, image_size=32)
    assert (plain / "anger/anger_0004.png").read_bytes() != (root / "anger/S01_anger_0004.png").read_bytes()


def test_demo_source_keeps_a_set_and_refuses_other_images(tmp_path: Path) -> None:
    root = generate_demo_dataset(tmp_path / "set", images_per_class=2, image_size=32, subjects=2)
    source = DemoSource(root, subjects=2)  # a finished set is kept (other settings: a warning)
    assert source.class_names() == list(EMOTIONS)
    assert len(source.samples(SkipReport())) == 6 * 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"holds files but no demo set.*use data=folder data.root="):
        DemoSource(tmp_path / "mine")
