"""emotionvision-export: ONNX and torch.export files that match PyTorch, their metadata, and prediction
through an exported .onnx file."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from emotionvision import exporting
from emotionvision.cli import export, predict
from emotionvision.data.faces import FaceCrop
from emotionvision.data.images import SkipReport, list_class_files
from emotionvision.inference import Predictor
from emotionvision.models import EmotionClassifier, onnx
from emotionvision.models.classifier import load_classifier

CLASSES = ["anger", "happy", "sad"]
SIZE = 32
TOLERANCE = 1e-4
# whole images made greyscale: a face-crop setting that needs no detector
GREY = {"detector": None, "margin": 0.0, "grey": True, "no_face": "whole"}
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason=f"needs the export extra: {onnx.INSTALL_HINT}")


def train_tiny(path: Path, face_crop: dict | None = None) -> Path:
    """A few SGD steps of a 32 px ResNet-18 (batch-norm statistics and head move off their initial
    values), saved as Lightning saves checkpoints (state_dict + hyper_parameters)."""
    torch.manual_seed(0)
    model = EmotionClassifier("resnet18", CLASSES, input_size=SIZE, face_crop=face_crop).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    images, targets = torch.rand(12, 3, SIZE, SIZE), torch.arange(12) % len(CLASSES)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(images), targets).backward()
        optimizer.step()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", face_crop=GREY)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory, make_tree: Callable[..., Path]) -> Path:
    """Generated images (3 classes x 4, 48 px: resized and cropped to 32) and one file that is no image."""
    root = make_tree(tmp_path_factory.mktemp("tree"), {c: 4 for c in CLASSES}, size=48)
    (root / "sad" / "broken.png").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def onnx_file(checkpoint: Path, tree: Path) -> Path:
    """`emotionvision-export ckpt_path=... format=onnx` (its own check on the generated images)."""
    if not HAS_ONNX:
        pytest.skip(f"needs the export extra: {onnx.INSTALL_HINT}")
    images = ",".join(str(p) for p in list_class_files(tree / "happy", SkipReport()))
    argv = ["emotionvision-export", f"ckpt_path={checkpoint}", "format=onnx", f"check_images=[{images}]"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [*argv, f"hydra.run.dir={checkpoint.parent / 'export_run'}"])
        export.main()
    return checkpoint.with_suffix(".onnx")


def real_images(root: Path, per_class: int = 2) -> list[Path]:
    return [path for folder in sorted(root.iterdir()) for path in sorted(folder.iterdir())[:per_class]]


@needs_onnx
def test_onnx_matches_pytorch_on_generated_images(checkpoint: Path, onnx_file: Path, tree: Path) -> None:
    classifier = load_classifier(checkpoint)
    decoded = exporting.check_batch([tree], SIZE, FaceCrop(**GREY))
    assert len(decoded) == 12  # the broken file is left out by the folder listing
    for images in (decoded, decoded[:1], torch.rand(7, 3, SIZE, SIZE)):  # any batch size
        assert exporting.max_difference(classifier, onnx_file, images) <= TOLERANCE


@needs_onnx
@pytest.mark.realdata
def test_onnx_matches_pytorch_on_real_images(checkpoint: Path, onnx_file: Path, six_emotions: Path) -> None:
    images = exporting.check_batch(real_images(six_emotions), SIZE, FaceCrop(**GREY))
    assert len(images) == 12
    assert exporting.max_difference(load_classifier(checkpoint), onnx_file, images) <= TOLERANCE


@needs_onnx
def test_onnx_metadata_holds_classes_and_preprocessing(onnx_file: Path) -> None:
    import onnx

    model = onnx.load(str(onnx_file))
    meta = {prop.key: prop.value for prop in model.metadata_props}
    assert json.loads(meta["class_names"]) == CLASSES
    assert meta["input_size"] == str(SIZE) and meta["backbone"] == "resnet18"
    assert json.loads(meta["mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(meta["std"]) == [0.229, 0.224, 0.225]
    assert json.loads(meta["face_crop"]) == GREY
    assert "RGB in [0, 1]" in meta["preprocessing"] and "center-cropped" in meta["preprocessing"]
    (images,) = model.graph.input
    assert images.name == "images"
    assert [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim] == ["batch", 3, SIZE, SIZE]
    plain = EmotionClassifier("resnet18", CLASSES, input_size=SIZE)
    assert exporting.metadata(plain)["face_crop"] == ""


@needs_onnx
def test_predict_runs_the_onnx_file_like_the_checkpoint(
    checkpoint: Path, onnx_file: Path, tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for tta in ("none", "flip", "ten_crop"):  # the same test-time augmentation
        expected = Predictor(checkpoint, device="cpu", batch_size=5, tta=tta).predict([tree], top_k=3)
        exported = Predictor(onnx_file, device="cpu", batch_size=5, tta=tta).predict([tree], top_k=3)
        assert [(p.path, p.labels, p.error is None) for p in exported] == [
            (p.path, p.labels, p.error is None) for p in expected
        ]
        for ours, theirs in zip(exported, expected, strict=True):
            assert ours.probabilities == pytest.approx(theirs.probabilities, abs=TOLERANCE)
    assert isinstance(Predictor(onnx_file).model, onnx.OnnxClassifier)
    assert Predictor(onnx_file).face_crop == FaceCrop(**GREY)

    output = tmp_path / "predictions.csv"
    argv = [f"ckpt_path={onnx_file}", f"inputs=[{tree}]", f"output={output}", f"hydra.run.dir={tmp_path}"]
    # `expected`: the checkpoint's ten-crop predictions, the loop's last
    monkeypatch.setattr(sys, "argv", ["emotionvision-predict", *argv, "tta=ten_crop"])
    predict.main()
    with output.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["label_1"] for row in rows] == [p.labels[0] if p.labels else "" for p in expected]


@pytest.mark.slow
def test_torch_export_round_trip(checkpoint: Path, tmp_path: Path) -> None:
    path, difference = exporting.export(checkpoint, "torch_export", tmp_path / "tiny.pt2", check_images=[])
    assert path == tmp_path / "tiny.pt2" and difference is not None and difference <= TOLERANCE
    extra = {exporting.METADATA_FILE: ""}
    module = torch.export.load(path, extra_files=extra).module()
    classifier = load_classifier(checkpoint)
    assert json.loads(extra[exporting.METADATA_FILE]) == exporting.metadata(classifier)
    images = torch.rand(5, 3, SIZE, SIZE)
    with torch.inference_mode():
        assert (module(images) - classifier.probabilities(images)).abs().max() <= TOLERANCE
        assert module(images[:1]).shape == (1, len(CLASSES))


def test_bad_format_output_and_missing_package_are_named(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(ValueError, match=r"format='tflite': choose one of onnx, torch_export"):
        exporting.export(checkpoint, "tflite")
    with pytest.raises(ValueError, match=r"output=.*model\.pt: a format=onnx file must end with \.onnx"):
        exporting.export(checkpoint, "onnx", tmp_path / "model.pt")
    with pytest.raises(ImportError, match=r'no_such_module.*pip install "emotionvision\[export\]"'):
        onnx.require("no_such_module")
    argv = ["emotionvision-export", f"ckpt_path={checkpoint}", "format=tflite", f"hydra.run.dir={tmp_path}"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit):
        export.main()
    assert "format='tflite': choose one of onnx, torch_export" in capsys.readouterr().err
