"""Stratified duplicate-aware splitting, duplicate grouping and the split manifest."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from emotionvision.data import EmotionDataModule
from emotionvision.data.grouping import conflicting_groups, duplicate_groups
from emotionvision.data.manifest import MANIFEST_COLUMNS, SPLITS, read_manifest, write_manifest
from emotionvision.data.splitting import check_stratifiable, stratified_group_split
from emotionvision.errors import UsageError

RATIOS = [0.7, 0.15, 0.15]


def grouped_labels(sizes_per_class: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and group ids for classes given as lists of group sizes (groups numbered in order)."""
    labels, groups = [], []
    group = 0
    for label, sizes in enumerate(sizes_per_class):
        for size in sizes:
            labels += [label] * size
            groups += [group] * size
            group += 1
    return np.array(labels), np.array(groups)


def split_counts(splits: np.ndarray, labels: np.ndarray, label: int) -> np.ndarray:
    return np.array([np.sum((labels == label) & (splits == name)) for name in SPLITS])


def singleton_classes(ratios: list[float]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Class sizes 4..60 (those where every non-zero share is at least half an image), one group per
    image."""
    sizes = [n for n in range(4, 61) if min(share * n for share in ratios if share > 0) >= 0.5]
    labels, groups = grouped_labels([[1] * n for n in sizes])
    return sizes, labels, groups


@pytest.mark.parametrize("ratios", [RATIOS, [0.8, 0.1, 0.1], [0.6, 0.2, 0.2], [0.85, 0.15, 0.0]])
def test_every_split_with_a_share_gets_images_of_every_class(ratios: list[float]) -> None:
    sizes, labels, groups = singleton_classes(ratios)
    splits = stratified_group_split(labels, groups, ratios, seed=0)
    for label, size in enumerate(sizes):
        counts = split_counts(splits, labels, label)
        assert counts.sum() == size
        assert np.all((counts > 0) == (np.asarray(ratios) > 0)), (size, counts)


@pytest.mark.parametrize(
    "ratios",
    [
        RATIOS,
        [0.8, 0.1, 0.1],
        [0.5, 0.25, 0.25],
        [0.85, 0.15, 0.0],
    ],
)
def test_singleton_classes_are_stratified_within_one_image(ratios: list[float]) -> None:
    sizes, labels, groups = singleton_classes(ratios)
    for seed in range(2):
        splits = stratified_group_split(labels, groups, ratios, seed)
        for label, size in enumerate(sizes):
            counts = split_counts(splits, labels, label)
            assert np.all(np.abs(counts - np.asarray(ratios) * size) <= 1 + 1e-9), (size, counts)


def test_duplicate_groups_stay_whole_and_classes_stay_stratified() -> None:
    rng = np.random.default_rng(0)
    sizes = [list(rng.integers(1, 4, n)) for n in (40, 25, 60)]
    labels, groups = grouped_labels(sizes)
    splits = stratified_group_split(labels, groups, RATIOS, seed=1)
    for group in np.unique(groups):
        assert len(set(splits[groups == group])) == 1, f"group {group} is split"
    for label in range(3):
        counts = split_counts(splits, labels, label)
        assert np.all(np.abs(counts - np.asarray(RATIOS) * counts.sum()) <= 3), counts  # largest group: 3


def test_mixed_label_group_goes_whole_with_its_majority() -> None:
    labels = np.array([0, 0, 1] + [0] * 20 + [1] * 20)
    groups = np.concatenate([[0, 0, 0], np.arange(1, 41)])
    splits = stratified_group_split(labels, groups, RATIOS, seed=0)
    assert len(set(splits[:3])) == 1


def test_split_is_deterministic_in_seed_and_changes_with_another_seed() -> None:
    labels, groups = grouped_labels([[1] * 30, [2] * 15, [1, 2, 3] * 8])
    first = stratified_group_split(labels, groups, RATIOS, seed=7)
    np.testing.assert_array_equal(first, stratified_group_split(labels, groups, RATIOS, seed=7))
    assert not np.array_equal(first, stratified_group_split(labels, groups, RATIOS, seed=8))


@pytest.mark.parametrize("ratios", [[0.8, 0.2, 0.0], [0.7, 0.0, 0.3]])
def test_zero_ratio_gets_nothing(ratios: list[float]) -> None:
    labels, groups = grouped_labels([[1] * 9, [1, 2] * 6, [1] * 4])
    splits = stratified_group_split(labels, groups, ratios, seed=0)
    empty = SPLITS[ratios.index(0.0)]
    assert empty not in set(splits)
    assert {name for name, share in zip(SPLITS, ratios, strict=True) if share > 0} == set(splits)


def test_check_stratifiable_names_the_class_and_counts(tmp_path: Path) -> None:
    names = ["anger", "happy", "sad"]
    labels, groups = grouped_labels([[1] * 10, [1] * 2, [1] * 10])
    with pytest.raises(ValueError, match=r"Class 'happy' .* has 2 images in 2 distinct"):
        check_stratifiable(labels, groups, RATIOS, names, tmp_path)
    labels, groups = grouped_labels([[1] * 10, [6], [1] * 10])  # six copies of one photo
    with pytest.raises(ValueError, match=r"Class 'happy' .* 6 images in 1 distinct"):
        check_stratifiable(labels, groups, RATIOS, names, tmp_path)
    labels, groups = grouped_labels([[1] * 10, [1] * 3, [1] * 10])  # 3 x 0.15 < half an image
    with pytest.raises(ValueError, match="Class 'happy'"):
        check_stratifiable(labels, groups, RATIOS, names, tmp_path)
    labels, groups = grouped_labels([[1] * 10, [1] * 4, [1] * 10])
    check_stratifiable(labels, groups, RATIOS, names, tmp_path)
    labels, groups = grouped_labels([[1] * 10, [1] * 2, [1] * 10])
    check_stratifiable(labels, groups, [0.5, 0.5, 0.0], names, tmp_path)  # two splits suffice


def flip(bits: np.ndarray, positions: range) -> np.ndarray:
    flipped = bits.copy()
    flipped[list(positions)] ^= True
    return flipped


def test_duplicate_groups_join_near_duplicates_transitively() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(256) < 0.5
    b = flip(a, range(0, 15))  # 15 bits from a
    c = flip(b, range(100, 115))  # 15 bits from b, 30 from a
    far = flip(a, range(0, 128))
    other = rng.random(256) < 0.5
    hashes = np.stack([far, a, other, c, b, a])
    expected = [0, 1, 2, 1, 1, 1]
    for chunk in (1, 2, 2048):
        np.testing.assert_array_equal(duplicate_groups(hashes, max_bits=20, chunk=chunk), expected)
    np.testing.assert_array_equal(duplicate_groups(hashes, max_bits=0), [0, 1, 2, 3, 4, 1])
    np.testing.assert_array_equal(duplicate_groups(np.stack([a, c]), max_bits=20), [0, 1])


def test_conflicting_groups() -> None:
    groups = np.array([0, 0, 1, 1, 2, 3, 3])
    labels = np.array([0, 1, 1, 1, 2, 2, 0])
    assert conflicting_groups(groups, labels) == [0, 3]
    assert conflicting_groups(np.array([0, 1]), np.array([0, 1])) == []


def test_pairs_within_one_subject_are_not_label_conflicts() -> None:
    """A subject's expressions may hash alike (CK+): only a near-duplicate pair of different labels and
    different subjects is a conflict."""
    groups = np.array([0, 0, 0, 1, 1, 2, 2])
    labels = np.array([0, 1, 1, 0, 1, 0, 1])
    subjects = np.array([5, 5, 6, 7, 7, 8, 9])
    # group 0: 0-1 (one subject, two labels) and 1-2 (two subjects, one label): no pair conflicts
    rows, cols = np.array([0, 1, 3, 5]), np.array([1, 2, 4, 6])
    pairs = np.concatenate([rows, cols]), np.concatenate([cols, rows])
    assert conflicting_groups(groups, labels, pairs) == [0, 1, 2]
    assert conflicting_groups(groups, labels, pairs, subjects) == [2]
    assert conflicting_groups(groups, labels, None, subjects) == [0, 2]  # any two members of a group


def test_flat_hashes_are_joined_only_where_the_pictures_agree() -> None:
    """Every flat image hashes to all zeros; its pairs are confirmed on the decoded pixels. Textured
    near-duplicates are still joined by the hash alone (a brightness change keeps the hash)."""
    rng = np.random.default_rng(0)
    textured = rng.random(256) < 0.5
    zeros = np.zeros(256, dtype=bool)
    hashes = np.stack([zeros, zeros, zeros, flip(zeros, range(5)), textured, textured])
    colours = [(200, 30, 30), (30, 30, 200), (200, 30, 30), (203, 30, 30), (0, 0, 0), (90, 90, 90)]
    pixels = [torch.tensor(colour, dtype=torch.uint8)[:, None, None].expand(3, 8, 8) for colour in colours]
    pixels[4] = pixels[5] = None  # textured: never looked at
    np.testing.assert_array_equal(duplicate_groups(hashes, 20), [0, 0, 0, 0, 1, 1])  # the hash alone
    np.testing.assert_array_equal(duplicate_groups(hashes, 20, pixels=pixels), [0, 1, 0, 0, 2, 2])


def test_manifest_round_trip(tmp_path: Path) -> None:
    rows = [("a/x.jpg", "anger", "train", 0), ("b/y, z.jpg", "happy", "test", 1)]
    path = tmp_path / "nested" / "split.csv"
    write_manifest(path, rows)
    assert path.read_text().splitlines()[0] == ",".join(MANIFEST_COLUMNS)
    assert read_manifest(path) == [
        {"path": "a/x.jpg", "label": "anger", "split": "train", "group": "0"},
        {"path": "b/y, z.jpg", "label": "happy", "split": "test", "group": "1"},
    ]


def test_bad_manifests_raise_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"missing\.csv"):
        read_manifest(tmp_path / "missing.csv")
    no_split = tmp_path / "no_split.csv"
    no_split.write_text("path,label,group\nx.jpg,anger,0\n")
    with pytest.raises(ValueError, match=r"no_split\.csv is not a split manifest.*\['split'\]"):
        read_manifest(no_split)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv is not a split manifest"):
        read_manifest(empty)
    bad_split = tmp_path / "bad_split.csv"
    write_manifest(bad_split, [("x.jpg", "anger", "train", 0), ("y.jpg", "anger", "validation", 1)])
    with pytest.raises(ValueError, match=r"bad_split\.csv: unknown split name 'validation'"):
        read_manifest(bad_split)


def membership(datamodule: EmotionDataModule) -> dict[str, set[tuple[str, str]]]:
    return {
        split: {(path, label) for path, label, name, _ in datamodule.manifest if name == split}
        for split in SPLITS
    }


def test_datamodule_manifest_and_split_file_reuse(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    root = make_tree(tmp_path / "images", {"anger": 12, "happy": 9, "sad": 14})
    for index in range(3):  # byte-identical copies across the anger folder
        shutil.copy(root / "anger" / "anger_000.png", root / "anger" / f"copy_{index}.png")
    manifest_path = tmp_path / "run" / "split.csv"
    common = {"image_size": 16, "cache_dir": cache_dir, "num_workers": 0}
    first = EmotionDataModule(root, split_seed=3, manifest_path=manifest_path, **common)
    first.setup()

    with manifest_path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    assert len(rows) == 1 + 12 + 3 + 9 + 14
    by_path = {row[0]: row for row in rows[1:]}
    copies = [by_path[str(root / "anger" / name)] for name in ("anger_000.png", "copy_0.png", "copy_1.png")]
    assert len({row[3] for row in copies}) == 1  # one duplicate group ...
    assert len({row[2] for row in copies}) == 1  # ... in one split
    assert all(row[1] == Path(row[0]).parent.name for row in rows[1:])

    reused = EmotionDataModule(root, split_seed=99, split_file=manifest_path, **common)
    assert reused.class_names == ["anger", "happy", "sad"]
    reused.setup()
    assert membership(reused) == membership(first)
    for split in SPLITS:
        assert reused.datasets[split].labels == first.datasets[split].labels

    reshuffled = EmotionDataModule(root, split_seed=99, **common)
    reshuffled.setup()
    assert membership(reshuffled) != membership(first)


def test_split_file_with_missing_images_names_them(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    root = make_tree(tmp_path / "images", {"anger": 6, "happy": 6})
    manifest = tmp_path / "split.csv"
    rows = [
        (str(root / "anger" / "gone.png"), "anger", "train", 0),
        (str(root / "happy" / "happy_000.png"), "happy", "train", 1),
    ]
    write_manifest(manifest, rows)
    datamodule = EmotionDataModule(root, split_file=manifest, image_size=16, cache_dir=cache_dir)
    with pytest.raises(UsageError, match=r"1 of the 2 images listed in .*split.csv are missing.*gone.png"):
        datamodule.setup()


def test_predefined_train_and_test_folders_are_honoured(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    root = tmp_path / "fer"
    make_tree(root / "train", {"angry": 20, "happy": 14}, seed=1)
    make_tree(root / "test", {"angry": 5, "happy": 4}, seed=2)
    datamodule = EmotionDataModule(
        root, image_size=16, cache_dir=cache_dir, num_workers=0, manifest_path=tmp_path / "split.csv"
    )
    assert datamodule.class_names == ["angry", "happy"]
    datamodule.setup()
    for path, label, split, _ in datamodule.manifest:
        folder = Path(path).relative_to(root).parts[0]
        assert split == "test" if folder == "test" else split in ("train", "val")
        assert Path(path).parent.name == label
    counts = {split: len(dataset) for split, dataset in datamodule.datasets.items()}
    assert counts["test"] == 9
    # val is carved from train with the val share: 0.15 / 0.85 of each class's 20 and 14 images
    val = [row for row in datamodule.manifest if row[2] == "val"]
    for label, count in (("angry", 20), ("happy", 14)):
        assert abs(sum(row[1] == label for row in val) - count * 0.15 / 0.85) <= 1
    assert counts["train"] + counts["val"] == 34
