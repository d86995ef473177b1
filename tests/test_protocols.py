"""Subject-independent splits: data.group_by (a file-name pattern or a table) merged with the
duplicate groups, the split summary and its ratio warning."""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from emotionvision.data import EmotionDataModule
from emotionvision.data.grouping import merge_groups


def split_of_subjects(module: EmotionDataModule) -> dict[str, set[str]]:
    splits = defaultdict(set)
    for path, _, split, *_ in module.manifest:
        splits[Path(path).name.split("_")[0]].add(split)
    return splits


def test_group_by_keeps_every_subject_in_one_split(tmp_path: Path, make_subject_tree, caplog) -> None:
    root = make_subject_tree(tmp_path / "images")
    common = {"image_size": 16, "cache_dir": tmp_path / "cache", "num_workers": 0}
    plain = EmotionDataModule(root, **common)
    plain.setup()
    assert any(len(splits) > 1 for splits in split_of_subjects(plain).values())  # the leak group_by fixes
    grouped = EmotionDataModule(root, group_by=r"^(S\d+)_", **common)
    with caplog.at_level(logging.INFO, logger="emotionvision"):
        grouped.setup()
    assert all(len(splits) == 1 for splits in split_of_subjects(grouped).values())
    assert {split for splits in split_of_subjects(grouped).values() for split in splits} == {
        "train",
        "val",
        "test",
    }
    assert "train: " in caplog.text and " groups (anger " in caplog.text  # groups and classes per split


def test_group_by_table_and_bad_patterns(tmp_path: Path, make_subject_tree) -> None:
    root = make_subject_tree(tmp_path / "images")
    table = tmp_path / "subjects.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "group"])
        for path in sorted(root.rglob("*.png")):
            writer.writerow([path, path.name.split("_")[0]])
    module = EmotionDataModule(root, image_size=16, cache_dir=tmp_path / "cache", group_by=str(table))
    module.setup()
    assert all(len(splits) == 1 for splits in split_of_subjects(module).values())
    bad = EmotionDataModule(root, image_size=16, cache_dir=tmp_path / "cache", group_by=r"^(P\d+)_")
    with pytest.raises(ValueError, match=r"data.group_by='\^\(P\\d\+\)_' does not name a subject"):
        bad.setup()


def test_the_ratio_warning_fires_when_groups_are_too_large(tmp_path: Path, make_subject_tree, caplog) -> None:
    root = make_subject_tree(tmp_path / "images", subjects=4, per_subject=5)  # 4 big groups
    module = EmotionDataModule(root, image_size=16, cache_dir=tmp_path / "cache", group_by=r"^(S\d+)_")
    with caplog.at_level(logging.WARNING, logger="emotionvision"):
        module.setup()
    assert "off its target" in caplog.text


def test_near_duplicate_grouping_can_be_turned_off(tmp_path: Path, make_subject_tree, caplog) -> None:
    root = make_subject_tree(tmp_path / "images")
    with caplog.at_level(logging.INFO, logger="emotionvision"):
        EmotionDataModule(root, image_size=16, cache_dir=tmp_path / "cache", near_duplicate_bits=None).setup()
    assert "Duplicate groups" not in caplog.text


def test_merge_groups_joins_transitively() -> None:
    duplicates = np.array([0, 0, 1, 2, 3])
    subjects = np.array([5, 6, 6, 7, 7])
    assert merge_groups(duplicates, subjects).tolist() == [0, 0, 0, 1, 1]
