"""Bad checkpoint and model files: each ends in one line naming the file, the setting it came from and
what is wrong, at every entry point that loads one (ckpt_path= and resume= of emotionvision-train,
model.init_from, emotionvision-eval, emotionvision-predict, emotionvision-export), and nothing pickled
in one ever runs. The files are made from the checkpoints of the `seed_sweep` fixture."""

from __future__ import annotations

import os
import pickle
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from emotionvision.cli import evaluate, export, predict, train
from emotionvision.errors import UsageError
from emotionvision.inference import load_model
from emotionvision.models import EmotionClassifier
from emotionvision.models.checkpoint import check_training_checkpoint, transfer_weights
from emotionvision.models.classifier import load_classifier

CLASSES = ["anger", "happy", "sad"]
SIZE = 32  # the seed sweep's data.image_size


class RunsCommand:
    """Unpickling this runs a shell command (pickled as GLOBAL posix.system): a zip-injected checkpoint."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.fixture(scope="module")
def last(seed_sweep: Path) -> Path:
    """A last.ckpt of a finished run (model weights; its training state dropped)."""
    return seed_sweep / "0" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory, seed_sweep: Path, last: Path) -> Path:
    """A folder of bad files (and `marker`, which the injected checkpoint's payload would create)."""
    folder = tmp_path_factory.mktemp("bad")
    best = next((seed_sweep / "0" / "checkpoints").glob("best-*.ckpt"))
    contents = torch.load(best, weights_only=True)
    hparams = contents["hyper_parameters"]
    torch.save(contents | {"payload": RunsCommand(f"touch {folder / 'marker'}")}, folder / "inject.ckpt")
    (folder / "empty.ckpt").write_bytes(b"")
    (folder / "pickled.ckpt").write_bytes(pickle.dumps({"state_dict": {}}))
    torch.save(contents, folder / "legacy.ckpt", _use_new_zipfile_serialization=False)
    with last.open("rb") as handle:  # a write cut short: the archive's end (its directory) is missing
        (folder / "truncated.ckpt").write_bytes(handle.read(200_000))
    (folder / "garbage.ckpt").write_bytes(os.urandom(4096))
    (folder / "garbage.onnx").write_bytes(os.urandom(4096))
    # a 3-row head under four class names (the classes, shifted: row 3 would not exist)
    head = hparams | {"class_names": ["surprise", *CLASSES]}
    torch.save(contents | {"hyper_parameters": head}, folder / "head.ckpt")
    # an Inception-v3 recorded at 32 px: no emotionvision-train run writes that
    inception = hparams | {"backbone": "inception_v3"}
    torch.save(contents | {"hyper_parameters": inception}, folder / "inception.ckpt")
    shutil.copy(best, folder / "best.ckpt")
    return folder


@pytest.fixture(scope="module")
def model() -> EmotionClassifier:
    """The model of the seed sweep's runs, as emotionvision-train builds it before Trainer.fit."""
    return EmotionClassifier("resnet18", CLASSES, input_size=SIZE)


# what each bad file's one line says, whichever entry point reads it
SAYS = {
    "inject.ckpt": "unsupported GLOBAL posix.system",
    "empty.ckpt": "is empty (0 bytes)",
    "pickled.ckpt": "a bare pickle or a legacy torch.save file",
    "legacy.ckpt": "a bare pickle or a legacy torch.save file",
    "truncated.ckpt": "is truncated (200000 bytes, the end of its archive is missing)",
    "garbage.ckpt": "(not a zip archive; torch.save writes a zip archive)",
    "missing.ckpt": "does not exist",
    "head.ckpt": "disagrees with itself: its head fc has 3 rows (classes) but its hyper_parameters name 4",
}


def _eval_export(path: Path, model: EmotionClassifier) -> object:
    return load_classifier(path)  # emotionvision-eval, -export and ensembles read checkpoints so


def _predict(path: Path, model: EmotionClassifier) -> object:
    return load_model(path)


def _continue_training(path: Path, model: EmotionClassifier) -> None:
    check_training_checkpoint(path, model)  # ckpt_path= and resume=, before Trainer.fit loads it


def _init_from(path: Path, model: EmotionClassifier) -> None:
    transfer_weights(EmotionClassifier("resnet18", CLASSES, input_size=SIZE).model, "resnet18", "standard",
                     CLASSES, path)  # fmt: skip


@pytest.mark.parametrize("name", list(SAYS))
@pytest.mark.parametrize(
    "read", [_eval_export, _predict, _continue_training, _init_from], ids=lambda read: read.__name__[1:]
)
def test_every_bad_file_is_one_line_wherever_it_is_read(
    name: str, read: Callable, bad: Path, model: EmotionClassifier
) -> None:
    with pytest.raises(UsageError) as refusal:
        read(bad / name, model)
    message = str(refusal.value)
    assert "\n" not in message and str(bad / name) in message, message
    assert SAYS[name] in message, message
    assert not (bad / "marker").exists()  # the injected payload never ran


def test_what_each_entry_point_says_of_model_files_it_cannot_use(bad: Path, model: EmotionClassifier) -> None:
    onnx = bad / "garbage.onnx"
    with pytest.raises(
        UsageError, match=r"garbage\.onnx is not an ONNX model onnxruntime can load \(Protobuf"
    ):
        load_model(onnx)  # predict runs .onnx files
    with pytest.raises(UsageError, match=r"garbage\.onnx is an ONNX export; this command takes a \.ckpt"):
        load_classifier(onnx)  # eval and export do not
    # what is wrong with the Inception checkpoint is the checkpoint, not a setting of the evaluation
    with pytest.raises(UsageError) as refusal:
        load_classifier(bad / "inception.ckpt")
    assert "records input_size=32, but its inception_v3 takes images of at least 299 px" in str(refusal.value)
    assert "data.image_size" not in str(refusal.value)
    # a model's weights (a best-*.ckpt) cannot continue a training run: init_from starts from them
    with pytest.raises(UsageError, match=r"holds the model's weights only .* use model\.init_from="):
        check_training_checkpoint(bad / "best.ckpt", model)


def run_app(main: Callable, capsys: pytest.CaptureFixture, *overrides: str) -> str:
    """Run a console entry point in this process; returns its one error line (exit status 1)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(sys, "argv", ["emotionvision", *overrides])
        with pytest.raises(SystemExit) as exit_info:
            main()
    assert exit_info.value.code == 1
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_the_commands_end_in_one_line(
    bad: Path,
    last: Path,
    seed_sweep: Path,
    tmp_path: Path,
    make_tree: Callable[..., Path],
    quick_run_overrides: list[str],
    capsys: pytest.CaptureFixture,
) -> None:
    common = [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"]
    line = run_app(evaluate.main, capsys, f"ckpt_path={bad / 'head.ckpt'}", *common)
    assert line.startswith(f"emotionvision-eval: error: ckpt_path: {bad / 'head.ckpt'} disagrees with itself")
    assert "4 classes ['surprise', 'anger', 'happy', 'sad']" in line  # the head and the class names
    line = run_app(predict.main, capsys, f"ckpt_path={bad / 'garbage.onnx'}", f"inputs=[{tmp_path}]", *common)
    assert line.startswith("emotionvision-predict: error: ckpt_path: ") and "not an ONNX model" in line
    line = run_app(export.main, capsys, f"ckpt_path={bad / 'inject.ckpt'}", *common)
    assert line.startswith(f"emotionvision-export: error: Refusing to load {bad / 'inject.ckpt'} (ckpt_path)")

    # emotionvision-train: a 3-class last.ckpt on 2-class data, a head at odds with its classes
    two = make_tree(tmp_path / "two", {"anger": 4, "happy": 4})
    fit = [*quick_run_overrides, "data=folder", f"data.root={two}", "trainer.accelerator=cpu", *common]
    line = run_app(train.main, capsys, *fit, f"ckpt_path={last}")
    assert line == (
        f"emotionvision-train: error: ckpt_path: {last} was trained on 3 classes {CLASSES}, but this run's "
        "data have 2 ['anger', 'happy']. ckpt_path continues that training as it was; to start from its "
        f"weights on these classes, use model.init_from={last} (the rows of shared classes carry over)."
    )
    line = run_app(train.main, capsys, *fit, f"ckpt_path={bad / 'inject.ckpt'}")  # 58 lines before
    assert line == (
        f"emotionvision-train: error: Refusing to load {bad / 'inject.ckpt'} (ckpt_path): it holds more than "
        "tensors and plain data (unsupported GLOBAL posix.system). Unpickling it could run arbitrary code, "
        "so it is not loaded. Use a checkpoint written by emotionvision-train."
    )
    line = run_app(train.main, capsys, *fit, f"model.init_from={bad / 'head.ckpt'}")
    assert line.startswith(f"emotionvision-train: error: model.init_from {bad / 'head.ckpt'} disagrees")
    assert not (tmp_path / "run").exists()  # the stub run directories are gone

    # resume= of a run whose last.ckpt was cut short: refused before Lightning reads it
    run = tmp_path / "interrupted"
    shutil.copytree(seed_sweep / "0" / ".hydra", run / ".hydra")
    (run / "checkpoints").mkdir()
    shutil.copy(bad / "truncated.ckpt", run / "checkpoints" / "last.ckpt")
    line = run_app(train.main, capsys, f"resume={run}")
    assert line.startswith(
        f"emotionvision-train: error: resume={run}: {run / 'checkpoints' / 'last.ckpt'} is truncated"
    )
    assert not (bad / "marker").exists()  # the injected payload never ran
