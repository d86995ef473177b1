"""Progress you can see (issue 17, item 1): on a terminal the bars; where the output is not one (nohup,
CI, a log file) the decode loop logs its rate and ETA and training logs a line per epoch. The lines of
a real run's train.log: tests/test_train_e2e.py."""

from __future__ import annotations

import io
import logging
import re
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.demos.boring_classes import BoringModel

from emotionvision.callbacks import EpochLog
from emotionvision.data.cache import DecodeCache
from emotionvision.data.images import SkipReport


class Terminal(io.StringIO):
    """An output that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class FlatModel(BoringModel):
    """A model whose validation `val/macro_f1` never improves on its first value."""

    def validation_step(self, batch, batch_idx):
        self.log("val/macro_f1", 0.5)
        return super().validation_step(batch, batch_idx)


def decode_lines(paths: list[Path], cache: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Decode `paths` into a new cache; the decode progress lines logged."""
    with caplog.at_level(logging.INFO, logger="emotionvision.data.cache"):
        kept, _ = DecodeCache(cache, 24).get_many(paths, SkipReport())
    assert kept == paths
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith("Decoding:")]


def test_decoding_logs_its_rate_and_eta_where_output_is_not_a_terminal(
    tmp_path: Path, make_tree, caplog, monkeypatch
) -> None:
    paths = sorted(make_tree(tmp_path / "images", {"anger": 3, "happy": 3}).rglob("*.png"))
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    # every LOG_EVERY seconds, the first after as long: a quick decode logs no progress line at all
    assert decode_lines(paths, tmp_path / "quick", caplog) == []
    monkeypatch.setattr("emotionvision.progress.LOG_EVERY", 0.0)
    lines = decode_lines(paths, tmp_path / "logged", caplog)
    rate = r"[\d.]+(image/s|s/image)"
    assert re.fullmatch(rf"Decoding: 100% \(6/6\), {rate}, 00:\d\d elapsed, ETA 00:00", lines[-1]), lines
    assert all("\r" not in line and "|" not in line for line in lines)  # lines, not a bar redrawn


def test_decoding_shows_a_bar_on_a_terminal(tmp_path: Path, make_tree, caplog, monkeypatch) -> None:
    paths = sorted(make_tree(tmp_path / "images", {"anger": 3, "happy": 3}).rglob("*.png"))
    monkeypatch.setattr(sys, "stdout", Terminal())
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert decode_lines(paths, tmp_path / "cache", caplog) == []
    assert re.search(r"\rDecoding: 100%\|.+\| 6/6 \[", sys.stderr.getvalue())


def fit_logged(
    model: pl.LightningModule, epochs: int, callbacks: list[pl.Callback], caplog: pytest.LogCaptureFixture
) -> tuple[pl.Trainer, list[logging.LogRecord]]:
    """Fit `model` for `epochs` of two training batches with `callbacks`: the trainer and the records
    EpochLog logged (DEBUG and up)."""
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=callbacks,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    with caplog.at_level(logging.DEBUG, logger="emotionvision.callbacks.progress"):
        trainer.fit(model)
    return trainer, [record for record in caplog.records if record.name == "emotionvision.callbacks.progress"]


@pytest.mark.parametrize("terminal", [False, True], ids=["log", "terminal"])
def test_training_logs_a_line_per_epoch_instead_of_the_bar(terminal: bool, caplog) -> None:
    trainer, records = fit_logged(BoringModel(), 2, [EpochLog("val/macro_f1", terminal=terminal)], caplog)
    assert [record.getMessage().split(":")[0] for record in records] == ["Epoch 1/2", "Epoch 2/2"]
    assert re.fullmatch(r"Epoch 1/2: [\d.]+ s; ETA \d\d:\d\d", records[0].getMessage())
    # on a terminal the bar shows progress and the lines go to the log at DEBUG only
    assert {record.levelno for record in records} == {logging.DEBUG if terminal else logging.INFO}
    assert trainer.progress_bar_callback is not None
    assert trainer.progress_bar_callback.is_enabled == terminal


def test_the_eta_says_when_early_stopping_would_end_the_run(caplog) -> None:
    """Patience 2 of 5 epochs on a metric that never improves: the first two lines give the ETA to epoch 5
    and to epoch 3, where early stopping ends the run; the last line, at the stop, has no ETA."""
    stopper = EarlyStopping(monitor="val/macro_f1", mode="max", patience=2)
    trainer, records = fit_logged(FlatModel(), 5, [EpochLog("val/macro_f1", terminal=False), stopper], caplog)
    lines = [record.getMessage() for record in records]
    soonest = r"ETA \d\d:\d\d, or \d\d:\d\d if val/macro_f1 does not improve \(early stopping after epoch 3\)"
    for epoch, line in enumerate(lines[:2], start=1):
        assert re.fullmatch(rf"Epoch {epoch}/5: val/macro_f1 0.5000; [\d.]+ s; {soonest}", line), line
    assert re.fullmatch(r"Epoch 3/5: val/macro_f1 0.5000; [\d.]+ s", lines[2]), lines
    assert len(lines) == 3 and trainer.current_epoch == 3
