"""Backbones (every registered one), the LightningModule's losses, local and pretrained weights."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from emotionvision.errors import UsageError
from emotionvision.models import BACKBONES, EmotionClassifier, build_backbone
from emotionvision.models.losses import CrossEntropy, FocalLoss

NUM_CLASSES = 3
# input sizes for CPU tests; Inception-V3's auxiliary head needs the full 299 px
INPUT_SIZE = {"inception_v3": 299}
DEFAULT_INPUT_SIZE = 64


@functools.cache
def classifier(backbone: str) -> EmotionClassifier:
    """Built once per backbone (Inception-V3 is slow on CPU); tests must not train it."""
    loss = CrossEntropy(class_weighted=True)
    return EmotionClassifier(
        backbone, ["a", "b", "c"], input_size=input_size(backbone), aux_weight=0.4, loss=loss
    )


def input_size(backbone: str) -> int:
    return INPUT_SIZE.get(backbone, DEFAULT_INPUT_SIZE)


def capture_outputs(module: nn.Module) -> list:
    """Record what `module` returns on each call (a forward hook: the real forward runs)."""
    outputs: list = []
    module.register_forward_hook(lambda _module, _inputs, output: outputs.append(output))
    return outputs


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_heads_and_training_loss(name: str) -> None:
    """num_classes outputs on every head; training_step = main loss + aux_weight x each aux loss,
    checked against cross-entropies computed by hand from the same outputs (one forward pass)."""
    module = classifier(name)
    for head in BACKBONES[name].heads:
        layer = module.model.get_submodule(head)
        assert isinstance(layer, nn.Linear) and layer.out_features == NUM_CLASSES, head
    module.loss.set_class_weights(torch.tensor([0.5, 1.0, 1.5]))  # as setup sets them for weighted_ce
    outputs = capture_outputs(module.model)
    size = input_size(name)
    images, targets = torch.rand(2, 3, size, size), torch.tensor([0, 2])
    module.train()
    with torch.no_grad():
        loss = module.training_step((images, targets, torch.arange(2)), 0)
    heads = outputs[-1] if isinstance(outputs[-1], tuple) else (outputs[-1],)
    assert len(heads) == len(BACKBONES[name].heads)  # in training every head answers
    for logits in heads:
        assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()
    weights = torch.tensor([0.5, 1.0, 1.5])
    losses = [F.cross_entropy(logits, targets, weight=weights) for logits in heads]
    torch.testing.assert_close(loss, losses[0] + 0.4 * sum(losses[1:], torch.tensor(0.0)))
    if len(losses) > 1:
        assert not torch.allclose(loss, losses[0])  # the aux loss really counts


def test_inception_eval_returns_main_logits_only() -> None:
    module = classifier("inception_v3")
    module.eval()
    images, targets = torch.rand(3, 3, 75, 75), torch.tensor([0, 1, 2])  # no aux head: 75 px will do
    with torch.no_grad():
        logits = module(images)
        module.validation_step((images, targets, torch.arange(3)), 0)
    assert isinstance(logits, torch.Tensor) and logits.shape == (3, NUM_CLASSES)
    computed = module.metrics["val_metrics"].compute()
    module.metrics["val_metrics"].reset()
    assert computed["confusion_matrix"].sum() == 3
    assert computed["recall"].shape == (NUM_CLASSES,)


def test_resnet_losses_match_cross_entropy_by_hand() -> None:
    torch.manual_seed(0)
    images, targets = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 2])
    weights = torch.tensor([2.0, 1.0, 0.5])
    weighted = EmotionClassifier("resnet18", ["a", "b", "c"], input_size=32, loss=CrossEntropy(True))
    weighted.loss.set_class_weights(weights)
    weighted.eval()  # batch norm on running statistics: the same logits on every call
    logits = weighted(images)
    with torch.no_grad():
        loss = weighted.training_step((images, targets, torch.arange(4)), 0)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets, weight=weights))

    plain = EmotionClassifier("resnet18", ["a", "b", "c"], loss=CrossEntropy(False, label_smoothing=0.1))
    plain.loss.set_class_weights(weights)  # ignored: class_weighted is false
    plain.eval()
    logits = plain(images)
    expected = F.cross_entropy(logits, targets, label_smoothing=0.1)
    torch.testing.assert_close(plain.loss(logits, targets), expected)


def test_normalisation_happens_inside_the_module() -> None:
    module = EmotionClassifier("resnet18", ["a", "b"], mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    module.eval()
    seen: list = []
    module.model.conv1.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    image = torch.full((1, 3, 32, 32), 0.75)
    with torch.no_grad():
        module(image)
    torch.testing.assert_close(seen[0], torch.ones(1, 3, 32, 32))  # (0.75 - 0.5) / 0.25


def test_unknown_backbone_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown backbone 'resnet19'.*'inception_v3'.*'resnet18'"):
        build_backbone("resnet19", NUM_CLASSES)


def test_weights_path_loads_an_imagenet_state_dict(tmp_path: Path) -> None:
    torch.manual_seed(1)
    imagenet = torchvision.models.resnet18()  # stands in for downloaded ImageNet weights
    path = tmp_path / "resnet18.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_backbone("resnet18", NUM_CLASSES, weights_path=str(path))
    torch.testing.assert_close(model.conv1.weight, imagenet.conv1.weight)
    torch.testing.assert_close(model.layer4[1].bn2.running_var, imagenet.layer4[1].bn2.running_var)
    assert model.fc.out_features == NUM_CLASSES  # the head is replaced after loading
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": imagenet.state_dict()}, wrapped)
    model = build_backbone("resnet18", NUM_CLASSES, weights_path=str(wrapped))
    torch.testing.assert_close(model.conv1.weight, imagenet.conv1.weight)
    module = EmotionClassifier("resnet18", ["a", "b"], weights_path=str(path))
    torch.testing.assert_close(module.model.conv1.weight, imagenet.conv1.weight)


def test_weights_path_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"model\.weights_path .*missing\.pth does not exist"):
        build_backbone("resnet18", NUM_CLASSES, weights_path=str(tmp_path / "missing.pth"))
    other = tmp_path / "other_architecture.pth"
    torch.save(nn.Linear(4, 2).state_dict(), other)
    with pytest.raises(ValueError, match=r"other_architecture\.pth does not match the backbone"):
        build_backbone("resnet18", NUM_CLASSES, weights_path=str(other))
    headed = tmp_path / "three_class_head.pth"  # a fine-tuned model, not an ImageNet-headed one
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), headed)
    with pytest.raises(ValueError, match=r"three_class_head\.pth does not match"):
        build_backbone("resnet18", NUM_CLASSES, weights_path=str(headed))


@pytest.mark.parametrize("kind", ["text", "tensor"])
def test_weights_path_that_is_no_state_dict_names_the_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.pth"
    if kind == "text":
        path.write_text("these are not weights\n")
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match=rf"{kind}\.pth"):
        build_backbone("resnet18", NUM_CLASSES, weights_path=str(path))


def test_pretrained_without_internet_explains_weights_path(tmp_path: Path, monkeypatch) -> None:
    """The weights URL points at a file that does not exist: nothing is downloaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.value
    monkeypatch.setattr(weights, "url", f"file://{tmp_path}/unreachable/resnet18-weights.pth")
    with pytest.raises(RuntimeError, match=r"Could not download ImageNet weights for resnet18") as error:
        build_backbone("resnet18", NUM_CLASSES, pretrained=True)
    assert "model.pretrained=false model.weights_path=FILE" in str(error.value)
    assert not list((tmp_path / "torch_home").rglob("*.pth"))


def test_configure_optimizers_with_and_without_scheduler() -> None:
    optimizer = functools.partial(torch.optim.AdamW, lr=0.01)
    module = EmotionClassifier("resnet18", ["a", "b"], optimizer=optimizer)
    config = module.configure_optimizers()
    assert set(config) == {"optimizer"}
    assert config["optimizer"].param_groups[0]["lr"] == 0.01
    scheduler = functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, mode="max")
    module = EmotionClassifier(
        "resnet18", ["a", "b"], monitor="val/acc", optimizer=optimizer, scheduler=scheduler
    )
    config = module.configure_optimizers()
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert config["lr_scheduler"]["monitor"] == "val/acc"
    assert config["lr_scheduler"]["scheduler"].optimizer is config["optimizer"]


def test_focal_loss_matches_a_hand_computation() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]])
    targets = torch.tensor([0, 2, 1])
    weights = torch.tensor([2.0, 1.0, 0.5])
    probabilities = logits.softmax(dim=1)
    total, weight_sum = 0.0, 0.0
    for row, target in zip(probabilities.tolist(), targets.tolist(), strict=True):
        p_true = row[target]
        total += weights[target].item() * (1 - p_true) ** 2 * -torch.log(torch.tensor(p_true)).item()
        weight_sum += weights[target].item()
    focal = FocalLoss(gamma=2.0, class_weighted=True)
    focal.set_class_weights(weights)
    torch.testing.assert_close(focal(logits, targets), torch.tensor(total / weight_sum))
    # gamma 0 is weighted cross-entropy; confident right answers count less as gamma grows
    plain = FocalLoss(gamma=0.0, class_weighted=True)
    plain.set_class_weights(weights)
    torch.testing.assert_close(plain(logits, targets), F.cross_entropy(logits, targets, weight=weights))
    assert FocalLoss(gamma=5.0)(logits, targets) < FocalLoss(gamma=1.0)(logits, targets)
    with pytest.raises(ValueError, match=r"loss\.gamma"):
        FocalLoss(gamma=-1.0)


def test_loss_state_stays_out_of_the_checkpoint() -> None:
    module = EmotionClassifier("resnet18", ["a", "b"], loss=FocalLoss(class_weighted=True))
    module.loss.set_class_weights(torch.tensor([1.0, 3.0]))
    assert not any(key.startswith("loss.") for key in module.state_dict())
    assert "loss" not in module.hparams
