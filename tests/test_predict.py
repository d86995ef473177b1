"""emotionvision-predict, the Predictor API and safe checkpoint loading."""

from __future__ import annotations

import csv
import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emotionvision import inference
from emotionvision.cli import predict
from emotionvision.data.cache import DecodeCache
from emotionvision.data.images import SkipReport, find_inputs, list_class_files
from emotionvision.errors import UsageError
from emotionvision.inference import Predictor
from emotionvision.models import EmotionClassifier
from emotionvision.models.checkpoint import UnsafeCheckpointError
from emotionvision.models.classifier import load_classifier

CLASSES = ["anger", "happy", "sad"]
SIZE = 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint as Lightning writes it (state_dict + hyper_parameters) of an untrained model
    whose hyperparameters ask for ImageNet weights: loading must neither download nor read them."""
    torch.manual_seed(0)
    model = EmotionClassifier("resnet18", CLASSES, input_size=SIZE)
    hparams = dict(model.hparams) | {"pretrained": True, "weights_path": "/nowhere/imagenet.pth"}
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams}, path)
    return path


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    """Good and broken files: RGB JPEG, RGBA PNG, text named .jpg, truncated JPEG, hidden file."""
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(
        folder / "a_photo.jpg", quality=90
    )
    rgba = rng.integers(0, 255, (40, 40, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "nested" / "b_alpha.png")
    (folder / "c_text.jpg").write_text("not an image at all")
    jpeg_bytes = (folder / "a_photo.jpg").read_bytes()
    (folder / "d_truncated.jpg").write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    (folder / ".hidden.jpg").write_bytes(jpeg_bytes)
    return folder


def test_predict_reports_unreadable_files_and_carries_on(checkpoint: Path, odd_folder: Path) -> None:
    predictions = Predictor(checkpoint, device="cpu", batch_size=2).predict([odd_folder], top_k=2)
    by_name = {Path(p.path).name: p for p in predictions}
    # the hidden file is not read (training leaves it out), but it has its row
    assert sorted(by_name) == [".hidden.jpg", "a_photo.jpg", "b_alpha.png", "c_text.jpg", "d_truncated.jpg"]
    assert by_name[".hidden.jpg"].error.startswith("hidden file: ") and by_name[".hidden.jpg"].labels == []
    for name in ("a_photo.jpg", "b_alpha.png"):
        prediction = by_name[name]
        assert prediction.error is None
        assert len(prediction.labels) == 2 and set(prediction.labels) <= set(CLASSES)
        assert 1 >= prediction.probabilities[0] >= prediction.probabilities[1] > 0
    assert "cannot identify image file" in by_name["c_text.jpg"].error
    assert "truncated" in by_name["d_truncated.jpg"].error
    assert by_name["d_truncated.jpg"].labels == []


def test_a_folder_logs_its_file_count_and_subfolders_only_where_it_has_them(
    odd_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(plain / name)
    caplog.set_level("INFO", logger="emotionvision.data.images")
    find_inputs([plain, odd_folder])
    messages = [record.getMessage() for record in caplog.records]
    # the hidden file is not counted (it gets an error row), the one in nested/ is
    assert messages[:2] == [
        f"{plain}: 2 files to read",
        f"{odd_folder}: 4 files to read (1 of them in subfolders)",
    ]
    assert not any("nested folders" in message for message in messages)


def test_preprocessing_is_exactly_trainings(checkpoint: Path, odd_folder: Path) -> None:
    predictor = Predictor(checkpoint, device="cpu")
    paths = [odd_folder / "a_photo.jpg", odd_folder / "nested" / "b_alpha.png"]
    _, cached = DecodeCache(odd_folder.parent / "cache", SIZE).get_many(paths, SkipReport())
    for path, image in zip(paths, cached, strict=True):
        assert torch.equal(predictor.decode(path), image.pixels)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_cli_labels_a_folder(
    suffix: str, checkpoint: Path, odd_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = tmp_path / f"predictions{suffix}"
    single = odd_folder / "a_photo.jpg"
    overrides = [f"ckpt_path={checkpoint}", f"inputs=[{odd_folder},{single}]", f"output={output}", "top_k=3"]
    monkeypatch.setattr(
        sys, "argv", ["emotionvision-predict", *overrides, "tta=flip", f"hydra.run.dir={tmp_path}"]
    )
    predict.main()
    if suffix == ".csv":
        with output.open() as handle:
            rows = list(csv.DictReader(handle))
        labels = [[row[f"label_{k}"] for k in (1, 2, 3)] for row in rows]
        errors = [row["error"] for row in rows]
    else:
        rows = json.loads(output.read_text())
        labels = [row["labels"] for row in rows]
        errors = [row["error"] or "" for row in rows]
    assert [Path(row["path"]).name for row in rows] == [
        ".hidden.jpg",
        "a_photo.jpg",
        "c_text.jpg",
        "d_truncated.jpg",
        "b_alpha.png",
        "a_photo.jpg",
    ]
    assert sorted(labels[1]) == CLASSES and labels[1] == labels[-1]
    assert [bool(error) for error in errors] == [True, False, True, True, False, False]


def test_bad_output_and_missing_input_are_named(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"output=.*preds\.txt: name a \.csv or a \.json"):
        inference.write_predictions([], tmp_path / "preds.txt")
    with pytest.raises(UsageError, match=r"nowhere\.jpg does not exist"):
        Predictor(checkpoint, device="cpu").predict([tmp_path / "nowhere.jpg"])


class RunsCode:
    """Unpickling this object writes a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


def test_a_checkpoint_with_pickled_code_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    marker = tmp_path / "code_ran.txt"
    unsafe = tmp_path / "unsafe.ckpt"
    contents = torch.load(checkpoint, weights_only=True)
    torch.save(contents | {"payload": RunsCode(marker)}, unsafe)

    with pytest.raises(
        UnsafeCheckpointError, match=r"Refusing to load .*unsafe\.ckpt.*GLOBAL.*exec"
    ) as refusal:
        Predictor(unsafe, device="cpu")
    assert "could run arbitrary code" in str(refusal.value)
    assert not marker.exists()

    torch.load(unsafe, weights_only=False)  # the payload is real: a full unpickling runs it
    assert marker.read_text() == "code ran"


def test_files_that_are_no_checkpoint_are_named(tmp_path: Path) -> None:
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.ckpt"):
        load_classifier(text)
    with pytest.raises(UsageError, match=r"missing\.ckpt does not exist"):
        load_classifier(tmp_path / "missing.ckpt")
    weights = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}}, weights)
    with pytest.raises(ValueError, match="not an EmotionClassifier checkpoint"):
        load_classifier(weights)


def test_a_fifo_named_in_inputs_gets_an_error_row_and_is_never_opened(
    checkpoint: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "camera.fifo"
    os.mkfifo(fifo)
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(good)
    # a writer ends any read of the FIFO (were it opened, the run would get an unreadable file, not hang)
    writer = threading.Thread(target=lambda: os.close(os.open(fifo, os.O_WRONLY)), daemon=True)
    writer.start()
    try:
        predictions = Predictor(checkpoint, device="cpu").predict([fifo, good])
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # releases the writer: nobody read
        writer.join(timeout=10)
    assert [p.path for p in predictions] == [str(fifo), str(good)]
    assert predictions[0].error == "not a regular file: a FIFO, socket or device is not read"
    assert predictions[0].labels == [] and predictions[1].error is None


def test_every_file_of_a_folder_has_a_row_with_the_reason_training_gives(
    checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
        folder / "a.png"
    )
    (folder / ".hidden.png").write_bytes((folder / "a.png").read_bytes())
    (folder / "loop_a").symlink_to(folder / "loop_b")  # a loop of links
    (folder / "loop_b").symlink_to(folder / "loop_a")
    (folder / "up").symlink_to(tmp_path)  # the folder above: followed, it would loop
    os.mkfifo(folder / "pipe")
    training = SkipReport()  # what training lists (its skipped.csv rows) from a class folder like it
    assert list_class_files(folder, training) == [folder / "a.png"]
    assert dict(training.rows()) == {
        folder / ".hidden.png": "hidden file",
        folder / "loop_a": "broken link",
        folder / "loop_b": "broken link",
        folder / "pipe": "not a regular file",
        folder / "up": "link to a folder (not followed)",
    }
    predictions = Predictor(checkpoint, device="cpu").predict([folder, folder / "loop_a"])
    reasons = {Path(p.path): p.error.split(":")[0] for p in predictions if p.error}
    assert reasons == dict(training.rows())  # one reason for each file, in training and in predict
    assert [Path(p.path) for p in predictions if not p.error] == [folder / "a.png"]
    by_path = {p.path: p.error for p in predictions[:-1]}
    assert (
        by_path[str(folder / "up")]
        == "link to a folder (not followed): it points to a folder above it, a loop"
    )
    assert "Too many levels of symbolic links" in predictions[-1].error  # the loop named in inputs=
