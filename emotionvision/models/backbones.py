"""Backbone registry: a backbone is one registered builder (plus one YAML file in conf/model/).

Besides the registered torchvision architectures, `backbone: timm` with `name: <architecture>` builds any
model of the optional `timm` package (`timm.create_model`); see `build_timm`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.vision_transformer import interpolate_embeddings

from emotionvision.errors import UsageError
from emotionvision.models.vgg_fer import VggFer

DEFAULT_INPUT_SIZE = 224  # what a backbone is built for when no input size is given
TIMM = "timm"  # model.backbone of a timm architecture, named by model.name
TIMM_INSTALL_HINT = 'pip install "emotionvision[timm]"'
TIMM_NAMES_HINT = "python -c \"import timm; print(timm.list_models('convnext*'))\""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a torchvision model and which Linear layers are its class heads."""

    # build(pretrained, input_size) -> model with ImageNet (1000) heads, for images of input_size px
    build: Callable[[bool, int], nn.Module]
    heads: tuple[str, ...]  # attribute paths of the classifier layers to replace
    min_input_size: int = 32  # smallest image side the architecture accepts
    size_multiple: int = 1  # the image side must be a multiple of it (ViT: its patch size)
    # set_stem(model, stem) replaces the input stem (model.stem); None: only the standard stem
    set_stem: Callable[[nn.Module, str], None] | None = None
    # adapt_weights(model, state) -> the ImageNet state dict fitted to `model` as built for its input size
    # (ViT: the position embedding interpolated); used for model.weights_path and model.init_from
    adapt_weights: Callable[[nn.Module, dict], dict] | None = None
    # the class-activation-map candidate target layers of the built network (attribute paths, deepest
    # first; emotionvision/models/cam.py takes the deepest whose grid is at least 4 x 4 at the input size)
    # and the layout of their output: NCHW, NHWC (channels last) or tokens (B x N x C: leading class
    # tokens, then the patch grid row by row); () names none
    cam_layers: tuple[str, ...] = ()
    cam_layout: str = "NCHW"

    def accepts(self, input_size: int) -> bool:
        """Whether the architecture takes images of `input_size` px."""
        return input_size >= self.min_input_size and input_size % self.size_multiple == 0


# model.stem: the first layers' downsampling. standard: the architecture's own (ResNet: 7x7 stride-2
# convolution and max-pool, /4); small: a 3x3 stride-1 convolution without max-pool (/1, the FER2013
# literature's stem for 48 px faces; about 9x the standard cost); small_pool: 3x3 stride 1 and max-pool (/2)
STEMS = ("standard", "small", "small_pool")


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str,
    *heads: str,
    min_input_size: int = 32,
    size_multiple: int = 1,
    set_stem: Callable[[nn.Module, str], None] | None = None,
    adapt_weights: Callable[[nn.Module, dict], dict] | None = None,
    cam_layers: tuple[str, ...] = (),
    cam_layout: str = "NCHW",
) -> Callable:
    """Decorator registering `build(pretrained: bool, input_size: int) -> nn.Module` under `name`."""

    def decorator(build: Callable[[bool, int], nn.Module]) -> Callable[[bool, int], nn.Module]:
        BACKBONES[name] = BackboneSpec(
            build, heads, min_input_size, size_multiple, set_stem, adapt_weights, cam_layers, cam_layout
        )
        return build

    return decorator


def set_resnet_stem(model: nn.Module, stem: str) -> None:
    """A torchvision ResNet's `small` or `small_pool` stem (see STEMS); `standard` leaves it as built."""
    if stem == "standard":
        return
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    if stem == "small":
        model.maxpool = nn.Identity()


@register_backbone("resnet18", "fc", set_stem=set_resnet_stem, cam_layers=("layer4", "layer3"))
def resnet18(pretrained: bool, input_size: int) -> nn.Module:
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1 if pretrained else None
    return torchvision.models.resnet18(weights=weights)


# the auxiliary head needs a 17x17 feature map: 299 px input
@register_backbone("inception_v3", "fc", "AuxLogits.fc", min_input_size=299, cam_layers=("Mixed_7c",))
def inception_v3(pretrained: bool, input_size: int) -> nn.Module:
    weights = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1 if pretrained else None
    # transform_input converts ImageNet-normalised input to the [-1, 1] scale of Google's weights
    return torchvision.models.inception_v3(
        weights=weights, aux_logits=True, init_weights=not pretrained, transform_input=pretrained
    )


# the last ReLU of the last stage, before its max-pool (6 x 6 at 48 px), or of the stage before (12 x 12)
@register_backbone("vgg_fer", "fc", cam_layers=("features.26", "features.19"))
def vgg_fer(pretrained: bool, input_size: int) -> nn.Module:
    if pretrained:
        raise UsageError("vgg_fer has no ImageNet weights: set model.pretrained=false.")
    return VggFer()


@register_backbone("convnext_tiny", "classifier.2", cam_layers=("features.7", "features.5"))
def convnext_tiny(pretrained: bool, input_size: int) -> nn.Module:
    weights = torchvision.models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1 if pretrained else None
    return torchvision.models.convnext_tiny(weights=weights)


@register_backbone("efficientnet_b0", "classifier.1", cam_layers=("features.8", "features.5"))
def efficientnet_b0(pretrained: bool, input_size: int) -> nn.Module:
    weights = torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1 if pretrained else None
    return torchvision.models.efficientnet_b0(weights=weights)


@register_backbone("mobilenet_v3_large", "classifier.3", cam_layers=("features.16", "features.12"))
def mobilenet_v3_large(pretrained: bool, input_size: int) -> nn.Module:
    weights = torchvision.models.MobileNet_V3_Large_Weights.IMAGENET1K_V1 if pretrained else None
    return torchvision.models.mobilenet_v3_large(weights=weights)


def resize_vit_embeddings(model: nn.Module, state: dict) -> dict:
    """`state` (a torchvision ViT's, e.g. ImageNet's at 224 px) with its position embedding interpolated
    to the patch grid of `model` (built for another image size); unchanged where the grids agree."""
    if "encoder.pos_embedding" not in state:
        return state
    return interpolate_embeddings(model.image_size, model.patch_size, state)


# the patch grid is image_size / 16 per side (48 px: 3 x 3 patches). CAM layer: the input of the last
# attention (the class token reads the patch tokens there; after it, they no longer reach the head)
@register_backbone(
    "vit_b_16",
    "heads.head",
    size_multiple=16,
    adapt_weights=resize_vit_embeddings,
    cam_layers=("encoder.layers.encoder_layer_11.ln_1",),
    cam_layout="tokens",
)
def vit_b_16(pretrained: bool, input_size: int) -> nn.Module:
    model = torchvision.models.vit_b_16(image_size=input_size)
    if pretrained:  # torchvision's weights=... accepts only 224 px: load them and resize instead
        state = torchvision.models.ViT_B_16_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        model.load_state_dict(resize_vit_embeddings(model, state))
    return model


# four stages that halve the 4 x 4-patch grid three times: an image side that is a multiple of 32 keeps
# every patch merge exact (Swin's 7 x 7 attention windows pad a smaller grid)
@register_backbone("swin_t", "head", size_multiple=32, cam_layers=("norm", "features.5"), cam_layout="NHWC")
def swin_t(pretrained: bool, input_size: int) -> nn.Module:
    weights = torchvision.models.Swin_T_Weights.IMAGENET1K_V1 if pretrained else None
    return torchvision.models.swin_t(weights=weights)


def check_input_size(name: str, input_size: int) -> None:
    """UsageError naming data.image_size and a size to set, where backbone `name` cannot take `input_size`."""
    spec = BACKBONES[name]
    if spec.accepts(input_size):
        return
    if input_size < spec.min_input_size:
        smallest = -(-spec.min_input_size // spec.size_multiple) * spec.size_multiple
        raise UsageError(
            f"{name} needs images of at least {spec.min_input_size} px, got {input_size}: "
            f"set data.image_size={smallest} (or more)."
        )
    lower = input_size // spec.size_multiple * spec.size_multiple
    upper = lower + spec.size_multiple
    sizes = f"{lower} or {upper}" if lower >= spec.min_input_size else str(upper)
    raise UsageError(
        f"{name} needs data.image_size to be a multiple of {spec.size_multiple}, got {input_size}: "
        f"set data.image_size={sizes}."
    )


def smallest_input_size(name: str, wanted: int) -> int:
    """The smallest image side of at least `wanted` px that backbone `name` accepts."""
    spec = BACKBONES[name]
    size = max(wanted, spec.min_input_size)
    return -(-size // spec.size_multiple) * spec.size_multiple


def build_backbone(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    weights_path: str | None = None,
    input_size: int | None = None,
    stem: str = "standard",
    architecture: str | None = None,
) -> nn.Module:
    """The registered model with `num_classes` outputs on every head, built for `input_size` px images.

    `pretrained` downloads torchvision's ImageNet weights; `weights_path` loads a local state dict
    of the ImageNet model instead (as saved by `torch.save(model.state_dict(), FILE)`).
    `input_size`, when given, is checked against the architecture (check_input_size). `stem` (STEMS)
    replaces the input stem after the weights are loaded: its new first convolution starts from random
    weights. `architecture` (model.name) is the timm model that `name` "timm" builds (build_timm).
    """
    if name == TIMM:
        if stem != "standard":
            raise UsageError(f"model=timm has no model.stem={stem}; it has the standard stem only.")
        size = input_size if input_size is not None else DEFAULT_INPUT_SIZE
        return build_timm(architecture, num_classes, pretrained, weights_path, size)
    if name not in BACKBONES:
        raise UsageError(f"Unknown backbone '{name}' (model.backbone); known: {sorted([*BACKBONES, TIMM])}.")
    if architecture is not None:
        raise UsageError(
            f"model.name={architecture} names a timm model: set model=timm (or model.name=null)."
        )
    spec = BACKBONES[name]
    if stem not in STEMS:
        raise UsageError(f"Unknown model.stem '{stem}'; known: {list(STEMS)}.")
    if stem != "standard" and spec.set_stem is None:
        raise UsageError(f"{name} has no model.stem={stem}; it has the standard stem only.")
    if input_size is not None:
        check_input_size(name, input_size)
    size = input_size if input_size is not None else smallest_input_size(name, DEFAULT_INPUT_SIZE)
    model = (
        _download_pretrained(lambda: spec.build(True, size), name) if pretrained else spec.build(False, size)
    )
    if weights_path is not None:
        load_local_weights(model, Path(weights_path), spec.adapt_weights)
    if spec.set_stem is not None:
        spec.set_stem(model, stem)
    for head in spec.heads:
        parent_name, _, attribute = head.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old: nn.Linear = getattr(parent, attribute)
        setattr(parent, attribute, nn.Linear(old.in_features, num_classes))
    return model


def build_timm(
    architecture: str | None, num_classes: int, pretrained: bool, weights_path: str | None, input_size: int
) -> nn.Module:
    """`timm.create_model(architecture, pretrained=..., num_classes=...)`: any timm architecture
    (`timm.list_models()`), with `num_classes` outputs. `weights_path` is a local file of the weights
    that `pretrained` would download for that name (a .safetensors, .pth or .bin state dict, loaded
    strictly through timm's `pretrained_cfg_overlay=dict(file=...)`); its classifier is then replaced.
    Architectures with a fixed input size (ViTs, Swin, ...) are built for `input_size` (`img_size`;
    timm resamples the position embeddings of their weights)."""
    timm = _import_timm()
    if not architecture:
        raise UsageError(
            f"model=timm needs model.name=<a timm architecture>, e.g. model.name=convnext_nano; "
            f"list them with {TIMM_NAMES_HINT}."
        )
    if not timm.is_model(architecture):
        raise UsageError(
            f"Unknown timm model '{architecture}' (model.name); list the names with {TIMM_NAMES_HINT}."
        )
    config = timm.models.get_pretrained_cfg(architecture)
    options = {"img_size": input_size} if config is not None and config.fixed_input_size else {}
    if weights_path is not None:
        if not Path(weights_path).is_file():
            raise UsageError(f"model.weights_path {weights_path} does not exist.")
        # with the file's own class count timm loads it strictly (with another, it skips any mismatch)
        classes = config.num_classes if config is not None and config.num_classes else 1000
        overlay = {"file": str(weights_path)}
        try:
            model = timm.create_model(
                architecture, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=classes, **options
            )
        except (RuntimeError, ValueError, KeyError, OSError) as error:
            message = str(error).splitlines()[0] if str(error) else repr(error)
            raise UsageError(f"{weights_path} does not fit timm model {architecture}: {message}") from error
        model.reset_classifier(num_classes)
        return model
    options["num_classes"] = num_classes
    if pretrained:
        return _download_pretrained(
            lambda: timm.create_model(architecture, pretrained=True, **options), architecture
        )
    return timm.create_model(architecture, **options)


def _import_timm():
    try:
        return importlib.import_module("timm")
    except ImportError as error:
        raise UsageError(f"model=timm needs the timm package: {TIMM_INSTALL_HINT}.") from error


def head_names(backbone: str, model: nn.Module) -> tuple[str, ...]:
    """The attribute paths of the class heads of `model`, a built `backbone` (a timm model: its
    `get_classifier()` modules)."""
    if backbone != TIMM:
        return BACKBONES[backbone].heads
    classifiers = model.get_classifier()
    classifiers = classifiers if isinstance(classifiers, tuple) else (classifiers,)
    names = {id(module): name for name, module in model.named_modules()}
    return tuple(names[id(module)] for module in classifiers)


def body_modules(model: nn.Module, heads: Iterable[str]) -> list[nn.Module]:
    """The layers of `model` without its heads, as Lightning's finetuning callbacks take them (they
    freeze each module's own parameters): every leaf module, and for a module with children that also
    holds parameters of its own (a ViT's class token and position embedding, a Swin block's position-bias
    table) a childless module holding just those parameters."""
    heads = tuple(heads)
    modules = []
    for name, module in model.named_modules():
        if any(name == head or name.startswith(f"{head}.") for head in heads):
            continue
        if not any(module.children()):
            modules.append(module)
        elif own := dict(module.named_parameters(recurse=False)):
            holder = nn.Module()
            for key, parameter in own.items():
                holder.register_parameter(key, parameter)
            modules.append(holder)
    return modules


def _download_pretrained(build: Callable[[], nn.Module], name: str) -> nn.Module:
    try:
        return build()
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise RuntimeError(
            f"Could not download ImageNet weights for {name} ({error}). Without internet, download "
            f"them elsewhere, save the state dict to a file and pass model.pretrained=false "
            f"model.weights_path=FILE."
        ) from error


def load_local_weights(
    model: nn.Module, path: Path, adapt: Callable[[nn.Module, dict], dict] | None = None
) -> None:
    """Load a state dict file (safely: tensors only) into an ImageNet-headed model, fitted to it by
    `adapt(model, state)` where given (BackboneSpec.adapt_weights)."""
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
        model.load_state_dict(adapt(model, state) if adapt is not None else state)
    except RuntimeError as error:
        raise UsageError(f"{path} does not match the backbone's ImageNet architecture: {error}") from error
