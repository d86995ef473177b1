"""The decode cache trusts no shard it has not checked: a damaged one is named, removed and rebuilt."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from emotionvision.data import cache as cache_module
from emotionvision.data.cache import DecodeCache
from emotionvision.data.images import SkipReport

SIZE = 16


def _invert_pixels(path: Path) -> None:
    shard = torch.load(path, weights_only=True)
    shard["images"] = 255 - shard["images"]  # the stored checksum is kept
    torch.save(shard, path)


def _shorten_keys(path: Path) -> None:
    shard = torch.load(path, weights_only=True)
    shard["keys"] = shard["keys"][:-1]
    torch.save(shard, path)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES: dict[str, Callable[[Path], None]] = {
    "inverted pixels": _invert_pixels,
    "shortened keys": _shorten_keys,
    "truncated": _truncate,
    "zero bytes": lambda path: path.write_bytes(b""),
    "garbage": lambda path: path.write_bytes(bytes(range(256)) * 64),
}


@pytest.fixture
def images(tmp_path: Path, make_tree) -> list[Path]:
    tree = make_tree(tmp_path / "faces", {"anger": 3, "happy": 3}, size=20)
    return sorted(tree.rglob("*.png"))


def _decoded(cache_dir: Path, paths: list[Path]) -> torch.Tensor:
    kept, decoded = DecodeCache(cache_dir, SIZE).get_many(paths, SkipReport())
    assert kept == paths
    return torch.stack([image.pixels for image in decoded]).clone()


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_shard_is_named_once_removed_and_rebuilt(
    damage: str, images: list[Path], cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Inverted pixels were used silently (accuracy 0.200 -> 0.183); a truncated, empty or garbage shard
    or a shortened keys list crashed every later run. Now each is one warning, and the pixels come
    from the files again."""
    expected = _decoded(cache_dir, images)
    (shard,) = DecodeCache(cache_dir, SIZE).folder.glob("shard-*.pt")
    DAMAGES[damage](shard)

    with caplog.at_level(logging.WARNING, logger="emotionvision"):
        pixels = _decoded(cache_dir, images)
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and shard.name in warnings[0], warnings
    assert torch.equal(pixels, expected)
    assert not shard.exists()  # never used again

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="emotionvision"):
        rebuilt = DecodeCache(cache_dir, SIZE)
    assert not caplog.records
    assert len(rebuilt.entries) == len(images)
    assert torch.equal(_decoded(cache_dir, images), expected)


def test_the_checksum_covers_keys_and_every_tensor(images: list[Path], cache_dir: Path) -> None:
    _decoded(cache_dir, images)
    (path,) = DecodeCache(cache_dir, SIZE).folder.glob("shard-*.pt")
    shard = torch.load(path, weights_only=True)
    assert cache_module.shard_problem(shard, SIZE, face_boxes=False) is None
    for name in ("hashes", "source_pixels"):
        edited = {**shard, name: shard[name].clone()}
        edited[name][0] = ~edited[name][0] if name == "hashes" else edited[name][0] + 1
        assert "checksum mismatch" in cache_module.shard_problem(edited, SIZE, face_boxes=False)
    swapped = {**shard, "keys": [shard["keys"][1], shard["keys"][0], *shard["keys"][2:]]}
    assert "checksum mismatch" in cache_module.shard_problem(swapped, SIZE, face_boxes=False)
    assert "images" in cache_module.shard_problem(shard, SIZE + 1, face_boxes=False)


def test_a_failed_shard_write_leaves_no_file(
    images: list[Path], cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk midway through a shard left part of it (as .tmp, or under its name had the write
    not been a rename): now nothing is left, and the next run decodes and saves as usual."""

    def full_disk(obj: object, target) -> None:
        with open(target, "wb") if isinstance(target, str | Path) else nullcontext(target) as handle:
            handle.write(b"PK\x03\x04 part of a shard")
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(cache_module.torch, "save", full_disk)
        with pytest.raises(OSError, match="No space left"):
            DecodeCache(cache_dir, SIZE).get_many(images, SkipReport())
    folder = DecodeCache(cache_dir, SIZE).folder
    assert list(folder.iterdir()) == []
    _decoded(cache_dir, images)
    assert [path.suffix for path in folder.iterdir()] == [".pt"]


def test_older_cache_versions_are_named_with_the_space_they_take(
    images: list[Path], cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    older = cache_dir / f"v{cache_module.CACHE_VERSION - 1}-size{SIZE}"
    older.mkdir(parents=True)
    (older / "shard-old.pt").write_bytes(bytes(3_000_000))
    with caplog.at_level(logging.INFO, logger="emotionvision"):
        _decoded(cache_dir, images)
        _decoded(cache_dir, images)
    named = [record.message for record in caplog.records if "older cache version" in record.message]
    assert named == [f"Decode cache {cache_dir}: {older.name} hold an older cache version, no longer read; "
                     "deleting them frees 3 MB"]  # fmt: skip
    assert len(list(cache_dir.glob(f"v{cache_module.CACHE_VERSION}-size{SIZE}/shard-*.pt"))) == 1
