"""The real six_emotions set (skipped where ../shared/datasets/six_emotions is absent).

A small subset is linked (never copied) into a temporary folder: every file of the chosen classes
that is not a plain RGB JPEG (WEBP named .jpg, PNG with alpha or palette, greyscale JPEG), one
cross-class duplicate pair with conflicting labels, and plain JPEGs up to PER_CLASS images.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from emotionvision.data import EmotionDataModule

pytestmark = pytest.mark.realdata
CLASSES = ["disgust", "fear", "happy", "sad"]
PER_CLASS = 12
# the same photo filed under fear/ and sad/ (the data set's README lists it)
CONFLICT = {"fear": "b746d80191e3e75971e02d2214a2499d4.jpg", "sad": "b746d80191e3e75971e02d2214a2499d3.jpg"}


def describe(path: Path) -> tuple[str, str]:
    with Image.open(path) as image:
        return image.format, image.mode


@pytest.fixture(scope="module")
def subset(six_emotions: Path, tmp_path_factory) -> dict:
    """Symlinked subset of the real set and what its unusual files are."""
    root = tmp_path_factory.mktemp("six_emotions_subset")
    unusual: dict[Path, tuple[str, str]] = {}
    for name in CLASSES:
        (root / name).mkdir()
        chosen = [six_emotions / name / CONFLICT[name]] if name in CONFLICT else []
        plain = []
        for path in sorted((six_emotions / name).iterdir()):
            kind = describe(path)
            if kind != ("JPEG", "RGB"):
                chosen.append(path)
                unusual[root / name / path.name] = kind
            elif len(plain) < PER_CLASS:
                plain.append(path)
        chosen += [path for path in plain if path not in chosen][: max(0, PER_CLASS - len(chosen))]
        for path in chosen:
            (root / name / path.name).symlink_to(path)
    return {"root": root, "unusual": unusual}


def test_subset_holds_the_data_sets_traps(subset: dict) -> None:
    kinds = set(subset["unusual"].values())
    assert {("WEBP", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("JPEG", "L")} <= kinds
    assert any(path.suffix == ".jpg" for path, kind in subset["unusual"].items() if kind[0] == "WEBP")


def test_real_files_load_split_and_group(subset: dict, tmp_path: Path, caplog) -> None:
    root = subset["root"]
    datamodule = EmotionDataModule(root, image_size=32, cache_dir=tmp_path / "cache", num_workers=0)
    assert datamodule.class_names == CLASSES
    with caplog.at_level(logging.INFO, logger="emotionvision"):
        datamodule.setup()
    files = sorted(root.rglob("*.*"))
    listed = {Path(path) for path, *_ in datamodule.manifest}
    assert listed == set(files)  # every real file decoded, the unusual ones included
    assert "Skipped files" not in caplog.text
    for dataset in datamodule.datasets.values():
        image, _, _ = dataset[0]
        assert image.shape == (3, 32, 32) and image.min() >= 0 and image.max() <= 1
    rows = {Path(path).relative_to(root).as_posix(): row for path, *row in datamodule.manifest}
    fear, sad = rows[f"fear/{CONFLICT['fear']}"], rows[f"sad/{CONFLICT['sad']}"]
    assert fear[2] == sad[2] and fear[1] == sad[1]  # one duplicate group, so one split
    assert "Duplicates with conflicting labels" in caplog.text
    assert CONFLICT["fear"] in caplog.text


def test_default_root_is_the_shared_data_set(six_emotions: Path, compose_train, monkeypatch) -> None:
    monkeypatch.setenv("EMOTIONVISION_SIX_EMOTIONS", str(six_emotions))
    from hydra.utils import instantiate

    cfg = compose_train(["data=six_emotions", "paths.output_dir=unused"])
    datamodule = instantiate(cfg.data)
    assert datamodule.root.resolve() == six_emotions.resolve()  # ../shared may be a symlink
    assert datamodule.class_names == ["anger", "disgust", "fear", "happy", "pain", "sad"]


def test_one_epoch_on_the_real_subset_writes_metrics(subset: dict, compose_train, tmp_path: Path) -> None:
    from emotionvision.cli.train import train

    output_dir = tmp_path / "run"
    cfg = compose_train(
        [
            "data=six_emotions",
            f"data.root={subset['root']}",
            "data.image_size=32",
            "data.num_workers=0",
            "data.batch_size=16",
            f"data.cache_dir={tmp_path / 'cache'}",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            f"paths.output_dir={output_dir}",
        ]
    )
    returned = train(cfg)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["test/acc"] == pytest.approx(returned["test/acc"])
    assert 0.0 <= metrics["test/macro_f1"] <= 1.0
    assert len(metrics["test/confusion_matrix"]) == len(CLASSES)
    rows = (output_dir / "split.csv").read_text().splitlines()[1:]
    assert len(rows) == len(list(subset["root"].rglob("*.*")))
    test_images = sum(row.split(",")[2] == "test" for row in rows)
    assert sum(map(sum, metrics["test/confusion_matrix"])) == test_images
