"""Face crops as preprocessing: cached with the images, recorded in split.csv and the checkpoint,
applied again by evaluation and prediction."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from emotionvision.cli.train import train
from emotionvision.data import EmotionDataModule, faces
from emotionvision.data.cache import CACHE_VERSION, DecodeCache
from emotionvision.data.faces import FaceCrop
from emotionvision.data.images import SkipReport
from emotionvision.inference import Predictor

pytest.importorskip("facenet_pytorch", reason='needs the faces extra: pip install "emotionvision[faces]"')
pytestmark = pytest.mark.realdata  # every test crops faces of six_emotions photos
FACE = {"detector": "mtcnn", "margin": 0.2, "grey": True, "no_face": "whole"}


@pytest.fixture(scope="module")
def photos(six_emotions: Path, tmp_path_factory, make_tree) -> Path:
    """8 real photos of each of two classes, plus 4 generated noise images without a face in each."""
    root = tmp_path_factory.mktemp("faces")
    make_tree(root, {"happy": 4, "sad": 4}, size=64)
    for name in ("happy", "sad"):
        for path in sorted((six_emotions / name).iterdir())[:8]:
            shutil.copy(path, root / name)
    return root


def manifest_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_face_crops_are_cached_counted_and_recorded(photos: Path, tmp_path: Path, caplog) -> None:
    module = EmotionDataModule(
        photos, image_size=48, cache_dir=tmp_path / "cache", manifest_path=tmp_path / "run/split.csv",
        face_crop=FACE, split_ratios=[0.5, 0.25, 0.25], num_workers=0,
    )  # fmt: skip
    with caplog.at_level("INFO", logger="emotionvision"):
        module.setup()
    rows = manifest_rows(tmp_path / "run/split.csv")
    assert len(rows) == 24  # nothing dropped: images without a face are used whole
    noise = [row for row in rows if Path(row["path"]).name.startswith(("happy_", "sad_"))]
    assert len(noise) == 8 and all(row["face_box"] == "" for row in noise)
    photo_boxes = [row["face_box"] for row in rows if row not in noise]
    assert sum(box != "" for box in photo_boxes) >= 12  # MTCNN finds most faces
    assert "Face found (mtcnn detector), per class: happy" in caplog.text
    assert (tmp_path / "run/faces.png").is_file()
    crop = FaceCrop(**FACE)
    folders = [p.name for p in (tmp_path / "cache").iterdir()]
    assert folders == [f"v{CACHE_VERSION}-size48-face{crop.key()}"]  # the settings are part of the cache key
    assert FaceCrop(**(FACE | {"margin": 0.4})).key() != crop.key()
    pixels = module.datasets["train"].images[0].pixels
    assert torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[1], pixels[2])  # grey


def test_no_face_skip_leaves_them_out_and_counts_them(photos: Path, tmp_path: Path) -> None:
    skip = FaceCrop(**(FACE | {"no_face": "skip"}))
    module = EmotionDataModule(
        photos, image_size=48, cache_dir=tmp_path / "cache", face_crop=skip.__dict__,
        split_ratios=[0.5, 0.25, 0.25], num_workers=0,
    )  # fmt: skip
    module.setup()
    kept = {Path(row[0]).name for row in module.manifest}
    assert not any(name.startswith(("happy_", "sad_")) for name in kept)  # the noise images: no face
    assert 12 <= len(kept) <= 16


def test_prediction_crops_the_face_as_training_did(photos: Path, tmp_path: Path, compose_train) -> None:
    cfg = compose_train(
        [
            "data=folder", f"data.root={photos}", "preprocess=face", "data.image_size=48",
            "data.split_ratios=[0.5,0.25,0.25]", "data.num_workers=0", "data.batch_size=8",
            "trainer.max_epochs=1", "logger=csv", f"paths.output_dir={tmp_path / 'run'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ]
    )  # fmt: skip
    train(cfg)
    checkpoint = next((tmp_path / "run/checkpoints").glob("best-*.ckpt"))
    predictor = Predictor(checkpoint, device="cpu")
    assert predictor.face_crop == FaceCrop(**FACE)
    photo = sorted((photos / "happy").glob("*.jpg"))[0]
    _, (cached,) = DecodeCache(tmp_path / "cache", 48, FaceCrop(**FACE)).get_many([photo], SkipReport())
    assert torch.equal(predictor.decode(photo), cached.pixels)  # the same crop, grey and size
    assert (tmp_path / "run/faces.png").is_file()


def test_another_size_crops_the_faces_found_before(photos: Path, tmp_path: Path, monkeypatch, caplog) -> None:
    crop, paths = FaceCrop(**FACE), sorted(path for path in photos.rglob("*") if path.is_file())[::3]
    DecodeCache(tmp_path / "cache", 48, crop).get_many(paths, SkipReport())
    _, detected = DecodeCache(tmp_path / "fresh", 64, crop).get_many(paths, SkipReport())

    def no_detector(name: str) -> None:
        raise AssertionError(f"the {name} detector ran again")

    monkeypatch.setattr(faces, "_shared_detector", no_detector)
    with caplog.at_level("INFO", logger="emotionvision"):
        _, reused = DecodeCache(tmp_path / "cache", 64, crop).get_many(paths, SkipReport())
    assert "Their faces found before, at another size: 8" in caplog.text
    assert [image.face_box for image in reused] == [image.face_box for image in detected]
    assert any(image.face_box is None for image in reused) and any(image.face_box for image in reused)
    assert all(torch.equal(a.pixels, b.pixels) for a, b in zip(reused, detected, strict=True))
    wider = FaceCrop(**(FACE | {"margin": 0.3}))
    with pytest.raises(AssertionError, match="ran again"):  # other crop settings: detected anew
        DecodeCache(tmp_path / "cache", 64, wider).get_many(paths, SkipReport())
