"""Class-activation maps of a classifier (pytorch-grad-cam, the `explain` extra): where the model looks.

The target layer is the deepest of the backbone registry's candidates (`BackboneSpec.cam_layers` and
`cam_layout`; a timm model's last two feature stages) whose output grid is at least MIN_GRID x MIN_GRID
at the model's input size (at 48-64 px a ResNet's last stage is 2 x 2: too coarse). A run's report
gets `cam_by_class.png` (the mean map per true class over the class's mean image), `errors_cam.png` (the
most confident mistakes with their maps) and the faithfulness of the maps: the drop in the predicted
class's probability when the top 20% of each map is replaced by the image's mean colour, against a
random 20% (`deletion_drops`).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from functools import partial
from math import isqrt
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image
from torch import nn
from torch.nn.functional import interpolate

from emotionvision.atomic import atomic_open
from emotionvision.errors import UsageError
from emotionvision.models.backbones import BACKBONES, TIMM
from emotionvision.models.classifier import EmotionClassifier
from emotionvision.reporting.figures import image_grid_figure, mistake_caption
from emotionvision.reporting.run_report import MISTAKES_SHOWN, save_figures
from emotionvision.reporting.scores import confident_mistakes

if TYPE_CHECKING:
    from emotionvision.inference import Prediction, Predictor

log = logging.getLogger(__name__)

# explain= / callbacks.report.explain=: a pytorch-grad-cam class by name (EigenCAM needs no gradients)
METHODS = {"gradcam": "GradCAM", "eigencam": "EigenCAM"}
INSTALL_HINT = 'pip install "emotionvision[explain]"'
DELETED = 0.2  # the share of each image that the faithfulness test masks
# metrics.json's keys of the mean drops (`deletion_drops`): cam/deletion_drop_top20, ..._random20
DROP_KEYS = {name: f"cam/deletion_drop_{name}{round(100 * DELETED)}" for name in ("top", "random")}
BATCH_SIZE = 32
MIN_GRID = 4  # the smallest side of a target layer's output grid, where a candidate has it
OVERLAY_MIN_SIDE = 224  # predict's overlay PNGs are enlarged to at least this side


def tokens_to_maps(tokens: torch.Tensor) -> torch.Tensor:
    """B x N x C tokens (leading class or register tokens, then a square patch grid row by row) as
    B x C x h x w maps of the patch tokens."""
    side = isqrt(tokens.shape[1])
    grid = tokens[:, tokens.shape[1] - side * side :]
    return grid.reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)


def channels_last_to_maps(activations: torch.Tensor) -> torch.Tensor:
    """B x H x W x C activations (Swin) as B x C x H x W."""
    return activations.permute(0, 3, 1, 2)


RESHAPES: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
    "NCHW": None,
    "NHWC": channels_last_to_maps,
    "tokens": tokens_to_maps,
}


def check_method(method: str) -> None:
    """UsageError unless `method` names one of METHODS."""
    if method not in METHODS:
        raise UsageError(f"Unknown CAM method '{method}'; known: {sorted(METHODS)}.")


def check_explainable(model: nn.Module, method: str) -> None:
    """UsageError unless `model` is one checkpoint's classifier and `method` a known method."""
    check_method(method)
    _import_grad_cam()
    if not isinstance(model, EmotionClassifier):
        raise UsageError(
            f"Class-activation maps need one .ckpt checkpoint, not a {type(model).__name__} "
            f"(an ensemble or an .onnx file): set explain=false or name one checkpoint."
        )


class CamTarget(NamedTuple):
    """A CAM target layer of a classifier's network: its attribute path, the reshape of its output to
    B x C x h x w (None: it is one already) and its h x w grid at the model's input size."""

    name: str
    reshape: Callable | None
    grid: tuple[int, int]


def target_layer(model: EmotionClassifier) -> CamTarget:
    """The CAM target layer of the classifier's network: the deepest candidate whose grid is at least
    MIN_GRID x MIN_GRID at the model's input size, else the shallowest (one forward pass: find it once
    per report and hand it on)."""
    backbone = model.hparams.backbone
    if backbone == TIMM:
        names, layout = _timm_targets(model.model)
    else:
        spec = BACKBONES[backbone]
        if not spec.cam_layers:
            raise UsageError(
                f"Backbone {backbone} names no CAM target layer (register_backbone(..., cam_layers=...)): "
                f"set callbacks.report.explain=null."
            )
        names, layout = spec.cam_layers, spec.cam_layout
    grids = output_grids(model, names, RESHAPES[layout])
    name = next((name for name in names if min(grids[name]) >= MIN_GRID), names[-1])
    return CamTarget(name, RESHAPES[layout], grids[name])


def output_grids(
    model: EmotionClassifier, names: tuple[str, ...], reshape: Callable | None
) -> dict[str, tuple[int, int]]:
    """The h x w grid of the (reshaped) output of each layer `names` of the classifier's network, from
    one forward pass of a blank image of the model's input size (eval mode, restored after)."""
    grids: dict[str, tuple[int, int]] = {}

    def record(name: str, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        grids[name] = tuple((reshape(output) if reshape else output).shape[-2:])

    network, side = model.model, model.hparams.input_size
    hooks = [network.get_submodule(name).register_forward_hook(partial(record, name)) for name in names]
    was_training = model.training
    try:
        with torch.no_grad():
            network.eval()(torch.zeros(1, 3, side, side, device=model.device, dtype=model.dtype))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return grids


def describe_target(model: EmotionClassifier, method: str, target: CamTarget | None = None) -> str:
    """Which layer `method`'s maps of `model` come from (`target`, else `target_layer`), e.g. 'GradCAM on
    layer3 (4x4 at 64 px)'."""
    check_method(method)
    name, _, (height, width) = target or target_layer(model)
    return f"{METHODS[method]} on {name} ({height}x{width} at {model.hparams.input_size} px)"


def _timm_targets(network: nn.Module) -> tuple[tuple[str, ...], str]:
    """A timm model's last two feature stages (`feature_info`), deepest first, and their layout. A
    token model's class token reads the patch tokens in its last block, so its one layer is that block's
    input: the stage before."""
    stages = network.feature_info
    stages = [stage["module"] for stage in (stages.get_dicts() if hasattr(stages, "get_dicts") else stages)]
    layout = getattr(network, "output_fmt", "NCHW")
    if layout != "NHWC" and hasattr(network, "num_prefix_tokens"):
        return (stages[-2],), "tokens"
    return tuple(reversed(stages[-2:])), layout


def class_activation_maps(
    model: EmotionClassifier,
    images: torch.Tensor,
    classes: torch.Tensor,
    method: str = "gradcam",
    target: CamTarget | None = None,
) -> torch.Tensor:
    """N x H x W maps in [0, 1] of uint8 N x 3 x H x W `images` for class indices `classes` (each map
    scaled to its own maximum), by pytorch-grad-cam's `method` (METHODS). Runs with gradients even
    inside Lightning's inference mode; the model's train/eval mode is restored."""
    check_explainable(model, method)
    cam_class = getattr(_import_grad_cam(), METHODS[method])
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    name, reshape, _ = target or target_layer(model)
    layer = model.model.get_submodule(name)
    was_training = model.training
    maps = []
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        cam_class(model=model, target_layers=[layer], reshape_transform=reshape) as cam,
    ):
        for start in range(0, len(images), BATCH_SIZE):
            batch = images[start : start + BATCH_SIZE].to(model.device).float().div(255)
            # gradients reach the layer even where the backbone is frozen (finetune=linear_probe)
            batch.requires_grad_(True)
            targets = [ClassifierOutputTarget(int(c)) for c in classes[start : start + BATCH_SIZE]]
            maps.append(torch.from_numpy(cam(input_tensor=batch, targets=targets)))
    model.train(was_training)
    return torch.cat(maps) if maps else torch.zeros(0, *images.shape[2:])


def _import_grad_cam():
    try:
        return importlib.import_module("pytorch_grad_cam")
    except ImportError as error:
        raise UsageError(f"Class-activation maps need the grad-cam package: {INSTALL_HINT}.") from error


def top_mask(maps: torch.Tensor, share: float = DELETED) -> torch.Tensor:
    """N x H x W booleans: the `share` of each map's pixels with the highest values (ties broken by
    position, so exactly that many)."""
    flat = maps.flatten(1)
    count = round(share * flat.shape[1])
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, flat.topk(count, dim=1).indices, True)
    return mask.view_as(maps)


def random_maps(count: int, side: int, generator: torch.Generator) -> torch.Tensor:
    """`count` smooth random maps of `side` px: uniform noise on a grid of side/16 cells (at least 2)
    enlarged bilinearly, so a mask of their top pixels is made of blobs, as a CAM's is."""
    cells = max(2, side // 16)
    noise = torch.rand(count, 1, cells, cells, generator=generator)
    return interpolate(noise, size=(side, side), mode="bilinear", align_corners=False)[:, 0]


def deletion_drops(
    model: EmotionClassifier,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Per image, the drop in the probability of its class in `classes` when the top DELETED share of
    its map ('top'), and when a random DELETED share ('random': `random_maps`), of the uint8 image is
    replaced by the image's mean colour."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    masks = {"top": top_mask(maps), "random": top_mask(random_maps(len(images), images.shape[-1], generator))}
    with torch.no_grad():
        batch = images.to(model.device).float().div(255)
        chosen = classes.to(model.device).unsqueeze(1)
        before = model.probabilities(batch).gather(1, chosen)
        fill = batch.mean(dim=(2, 3), keepdim=True).expand_as(batch)
        return {
            name: (before - model.probabilities(torch.where(mask.to(model.device)[:, None], fill, batch)))
            .gather(1, chosen)
            .flatten()
            .cpu()
            for name, mask in masks.items()
        }


def overlay(image: np.ndarray, cam_map: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 `image` with the H x W map in [0, 1] drawn over it (pytorch-grad-cam's jet
    heat map, half and half)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    return show_cam_on_image(image.astype(np.float32) / 255, cam_map.astype(np.float32), use_rgb=True)


def cam_by_class_figure(
    image_sums: torch.Tensor, map_sums: torch.Tensor, counts: torch.Tensor, class_names: list[str], title: str
) -> Figure:
    """Per class with images (`counts`): the mean of its maps (sums C x H x W) over its mean image
    (sums C x 3 x H x W)."""
    panels, captions = [], []
    for index in torch.nonzero(counts).flatten().tolist():
        mean_image = (image_sums[index] / counts[index]).permute(1, 2, 0).round().byte().numpy()
        mean_map = map_sums[index] / map_sums[index].max().clamp_min(1e-7)
        panels.append(overlay(mean_image, mean_map.numpy()))
        captions.append(f"{class_names[index]} ({int(counts[index])} images)")
    return image_grid_figure(panels, captions, title, columns=min(4, max(1, len(panels))))


def summarise_maps(
    model: EmotionClassifier,
    image_of: Callable[[int], np.ndarray],
    classes: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
    keep: list[int],
    method: str,
    target: CamTarget,
) -> tuple[dict[str, float], torch.Tensor, torch.Tensor, dict[int, torch.Tensor]]:
    """The maps of images `image_of(i)` for `classes` (one per image), a batch at a time: the mean
    `deletion_drops` (keyed DROP_KEYS), the sums of the images and of the maps per true
    class (`targets`; num_classes x 3 x H x W, num_classes x H x W) and the maps of the images `keep`."""
    side = image_of(0).shape[0]
    image_sums, map_sums = torch.zeros(num_classes, 3, side, side), torch.zeros(num_classes, side, side)
    drops: dict[str, list[torch.Tensor]] = {name: [] for name in DROP_KEYS}
    kept = {}
    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(classes), BATCH_SIZE):
        members = torch.arange(start, min(start + BATCH_SIZE, len(classes)))
        images = torch.from_numpy(np.stack([image_of(i) for i in members.tolist()])).permute(0, 3, 1, 2)
        maps = class_activation_maps(model, images, classes[members], method, target)
        for name, values in deletion_drops(model, images, maps, classes[members], generator).items():
            drops[name].append(values)
        image_sums.index_add_(0, targets[members], images.float())
        map_sums.index_add_(0, targets[members], maps)
        kept |= {i: maps[i - start] for i in keep if start <= i < start + len(members)}
    means = {key: torch.cat(drops[name]).mean().item() for name, key in DROP_KEYS.items()}
    return means, image_sums, map_sums, kept


def missing_maps(model: nn.Module) -> str | None:
    """Why the report cannot draw the maps of `model` (None: it can)."""
    if not isinstance(model, EmotionClassifier):
        return f"a {type(model).__name__} (an ensemble) is no single model"
    if importlib.util.find_spec("pytorch_grad_cam") is None:
        return f"{INSTALL_HINT} adds them"
    backbone = model.hparams.backbone
    if backbone != TIMM and not BACKBONES[backbone].cam_layers:
        return f"backbone {backbone} names no target layer (register_backbone(..., cam_layers=...))"
    return None


def write_cam_report(
    output_dir: Path,
    split: str,
    model: nn.Module,
    paths: list[str],
    targets: torch.Tensor,
    probabilities: torch.Tensor,
    class_names: list[str],
    image_of: Callable[[int], np.ndarray],
    method: str = "gradcam",
    tensorboard_dir: Path | None = None,
) -> dict:
    """cam_by_class.png and errors_cam.png (also in TensorBoard: `save_figures` into `tensorboard_dir`)
    of the maps of each image's predicted class, computed a batch at a time; returns the mean
    faithfulness numbers (`deletion_drops`, keyed DROP_KEYS) and the method for metrics.json.
    `image_of(i)` is image i as H x W x 3 uint8, as the model sees it. A model that is not one
    checkpoint's classifier gets no maps (`missing_maps` says why, in a warning)."""
    if reason := missing_maps(model):
        log.warning("No class-activation maps in the report: %s.", reason)
        return {}
    target = target_layer(model)
    log.info(describe_target(model, method, target))
    confidence, predicted = probabilities.max(dim=1)
    shown = confident_mistakes(probabilities, targets, MISTAKES_SHOWN)
    results, image_sums, map_sums, shown_maps = summarise_maps(
        model, image_of, predicted, targets, len(class_names), shown, method, target
    )
    label = METHODS[method]
    captions = [
        mistake_caption(paths[i], class_names[targets[i]], class_names[predicted[i]], float(confidence[i]))
        for i in shown
    ]
    title = f"{split}: mean {label} map of the predicted class per true class, over the class's mean image"
    figures = {
        "cam_by_class": cam_by_class_figure(
            image_sums, map_sums, torch.bincount(targets, minlength=len(class_names)), class_names, title
        ),
        "errors_cam": image_grid_figure(
            [overlay(image_of(i), shown_maps[i].numpy()) for i in shown],
            captions,
            f"{split}: the {len(shown)} most confident mistakes and where the model looked ({label})",
        ),
    }
    save_figures(figures, output_dir, f"report/{split}", tensorboard_dir)
    log.info(
        "%s maps: masking the top %.0f%% of each map drops the predicted class's probability by %.3f on "
        "average, a random %.0f%% by %.3f",
        label, 100 * DELETED, results[DROP_KEYS["top"]], 100 * DELETED, results[DROP_KEYS["random"]],
    )  # fmt: skip
    return results | {"cam/method": method}


def write_overlays(
    model: nn.Module,
    pixels: list[torch.Tensor],
    classes: list[int],
    paths: list[Path],
    method: str = "gradcam",
    target: CamTarget | None = None,
) -> None:
    """Write each uint8 3 x S x S image of `pixels` with the map of its class in `classes` drawn over
    it, as a PNG file at `paths` (enlarged to at least OVERLAY_MIN_SIDE px)."""
    images = torch.stack(pixels).cpu()
    maps = class_activation_maps(model, images, torch.tensor(classes), method, target)
    for image, cam_map, path in zip(images, maps, paths, strict=True):
        drawn = Image.fromarray(overlay(image.permute(1, 2, 0).numpy(), cam_map.numpy()))
        scale = max(1, -(-OVERLAY_MIN_SIDE // drawn.width))
        drawn = drawn.resize((drawn.width * scale, drawn.height * scale), Image.Resampling.BICUBIC)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as handle:
            drawn.save(handle, format="PNG")


def explain_predictions(
    predictor: Predictor, predictions: list[Prediction], folder: Path, method: str = "gradcam"
) -> list[Path]:
    """The overlay PNG (`write_overlays`) of the top label of each read file of `predictions`, in
    `folder` as <row>_<file stem>.png (row: its row in the predictions file, from 1); returns them."""
    check_explainable(predictor.model, method)
    target = target_layer(predictor.model)
    log.info(describe_target(predictor.model, method, target))
    width = len(str(len(predictions)))
    rows = [(row, p) for row, p in enumerate(predictions, start=1) if p.error is None]
    written = []
    for start in range(0, len(rows), predictor.batch_size):
        chunk = rows[start : start + predictor.batch_size]
        paths = [folder / f"{row:0{width}d}_{Path(p.path).stem}.png" for row, p in chunk]
        pixels = [predictor.decode(Path(p.path)) for _, p in chunk]
        classes = [predictor.class_names.index(p.labels[0]) for _, p in chunk]
        write_overlays(predictor.model, pixels, classes, paths, method, target)
        written += paths
    return written
