"""Class-activation maps (emotionvision/models/cam.py): every backbone's target layer, maps that find
the evidence on a set whose class is a coloured patch, their faithfulness, the report's figures and
`emotionvision-predict explain=true`."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from emotionvision.cli import predict
from emotionvision.errors import UsageError
from emotionvision.models.backbones import BACKBONES, smallest_input_size
from emotionvision.models.cam import (
    DROP_KEYS,
    check_explainable,
    class_activation_maps,
    deletion_drops,
    describe_target,
    target_layer,
    tokens_to_maps,
    write_cam_report,
)
from emotionvision.models.classifier import EmotionClassifier

pytest.importorskip("pytorch_grad_cam")

CLASSES = ["blue", "green", "red"]
COLOURS = torch.tensor([[30, 30, 230], [30, 230, 30], [230, 30, 30]], dtype=torch.uint8)
SIZE, PATCH, MARGIN = 32, 8, 4


def patch_set(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 images of grey noise with one PATCH x PATCH square of its class's colour at a random
    position; their labels and the squares' top-left corners (row, column)."""
    generator = torch.Generator().manual_seed(seed)
    grey = torch.randint(0, 256, (count, 1, SIZE, SIZE), generator=generator, dtype=torch.uint8)
    images = grey.expand(count, 3, SIZE, SIZE).clone()
    labels = torch.randint(0, len(CLASSES), (count,), generator=generator)
    corners = torch.randint(0, SIZE - PATCH + 1, (count, 2), generator=generator)
    for image, label, (row, column) in zip(images, labels, corners.tolist(), strict=True):
        image[:, row : row + PATCH, column : column + PATCH] = COLOURS[label].view(3, 1, 1)
    return images, labels, corners


@pytest.fixture(scope="module")
def patch_model() -> EmotionClassifier:
    """vgg_fer trained in-process on 192 patch images (3 epochs, seconds) until it tells the classes."""
    torch.manual_seed(0)
    model = EmotionClassifier("vgg_fer", CLASSES, input_size=SIZE)
    images, labels, _ = patch_set(192, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(3):
        for batch in torch.randperm(len(images)).split(16):
            loss = torch.nn.functional.cross_entropy(model(images[batch].float() / 255), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="module")
def test_patches(patch_model: EmotionClassifier) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels, corners = patch_set(32, seed=1)
    with torch.no_grad():
        predicted = patch_model.probabilities(images.float() / 255).argmax(dim=1)
    assert (predicted == labels).float().mean() >= 0.9  # the model reads the patches
    return images, labels, corners


@pytest.mark.parametrize("method", ["gradcam", "eigencam"])
def test_the_map_peaks_on_the_patch(patch_model: EmotionClassifier, test_patches: tuple, method: str) -> None:
    images, labels, corners = test_patches
    maps = class_activation_maps(patch_model, images, labels, method)
    assert maps.shape == (len(images), SIZE, SIZE)
    peak = maps.flatten(1).argmax(dim=1)
    rows, columns = peak // SIZE, peak % SIZE
    near = [
        (top - MARGIN <= row < top + PATCH + MARGIN) and (left - MARGIN <= column < left + PATCH + MARGIN)
        for row, column, (top, left) in zip(rows.tolist(), columns.tolist(), corners.tolist(), strict=True)
    ]
    assert sum(near) >= 0.8 * len(images), (
        f"{method}: the peak lies on the patch in {sum(near)}/{len(images)}"
    )


def test_masking_the_maps_top_fifth_hurts_more_than_a_random_fifth(
    patch_model: EmotionClassifier, test_patches: tuple
) -> None:
    images, labels, _ = test_patches
    maps = class_activation_maps(patch_model, images, labels)
    drops = deletion_drops(patch_model, images, maps, labels)
    top, random = drops["top"].mean().item(), drops["random"].mean().item()
    assert top > 0.3 and top > 2 * random, (top, random)


def test_the_report_draws_the_maps(
    patch_model: EmotionClassifier, test_patches: tuple, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="emotionvision.models.cam")
    images, labels = test_patches[0][:8], test_patches[1][:8]
    probabilities = torch.full((len(images), len(CLASSES)), 0.1)
    probabilities[torch.arange(len(images)), (labels + torch.arange(len(images)) % 2) % len(CLASSES)] = 0.8
    paths = [f"image_{i}.png" for i in range(len(images))]
    results = write_cam_report(
        tmp_path, "test", patch_model, paths, labels, probabilities, CLASSES,
        lambda i: images[i].permute(1, 2, 0).numpy(), "gradcam",
    )  # fmt: skip
    assert set(results) == {"cam/deletion_drop_top20", "cam/deletion_drop_random20", "cam/method"}
    for name in ("cam_by_class.png", "errors_cam.png"):
        with Image.open(tmp_path / name) as figure:
            assert figure.width > 300
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert "GradCAM on features.26 (4x4 at 32 px)" in caplog.text


def test_a_backbone_without_a_layer_leaves_the_maps_out_with_a_warning(
    patch_model: EmotionClassifier,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    monkeypatch.setitem(BACKBONES, "vgg_fer", replace(BACKBONES["vgg_fer"], cam_layers=()))
    images, labels, _ = patch_set(2, seed=3)
    probabilities = torch.eye(len(CLASSES))[labels]
    report = write_cam_report(
        tmp_path, "test", patch_model, ["a.png", "b.png"], labels, probabilities, CLASSES,
        lambda i: images[i].permute(1, 2, 0).numpy(),
    )  # fmt: skip
    assert report == {} and not (tmp_path / "cam_by_class.png").exists()
    assert "backbone vgg_fer names no target layer" in caplog.text


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_names_a_layer_that_gives_input_sized_maps(backbone: str) -> None:
    size = smallest_input_size(backbone, 32)
    torch.manual_seed(0)
    model = EmotionClassifier(backbone, CLASSES, input_size=size).eval()
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    maps = class_activation_maps(model, images, torch.tensor([0, 2]), "gradcam")
    assert maps.shape == (2, size, size)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


@pytest.mark.parametrize(("size", "layer", "grid"), [(64, "layer3", (4, 4)), (224, "layer4", (7, 7))])
def test_the_deepest_layer_with_a_4x4_grid_is_the_target(size: int, layer: str, grid: tuple) -> None:
    model = EmotionClassifier("resnet18", CLASSES, input_size=size).train()
    assert target_layer(model)[::2] == (layer, grid)  # at 64 px layer4 is 2 x 2: layer3 instead
    assert model.training  # the shape-finding forward pass in eval mode restores the mode
    assert describe_target(model, "eigencam") == f"EigenCAM on {layer} ({grid[0]}x{grid[1]} at {size} px)"


@pytest.mark.parametrize(
    ("architecture", "size", "layer"),
    [
        ("resnet18", 64, "layer3"),
        ("vit_tiny_patch16_224", 64, "blocks.10"),
        ("swin_tiny_patch4_window7_224", 64, "layers.2"),
    ],
)
def test_timm_models_get_their_deepest_feature_stage_with_a_4x4_grid(
    architecture: str, size: int, layer: str
) -> None:
    pytest.importorskip("timm")
    model = EmotionClassifier("timm", CLASSES, input_size=size, name=architecture).eval()
    assert target_layer(model)[0] == layer
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8)
    maps = class_activation_maps(model, images, torch.tensor([0, 1]), "gradcam")
    assert maps.shape == (2, size, size) and torch.isfinite(maps).all()


def test_tokens_become_the_patch_grid_row_by_row() -> None:
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)  # a class token, then 2 x 2 patches
    maps = tokens_to_maps(tokens)
    assert maps.shape == (2, 3, 2, 2)
    assert torch.equal(maps[1, :, 1, 0], tokens[1, 1 + 2])  # row 1, column 0: the third patch token


def test_a_training_runs_report_has_the_maps(seed_sweep: Path) -> None:
    run = seed_sweep / "0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["cam/method"] == "gradcam"
    assert all(-1 <= metrics[key] <= 1 for key in DROP_KEYS.values())  # probability differences, not NaN
    assert (run / "cam_by_class.png").is_file() and (run / "errors_cam.png").is_file()


def test_predict_explain_writes_an_overlay_per_read_input(
    patch_model: EmotionClassifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = tmp_path / "patch.ckpt"
    torch.save(
        {"state_dict": patch_model.state_dict(), "hyper_parameters": dict(patch_model.hparams)}, checkpoint
    )
    folder = tmp_path / "photos"
    folder.mkdir()
    images, _, _ = patch_set(3, seed=2)
    for index, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"photo_{index}.png")
    (folder / "broken.png").write_text("not an image")
    output = tmp_path / "out" / "predictions.csv"
    overrides = [
        f"ckpt_path={checkpoint}",
        f"inputs={folder}",
        f"output={output}",
        "explain=true",
        "device=cpu",
    ]
    monkeypatch.setattr(sys, "argv", ["emotionvision-predict", *overrides, f"hydra.run.dir={tmp_path}/run"])
    predict.main()
    overlays = sorted(path.name for path in (output.parent / "cam").iterdir())
    assert overlays == ["2_photo_0.png", "3_photo_1.png", "4_photo_2.png"]  # row 1: broken.png, unread
    with Image.open(output.parent / "cam" / overlays[0]) as overlay:
        assert overlay.size == (224, 224) and overlay.mode == "RGB"
    with pytest.raises(UsageError, match=r"one \.ckpt checkpoint"):
        check_explainable(torch.nn.Linear(2, 2), "gradcam")
    with pytest.raises(UsageError, match="Unknown CAM method 'sobel'"):
        check_explainable(patch_model, "sobel")
