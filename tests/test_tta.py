"""Test-time augmentation (`tta=none|flip|ten_crop`): the views, the averages, and the mode in the test
of emotionvision-train, in emotionvision-eval's metrics.json and in emotionvision-predict."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from emotionvision.cli import evaluate, predict, train
from emotionvision.errors import UsageError
from emotionvision.inference import Predictor
from emotionvision.models import EmotionClassifier
from emotionvision.models.tta import crop_size, tta_views

CLASSES = ["anger", "happy", "sad"]
SIZE = 32


def run_app(main, *overrides: str) -> None:
    """Run a Hydra console entry point in this process with command-line `overrides`."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(sys, "argv", ["emotionvision", *overrides])
        main()


@pytest.fixture(scope="module")
def run_dir(seed_sweep: Path) -> Path:
    """A seconds-long emotionvision-train run (tta=flip) of the shared seed sweep."""
    return seed_sweep / "0"


@pytest.fixture(scope="module")
def checkpoint(run_dir: Path) -> Path:
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    return best


@pytest.fixture(scope="module")
def model() -> EmotionClassifier:
    torch.manual_seed(0)
    return EmotionClassifier("resnet18", CLASSES, input_size=SIZE).eval()


def test_ten_crop_is_the_corners_the_centre_and_their_mirrors() -> None:
    images = torch.rand(2, 3, 48, 48)
    assert crop_size(48, 48) == [44, 44] and crop_size(SIZE, SIZE) == [29, 29]  # round(S * 44 / 48)
    s, mirror = 44, images.flip(-1)
    corners = [
        images[..., :s, :s],  # top left
        images[..., :s, -s:],  # top right
        images[..., -s:, :s],  # bottom left
        images[..., -s:, -s:],  # bottom right
        images[..., 2:46, 2:46],  # centre
    ]
    # the mirror image's crops: the mirrored top right first (the mirror's top left), ...
    mirrored = [crop.flip(-1) for crop in (corners[1], corners[0], corners[3], corners[2], corners[4])]
    expected = [F.resize(crop, [48, 48], antialias=True) for crop in corners + mirrored]
    views = tta_views(images, "ten_crop")
    assert len(views) == 10
    for index, (view, crop) in enumerate(zip(views, expected, strict=True)):
        assert view.shape == images.shape, index  # back at the input size: any backbone takes it
        assert torch.equal(view, crop), index
    assert torch.equal(mirror[..., :s, :s], mirrored[0])
    assert [len(tta_views(images, mode)) for mode in ("none", "flip")] == [1, 2]


def test_flip_and_ten_crop_average_the_probabilities_of_their_views(model: EmotionClassifier) -> None:
    images = torch.rand(3, 3, SIZE, SIZE)
    with torch.inference_mode():
        plain = model.probabilities(images)
        mirrored = model.probabilities(images.flip(-1))
        flipped = model.probabilities(images, "flip")
        cropped = model.probabilities(images, "ten_crop")
        views = torch.stack([model(view).softmax(dim=1) for view in tta_views(images, "ten_crop")])
    assert torch.allclose(plain, model(images).softmax(dim=1).detach(), atol=1e-6)
    assert not torch.allclose(plain, mirrored)  # an untrained net is not mirror-symmetric
    assert torch.allclose(flipped, (plain + mirrored) / 2, atol=1e-6)
    assert torch.allclose(cropped, views.mean(dim=0), atol=1e-6)
    assert torch.allclose(cropped.sum(dim=1), torch.ones(3), atol=1e-6)


def test_an_unknown_mode_is_named(model: EmotionClassifier, compose_train, checkpoint: Path) -> None:
    with pytest.raises(UsageError, match=r"^tta=True: choose one of none \| flip \| ten_crop\.$"):
        model.probabilities(torch.rand(1, 3, SIZE, SIZE), True)
    with pytest.raises(UsageError, match="tta=mirror: choose one of"):
        Predictor(checkpoint, device="cpu", tta="mirror")
    cfg = compose_train(["tta=ten_crops"])
    with pytest.raises(UsageError, match="tta=ten_crops"):  # before anything is trained
        train.train(cfg)


def test_the_mode_is_in_metrics_json_after_training_and_eval(
    run_dir: Path, checkpoint: Path, tmp_path: Path
) -> None:
    trained = json.loads((run_dir / "metrics.json").read_text())
    assert trained["tta"] == "flip"
    run_app(
        evaluate.main,
        f"ckpt_path={checkpoint}",
        "tta=flip",
        f"paths.root_dir={run_dir.parent.parent}",  # the sweep's decode cache
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    evaluated = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert evaluated["tta"] == "flip"
    # the test after fit and the evaluation of its checkpoint average over the same views
    for name in ("test/acc", "test/macro_f1", "test/log_loss"):
        assert evaluated[name] == pytest.approx(trained[name], abs=1e-6), name


def test_predict_averages_over_the_views(checkpoint: Path, seed_sweep: Path, tmp_path: Path) -> None:
    happy = seed_sweep.parent / "faces" / "happy"
    files = sorted(happy.iterdir())[:4]
    predictor = Predictor(checkpoint, device="cpu", batch_size=3, tta="ten_crop")
    predictions = predictor.predict(files, top_k=3)
    images = torch.stack([predictor.decode(path) for path in files]).float() / 255
    with torch.inference_mode():
        expected = predictor.model.probabilities(images, "ten_crop")
        plain = predictor.model.probabilities(images)
    ranked = expected.sort(dim=1, descending=True).values
    assert torch.allclose(torch.tensor([p.probabilities for p in predictions]), ranked, atol=1e-6)
    assert not torch.allclose(expected, plain, atol=1e-4)
    output = tmp_path / "predictions.json"
    overrides = [f"ckpt_path={checkpoint}", f"inputs=[{happy}]", f"output={output}", "device=cpu"]
    run_app(predict.main, *overrides, "tta=flip", f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path}")
    rows = json.loads(output.read_text())
    assert len(rows) == 8 and all(row["labels"][0] in CLASSES for row in rows)
    with torch.inference_mode():
        flipped = predictor.model.probabilities(images, "flip").max(dim=1).values
    by_path = {row["path"]: row["probabilities"][0] for row in rows}
    assert [by_path[str(path)] for path in files] == pytest.approx(flipped.tolist(), abs=1e-6)
