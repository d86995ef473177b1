"""EmotionDataModule on generated trees: classes, errors, batches, class weights, decode cache."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emotionvision.data import EmotionDataModule
from emotionvision.data.cache import DecodeCache, content_key
from emotionvision.data.dataset import UnrepeatedDistributedSampler
from emotionvision.data.images import SkipReport
from emotionvision.errors import UsageError


def datamodule(root: Path, cache_dir: Path, **kwargs) -> EmotionDataModule:
    options = {"image_size": 16, "cache_dir": cache_dir, "num_workers": 0, "batch_size": 4} | kwargs
    return EmotionDataModule(root, **options)


def shards(cache_dir: Path, size: int = 16) -> dict[Path, int]:
    folder = DecodeCache(cache_dir, size).folder
    return {path: path.stat().st_mtime_ns for path in folder.glob("shard-*.pt")}


def test_class_names_are_sorted_folders(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    root = make_tree(tmp_path / "images", {"sad": 5, "anger": 5, "happy": 5})
    (root / ".git").mkdir()  # hidden folders are not classes
    (root / "notes.txt").write_text("loose files are not classes")
    assert datamodule(root, cache_dir).class_names == ["anger", "happy", "sad"]


def test_classes_pick_and_order_a_subset(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    root = make_tree(tmp_path / "images", {"anger": 8, "happy": 8, "sad": 8})
    module = datamodule(root, cache_dir, classes=["sad", "anger"])
    assert module.class_names == ["sad", "anger"]
    module.setup()
    labels = {Path(path).parent.name: label for path, label, _, _ in module.manifest}
    assert labels == {"sad": "sad", "anger": "anger"}
    assert len(module.manifest) == 16  # happy/ is left out
    assert set(module.datasets["train"].labels) == {0, 1}
    with pytest.raises(ValueError, match=r"\['fear'\].*found \['anger', 'happy', 'sad'\]"):
        datamodule(root, cache_dir, classes=["fear", "sad"])


def test_labels_follow_the_classes_order(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    """With the tint in make_tree, class 'anger' (label 0 when sorted) is the reddest: check the
    label of each image against its pixels under a reordered `classes`."""
    root = make_tree(tmp_path / "images", {"anger": 6, "happy": 6})
    module = datamodule(root, cache_dir, classes=["happy", "anger"], split_ratios=[0.5, 0.25, 0.25])
    module.setup()
    for split, dataset in module.datasets.items():
        for index in range(len(dataset)):
            image, label, _ = dataset[index]
            red_minus_green = float(image[0].mean() - image[1].mean())
            assert (red_minus_green > 0) == (module.class_names[label] == "anger"), split


def test_missing_root_names_the_path(tmp_path: Path, cache_dir: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(UsageError, match=re.escape(str(missing))):
        datamodule(missing, cache_dir)


def test_root_without_class_folders(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match="has no class sub-folders"):
        datamodule(tmp_path / "flat", cache_dir)


def test_empty_class_folder_names_it(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    root = make_tree(tmp_path / "images", {"anger": 6, "happy": 6})
    (root / "sad").mkdir()
    (root / "sad" / ".DS_Store").write_bytes(b"hidden files do not count")
    module = datamodule(root, cache_dir)
    with pytest.raises(ValueError, match=re.escape(f"Class folder {root / 'sad'} holds no files")):
        module.setup()


def test_class_with_only_unreadable_files(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    root = make_tree(tmp_path / "images", {"anger": 6, "happy": 6})
    (root / "sad").mkdir()
    (root / "sad" / "broken.jpg").write_text("not an image")
    with pytest.raises(ValueError, match=r"No readable images for classes \['sad'\]"):
        datamodule(root, cache_dir).setup()


def test_too_small_class_reports_counts(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    root = make_tree(tmp_path / "images", {"anger": 10, "happy": 2, "sad": 10})
    with pytest.raises(ValueError, match=r"Class 'happy' .* has 2 images in 2 distinct"):
        datamodule(root, cache_dir).setup()


def test_batches_are_float_images_in_unit_range(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    root = make_tree(tmp_path / "images", {"anger": 10, "happy": 10, "sad": 10})
    module = datamodule(root, cache_dir, image_size=20, batch_size=4)
    module.setup()
    assert sum(len(d) for d in module.datasets.values()) == 30
    for loader in (module.train_dataloader(), module.val_dataloader(), module.test_dataloader()):
        images, labels, _ = next(iter(loader))
        assert images.shape == (min(4, len(loader.dataset)), 3, 20, 20)
        assert images.dtype == torch.float32
        assert images.min() >= 0.0 and images.max() <= 1.0
        assert images.max() > 0.5  # scaled from uint8, not left at 0..255 nor squashed to 0
        assert labels.dtype == torch.int64 and set(labels.tolist()) <= {0, 1, 2}


def test_augmentation_runs_on_train_only(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    from torchvision.transforms import v2

    root = make_tree(tmp_path / "images", {"anger": 8, "happy": 8})
    flip = v2.RandomHorizontalFlip(p=1.0)
    module = datamodule(root, cache_dir, augmentation=flip, split_ratios=[0.5, 0.25, 0.25])
    module.setup()
    for split, dataset in module.datasets.items():
        image, _, _ = dataset[0]
        stored = dataset.images[0].pixels.float() / 255
        expected = stored.flip(-1) if split == "train" else stored
        torch.testing.assert_close(image, expected)


def test_class_weights_are_inverse_frequency(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    root = make_tree(tmp_path / "images", {"anger": 30, "happy": 10, "sad": 20})
    module = datamodule(root, cache_dir)
    module.setup()
    counts = np.bincount(module.datasets["train"].labels, minlength=3)
    assert counts[0] > counts[2] > counts[1]
    expected = (1 / counts) / (1 / counts).mean()
    weights = module.class_weights
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float32))
    assert weights.mean().item() == pytest.approx(1.0)


def test_decode_cache_is_reused_and_refreshed_on_change(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    root = make_tree(tmp_path / "images", {"anger": 8, "happy": 8})
    first = datamodule(root, cache_dir)
    first.prepare_data()
    after_prepare = shards(cache_dir)
    assert len(after_prepare) == 1
    first.setup()
    assert shards(cache_dir) == after_prepare  # setup found everything prepare_data decoded

    second = datamodule(root, cache_dir)
    second.prepare_data()
    second.setup()
    assert shards(cache_dir) == after_prepare  # nothing decoded again, no shard rewritten
    assert [row[:3] for row in second.manifest] == [row[:3] for row in first.manifest]

    changed = root / "happy" / "happy_003.png"
    Image.new("RGB", (24, 24), (0, 255, 0)).save(changed)
    third = datamodule(root, cache_dir)
    third.setup()
    new_shards = set(shards(cache_dir)) - set(after_prepare)
    assert len(new_shards) == 1
    assert torch.load(new_shards.pop(), weights_only=True)["keys"] == [content_key(changed)]
    position = next(i for i, row in enumerate(third.manifest) if row[0] == str(changed))
    split = third.manifest[position][2]
    index_in_split = [row[0] for row in third.manifest if row[2] == split].index(str(changed))
    pixels = third.datasets[split].images[index_in_split].pixels
    assert (pixels[1] == 255).all() and (pixels[0] == 0).all()  # the new green content

    other_size = datamodule(root, cache_dir, image_size=12)
    other_size.setup()
    assert len(shards(cache_dir, 12)) == 1  # each size has its own cache
    assert other_size.datasets["train"].images[0].pixels.shape == (3, 12, 12)


def test_train_label_shuffle_permutes_train_labels_only(tmp_path: Path, make_tree, cache_dir: Path) -> None:
    root = make_tree(tmp_path / "images", {"anger": 12, "happy": 12, "sad": 12})
    plain = datamodule(root, cache_dir)
    plain.setup()
    shuffled = datamodule(root, cache_dir, train_label_shuffle_seed=0)
    shuffled.setup()
    assert shuffled.manifest == plain.manifest  # the split and the manifest keep the true labels
    train, train_plain = shuffled.datasets["train"], plain.datasets["train"]
    assert train.labels != train_plain.labels
    assert sorted(train.labels) == sorted(train_plain.labels)
    for image, image_plain in zip(train.images, train_plain.images, strict=True):  # images keep order
        assert torch.equal(image.pixels, image_plain.pixels)
    for split in ("val", "test"):
        assert shuffled.datasets[split].labels == plain.datasets[split].labels
    again = datamodule(root, cache_dir, train_label_shuffle_seed=0)
    again.setup()
    assert again.datasets["train"].labels == train.labels


def test_duplicate_hash_does_not_depend_on_image_size(tmp_path: Path) -> None:
    """JPEGs decode at a size-dependent scale; the hash (and so the split) must not follow it."""
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.jpg"
    smooth = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8).repeat(64, axis=0).repeat(64, axis=1)
    Image.fromarray(smooth).save(photo, quality=90)
    hashes = []
    for size in (32, 299):
        _, (decoded,) = DecodeCache(tmp_path / "cache", size).get_many([photo], SkipReport())
        hashes.append(decoded.hash_bits)
    assert torch.equal(hashes[0], hashes[1])


def test_unrepeated_sampler_serves_every_image_once() -> None:
    """The evaluation sampler under DDP (Lightning's, not public API): 3 ranks share 10 images, each
    served once (torch's DistributedSampler would pad with 2 repeats, or drop 1 with drop_last)."""
    served = [
        index
        for rank in range(3)
        for index in UnrepeatedDistributedSampler(list(range(10)), num_replicas=3, rank=rank, shuffle=False)
    ]
    assert sorted(served) == list(range(10))
