"""Checkpoint writing (emotionvision/checkpoint_io.py): atomic files, background saves in order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.plugins.io import TorchCheckpointIO

from emotionvision.checkpoint_io import AsyncAtomicCheckpointIO, AtomicCheckpointIO


class Unpicklable:
    """Fails torch.save part-way through the file, as a write killed mid-way."""

    def __reduce__(self):
        raise RuntimeError("write interrupted")


def state(value: float) -> dict:
    return {"weights": torch.full((256, 256), value), "epoch": int(value)}


def test_a_checkpoint_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "run" / "checkpoints" / "last.ckpt"
    io.save_checkpoint(state(1.0), path)
    assert torch.equal(io.load_checkpoint(path)["weights"], state(1.0)["weights"])
    with pytest.raises(RuntimeError, match="write interrupted"):
        io.save_checkpoint({**state(2.0), "extra": Unpicklable()}, path)
    assert io.load_checkpoint(path)["epoch"] == 1  # the previous checkpoint, intact
    io.save_checkpoint(state(3.0), path)  # the next save replaces the failed one's leftover
    assert io.load_checkpoint(path)["epoch"] == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_background_saves_and_removals_run_in_order_and_teardown_waits(tmp_path: Path) -> None:
    io = AsyncAtomicCheckpointIO()
    first, second = tmp_path / "best-epoch000.ckpt", tmp_path / "best-epoch001.ckpt"
    weights = torch.zeros(1024, 1024)
    io.save_checkpoint({"weights": weights}, first)
    weights += 1  # changed after the call: the checkpoint holds the values at the call
    io.save_checkpoint({"weights": weights}, second)
    io.remove_checkpoint(first)  # as ModelCheckpoint does with a superseded best checkpoint
    io.teardown()
    assert sorted(p.name for p in tmp_path.iterdir()) == [second.name]
    assert torch.equal(torch.load(second, weights_only=True)["weights"], torch.ones(1024, 1024))


def test_a_failed_background_save_is_raised_by_the_next_call_or_teardown(tmp_path: Path) -> None:
    io = AsyncAtomicCheckpointIO()
    with pytest.raises(RuntimeError, match="write interrupted"):
        try:
            io.save_checkpoint({"extra": Unpicklable()}, tmp_path / "last.ckpt")
        finally:
            io.teardown()  # raises it too where the save call returned before the thread failed
    assert not (tmp_path / "last.ckpt").exists()


@pytest.mark.gpu
def test_background_save_of_cuda_tensors_holds_their_values_at_the_call(tmp_path: Path) -> None:
    io, path = AsyncAtomicCheckpointIO(), tmp_path / "last.ckpt"
    weights = torch.zeros(1024, 1024, device="cuda")
    io.save_checkpoint({"weights": weights}, path)
    weights += 1
    io.teardown()
    assert not torch.load(path, map_location="cpu", weights_only=True)["weights"].any()


@pytest.mark.parametrize(
    ("override", "kind"), [([], AsyncAtomicCheckpointIO), (["trainer.plugins=null"], TorchCheckpointIO)]
)
def test_trainer_config_chooses_the_checkpoint_writer(compose_train, tmp_path: Path, override, kind) -> None:
    cfg = compose_train([*override, f"trainer.default_root_dir={tmp_path}"])
    trainer = instantiate(cfg.trainer, logger=False)
    assert type(trainer.strategy.checkpoint_io) is kind
