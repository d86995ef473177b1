"""Data sources (emotionvision/data/sources.py): a manifest CSV as a data set (relative paths, labels
renamed, subject groups, preset splits), its mistakes, and leave-one-subject-out counted without
decoding, on generated subject trees."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from hydra.utils import instantiate

from emotionvision.data import EmotionDataModule
from emotionvision.data.images import SkipReport
from emotionvision.data.manifest import read_manifest
from emotionvision.data.sources import ManifestSource
from emotionvision.errors import UsageError

SUBJECT = r"^(S\d+)_"
LABELS = {"anger": "angry", "happy": "happy", "sad": "sad"}  # the manifest's names for the classes


def subject_manifest(root: Path, path: Path, split_of: dict[str, str]) -> Path:
    """A CSV of root's images: paths relative to the CSV's folder, labels as LABELS names them, the
    subject as group and the split `split_of` gives the subject."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "split"])
        for image in sorted(root.rglob("*.png")):
            subject = image.name.split("_")[0]
            label = LABELS[image.parent.name]
            writer.writerow([image.relative_to(path.parent), label, subject, split_of[subject]])
    return path


def module(root: Path, tmp_path: Path, **options) -> EmotionDataModule:
    common = {"image_size": 16, "cache_dir": tmp_path / "cache", "num_workers": 0}
    return EmotionDataModule(root, manifest_path=tmp_path / "run" / "split.csv", **common | options)


def test_manifest_source_presets_splits_and_keeps_subjects_whole(tmp_path: Path, make_subject_tree) -> None:
    root = make_subject_tree(tmp_path / "images", subjects=6)
    split_of = {f"S{i:03d}": "test" if i >= 4 else "train" for i in range(6)}
    csv_path = subject_manifest(root, tmp_path / "images.csv", split_of)
    data = module(csv_path, tmp_path, source=ManifestSource, class_map={"angry": "anger"})
    assert data.class_names == ["anger", "happy", "sad"] and data.root == csv_path.resolve()
    data.setup()
    rows = read_manifest(tmp_path / "run" / "split.csv")
    assert {Path(row["path"]) for row in rows} == set(root.rglob("*.png"))  # relative to the CSV
    assert all(row["label"] == Path(row["path"]).parent.name for row in rows)  # renamed by the map
    splits_of_subject: dict[str, set[str]] = {}
    for row in rows:
        splits_of_subject.setdefault(Path(row["path"]).name.split("_")[0], set()).add(row["split"])
    assert {subject: splits for subject, splits in splits_of_subject.items() if "test" in splits} == {
        "S004": {"test"},
        "S005": {"test"},
    }
    assert all(len(splits) == 1 for splits in splits_of_subject.values())  # val carved by subject
    assert {split for splits in splits_of_subject.values() for split in splits} == {"train", "val", "test"}


def test_data_manifest_config_serves_batches(tmp_path: Path, make_subject_tree, compose_train) -> None:
    root = make_subject_tree(tmp_path / "images", subjects=4)
    csv_path = subject_manifest(
        root, tmp_path / "images.csv", dict.fromkeys(("S000", "S001", "S002"), "train") | {"S003": "test"}
    )
    cfg = compose_train(
        [
            "data=manifest",
            f"data.root={csv_path}",
            "data.class_map={angry: anger}",
            "data.image_size=16",
            "data.num_workers=0",
            "data.batch_size=4",
            f"data.cache_dir={tmp_path / 'cache'}",
            f"paths.output_dir={tmp_path / 'run'}",
        ]
    )
    data = instantiate(cfg.data)
    data.setup()
    images, labels, _ = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 16, 16) and set(labels.tolist()) <= {0, 1, 2}
    assert {
        row["split"] for row in read_manifest(tmp_path / "run" / "split.csv") if "S003" in row["path"]
    } == {"test"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("file,label\na.png,x\n", r"is not a manifest: columns \['path'\] are missing"),
        ("path,label\na.png,x\nb.png,\n", r"images\.csv line 3: a row needs a path and a label"),
        ("path,label,group\na.png,x,S1\nb.png,y,\n", r"line 3: no group; give every row a group, or none"),
        ("path,label,split\na.png,x,train\nb.png,y,dev\n", r"unknown split name 'dev'"),
        ("path,label\na.png,x\na.png,y\n", r"lists .*a\.png more than once"),
        ("path,label\n", r"Manifest .*images\.csv lists no images"),
    ],
    ids=["column", "label", "group", "split", "twice", "empty"],
)
def test_manifest_mistakes_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "images.csv").write_text(content)
    with pytest.raises(UsageError, match=message):
        ManifestSource(tmp_path / "images.csv")


def test_manifest_with_missing_files_and_one_class(tmp_path: Path, make_tree) -> None:
    root = make_tree(tmp_path / "images", {"anger": 2})
    (tmp_path / "images.csv").write_text("path,label\nimages/anger/anger_000.png,anger\ngone.png,sad\n")
    source = ManifestSource(tmp_path / "images.csv")
    assert [sample.path for sample in source.samples(SkipReport(), ["anger"])] == [
        root / "anger/anger_000.png"
    ]
    with pytest.raises(
        UsageError, match=r"1 of the 2 images listed in .*images\.csv are missing, e\.g\. .*gone\.png"
    ):
        source.samples(SkipReport())
    (tmp_path / "one.csv").write_text("path,label\nimages/anger/anger_000.png,anger\n")
    with pytest.raises(UsageError, match=r"one\.csv has one class \(anger\): .* two or more classes"):
        ManifestSource(tmp_path / "one.csv").pick_classes(None)


def test_loso_counts_subjects_without_decoding(tmp_path: Path, make_subject_tree) -> None:
    root = make_subject_tree(tmp_path / "images", subjects=5, per_subject=1)
    data = module(root, tmp_path, group_by=SUBJECT, folds="loso", fold=0)
    assert data.fold_count() == 5
    assert module(root, tmp_path, group_by=SUBJECT, folds=3, fold=0).fold_count() == 3
    assert not (tmp_path / "cache").exists()  # nothing decoded for either count


def test_loso_leaves_out_copies_of_the_held_out_subject(tmp_path: Path, make_subject_tree) -> None:
    root = make_subject_tree(tmp_path / "images", subjects=4, per_subject=2)
    copy = root / "anger" / "S001_copy.png"
    shutil.copy(root / "anger" / "S000_0.png", copy)  # subject 0's image filed under subject 1 as well
    data = module(root, tmp_path, group_by=SUBJECT, folds="loso", fold=0)
    data.setup()
    test = {Path(path).name.split("_")[0] for path, _, split, _ in data.manifest if split == "test"}
    assert test == {"S000"}
    assert str(copy) not in {path for path, *_ in data.manifest}
    with (tmp_path / "run" / "skipped.csv").open() as handle:
        assert list(csv.reader(handle))[1:] == [[str(copy), "duplicates an image of the held-out subject"]]
    other = module(root, tmp_path, group_by=SUBJECT, folds="loso", fold=1)
    other.setup()
    assert str(copy) in {path for path, _, split, _ in other.manifest if split == "test"}
