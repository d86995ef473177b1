"""Backbone registry: a backbone is one registered builder (plus one YAML file in conf/model/)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from emotionvision.errors import UsageError


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a torchvision model and which Linear layers are its class heads."""

    build: Callable[[bool], nn.Module]  # build(pretrained) -> model with ImageNet (1000) heads
    heads: tuple[str, ...]  # attribute paths of the classifier layers to replace
    min_input_size: int = 32  # smallest image side the architecture accepts


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(name: str, *heads: str, min_input_size: int = 32) -> Callable:
    """Decorator registering `build(pretrained: bool) -> nn.Module` under `name`."""

    def decorator(build: Callable[[bool], nn.Module]) -> Callable[[bool], nn.Module]:
        BACKBONES[name] = BackboneSpec(build, heads, min_input_size)
        return build

    return decorator


@register_backbone("resnet18", "fc")
def resnet18(pretrained: bool) -> nn.Module:
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1 if pretrained else None
    return torchvision.models.resnet18(weights=weights)


# the auxiliary head needs a 17x17 feature map: 299 px input
@register_backbone("inception_v3", "fc", "AuxLogits.fc", min_input_size=299)
def inception_v3(pretrained: bool) -> nn.Module:
    weights = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1 if pretrained else None
    # transform_input converts ImageNet-normalised input to the [-1, 1] scale of Google's weights
    return torchvision.models.inception_v3(
        weights=weights, aux_logits=True, init_weights=not pretrained, transform_input=pretrained
    )


def build_backbone(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    weights_path: str | None = None,
    input_size: int | None = None,
) -> nn.Module:
    """The registered model with `num_classes` outputs on every head.

    `pretrained` downloads torchvision's ImageNet weights; `weights_path` loads a local state dict
    of the ImageNet model instead (as saved by `torch.save(model.state_dict(), FILE)`).
    `input_size`, when given, is checked against the architecture's minimum.
    """
    if name not in BACKBONES:
        raise UsageError(f"Unknown backbone '{name}' (model.backbone); known: {sorted(BACKBONES)}.")
    spec = BACKBONES[name]
    if input_size is not None and input_size < spec.min_input_size:
        raise UsageError(
            f"{name} needs images of at least {spec.min_input_size} px, got {input_size}: "
            f"set data.image_size={spec.min_input_size} (or more)."
        )
    model = _download_pretrained(spec, name) if pretrained else spec.build(False)
    if weights_path is not None:
        load_local_weights(model, Path(weights_path))
    for head in spec.heads:
        parent_name, _, attribute = head.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old: nn.Linear = getattr(parent, attribute)
        setattr(parent, attribute, nn.Linear(old.in_features, num_classes))
    return model


def _download_pretrained(spec: BackboneSpec, name: str) -> nn.Module:
    try:
        return spec.build(True)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise RuntimeError(
            f"Could not download ImageNet weights for {name} ({error}). Without internet, download "
            f"them elsewhere, save the state dict to a file and pass model.pretrained=false "
            f"model.weights_path=FILE."
        ) from error


def load_local_weights(model: nn.Module, path: Path) -> None:
    """Load a state dict file (safely: tensors only) into an ImageNet-headed model."""
    if not path.is_file():
        raise UsageError(f"model.weights_path {path} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, or pickled objects other than tensors
        raise UsageError(f"model.weights_path {path} is not a PyTorch state dict file ({error}).") from error
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UsageError(f"model.weights_path {path} holds a {type(state).__name__}, not a state dict.")
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise UsageError(f"{path} does not match the backbone's ImageNet architecture: {error}") from error
