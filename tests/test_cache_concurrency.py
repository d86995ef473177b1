"""The decode cache shared by processes that start at once (several nodes' ranks on one shared folder)."""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import multiprocessing.synchronize
from pathlib import Path

import pytest
import torch

from emotionvision.data.cache import DecodeCache, decode_image, shard_problem
from emotionvision.data.images import SkipReport

PROCESSES = 4
SIZE = 32


def build(
    cache_dir: Path, paths: list[Path], barrier: multiprocessing.synchronize.Barrier, out: Path
) -> None:
    """One process: wait for the others at `barrier`, build the cache of `paths`, save what it got to
    `out`, then open the cache again while the others may still be writing their shards."""
    warnings = logging.handlers.BufferingHandler(capacity=100)  # a damaged shard is named in a warning
    warnings.setLevel(logging.WARNING)
    logging.getLogger("emotionvision.data.cache").addHandler(warnings)
    barrier.wait()
    kept, decoded = DecodeCache(cache_dir, SIZE).get_many(paths, SkipReport())
    assert kept == paths
    torch.save([(image.pixels.clone(), image.hash_bits.clone()) for image in decoded], out)
    for _ in range(20):  # whatever shards exist now: each complete, none dropped as damaged
        assert len(DecodeCache(cache_dir, SIZE).entries) == len(paths)
    assert not warnings.buffer, [record.getMessage() for record in warnings.buffer]


@pytest.mark.slow  # four processes (one package import, forked)
def test_processes_starting_together_share_one_cache_folder(
    tmp_path: Path, make_tree, cache_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each process builds the cache (or reads the shards of one that did), with no torn read: all get
    the tensors a decode of the files gives, and every shard in the folder verifies."""
    images = make_tree(tmp_path / "images", {"anger": 8, "happy": 8, "sad": 8}, size=40)
    paths = sorted(images.rglob("*.png"))
    # forked from a server that imported the package once (no threads to fork): cheap, clean processes
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["emotionvision.data.cache"])
    barrier = context.Barrier(PROCESSES)  # they start building within a millisecond or so
    outputs = [tmp_path / f"got{index}.pt" for index in range(PROCESSES)]
    workers = [context.Process(target=build, args=(cache_dir, paths, barrier, out)) for out in outputs]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES

    expected = [decode_image(path, SIZE)[0] for path in paths]
    got = [torch.load(out, weights_only=True) for out in outputs]
    for images_got in got:
        assert all(torch.equal(pixels, want) for (pixels, _), want in zip(images_got, expected, strict=True))
        assert all(torch.equal(bits, twin) for (_, bits), (_, twin) in zip(images_got, got[0], strict=True))

    (folder,) = cache_dir.iterdir()
    shards = sorted(folder.iterdir())
    assert 1 <= len(shards) <= PROCESSES  # one built it, or several each their own; no temporary files
    assert all(path.name.startswith("shard-") and path.suffix == ".pt" for path in shards)
    for path in shards:
        assert shard_problem(torch.load(path, weights_only=True), SIZE, face_boxes=False) is None
    with caplog.at_level(logging.INFO, logger="emotionvision.data.cache"):
        kept, _ = DecodeCache(cache_dir, SIZE).get_many(paths, SkipReport())
    assert kept == paths and not caplog.records  # nothing damaged, nothing left to decode
