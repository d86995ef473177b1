"""A checkpoint's classifier as an ONNX (or torch.export .pt2) file mapping float images in [0, 1] to
class probabilities, with its class names and preprocessing in the file's metadata, checked against
PyTorch with onnxruntime (`emotionvision-export`: emotionvision/cli/export.py). `emotionvision-predict
ckpt_path=...onnx` runs the file (`OnnxClassifier`). ONNX needs the `export` extra (onnx, onnxscript for
torch's exporter, onnxruntime).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms.v2.functional import to_dtype

from emotionvision.data.cache import decode_image
from emotionvision.data.faces import FaceCrop
from emotionvision.data.images import DECODE_ERRORS, find_files
from emotionvision.errors import UsageError
from emotionvision.models.classifier import EmotionClassifier, load_classifier
from emotionvision.models.onnx import OnnxClassifier, require
from emotionvision.outputs import export_path

log = logging.getLogger(__name__)

METADATA_FILE = "metadata.json"  # the torch.export extra file holding the metadata
MAX_CHECK_IMAGES = 16
INPUT_NOTE = (
    "images: float32 RGB in [0, 1], N x 3 x input_size x input_size: the image (its face crop where "
    "face_crop is set, greyscale where face_crop.grey) with its shorter side resized to input_size, then "
    "center-cropped to input_size; normalisation (mean, std) happens inside the model. "
    "probabilities: N x len(class_names), softmax, in the order of class_names."
)


class ProbabilityModel(nn.Module):
    """The classifier's `probabilities` (eval mode, no TTA) as `forward`: what the exported file computes."""

    def __init__(self, classifier: EmotionClassifier) -> None:
        super().__init__()
        self.classifier = classifier
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.probabilities(images)


def metadata(classifier: EmotionClassifier) -> dict[str, str]:
    """Class names and preprocessing of `classifier`, as the strings ONNX metadata_props hold."""
    hparams = classifier.hparams
    face_crop = hparams.get("face_crop")
    return {
        "class_names": json.dumps(list(classifier.class_names)),
        "input_size": str(hparams.input_size),
        "mean": json.dumps([float(v) for v in hparams.mean]),
        "std": json.dumps([float(v) for v in hparams.std]),
        "face_crop": json.dumps(dict(face_crop)) if face_crop else "",
        "backbone": str(hparams.backbone),
        "preprocessing": INPUT_NOTE,
    }


def _example(classifier: EmotionClassifier) -> torch.Tensor:
    size = classifier.hparams.input_size
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))


BATCH_AXIS = {"images": {0: torch.export.Dim("batch")}}  # the exported files take any batch size


def export_onnx(classifier: EmotionClassifier, path: Path, opset: int) -> None:
    """Write `classifier` as ONNX (torch.export-based exporter) with its metadata."""
    for module in ("onnx", "onnxscript"):
        require(module)
        logging.getLogger(module).setLevel(logging.WARNING)  # the exporter's passes log at INFO
    logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    onnx_program = torch.onnx.export(
        ProbabilityModel(classifier),
        (_example(classifier),),
        dynamo=True,
        dynamic_shapes=BATCH_AXIS,
        input_names=["images"],
        output_names=["probabilities"],
        opset_version=opset,
        verbose=False,
    )
    onnx_program.model.metadata_props.update(metadata(classifier))
    onnx_program.save(path, external_data=False)


def export_program(classifier: EmotionClassifier, path: Path) -> None:
    """Write `classifier` as a torch.export program (.pt2; `torch.export.load(path).module()` runs it),
    metadata as an extra JSON file."""
    model, example = ProbabilityModel(classifier), (_example(classifier),)
    program = torch.export.export(model, example, dynamic_shapes=BATCH_AXIS)
    torch.export.save(program, path, extra_files={METADATA_FILE: json.dumps(metadata(classifier))})


def run_exported(path: Path, images: torch.Tensor) -> torch.Tensor:
    """Probabilities of `images` computed by the exported file (onnxruntime, or torch.export.load)."""
    if path.suffix == ".onnx":
        return OnnxClassifier(path).probabilities(images)
    with torch.no_grad():
        return torch.export.load(path).module()(images)


def check_batch(paths: Sequence[str | Path], size: int, face_crop: FaceCrop | None) -> torch.Tensor:
    """Float images of the first MAX_CHECK_IMAGES readable files of `paths` (files or folders), decoded
    as in training and prediction; four seeded random images where `paths` is empty."""
    if not paths:
        return torch.rand(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    pixels = []
    for path in find_files(paths):
        try:
            pixels.append(decode_image(path, size, face_crop)[0])
        except DECODE_ERRORS as error:
            log.warning("Unreadable check image %s skipped: %s", path, error)
        if len(pixels) == MAX_CHECK_IMAGES:
            break
    if not pixels:
        raise UsageError(f"check_images={list(map(str, paths))} holds no readable image.")
    return to_dtype(torch.stack(pixels), torch.float32, scale=True)


def max_difference(classifier: EmotionClassifier, path: Path, images: torch.Tensor) -> float:
    """Max abs difference between the probabilities of the exported file and of `classifier`."""
    with torch.inference_mode():
        expected = classifier.eval().probabilities(images)
    return float((run_exported(path, images) - expected).abs().max())


def export(
    ckpt_path: str | Path,
    format: str = "onnx",
    output: str | Path | None = None,
    opset: int = 18,
    check: bool = True,
    check_images: Sequence[str | Path] = (),
    tolerance: float = 1e-4,
) -> tuple[Path, float | None]:
    """Export the checkpoint's classifier; with `check`, compare the file with PyTorch on `check_images`
    (RuntimeError above `tolerance`). Returns the file written and the max abs difference (None unchecked)."""
    path = export_path(ckpt_path, format, output)
    classifier = load_classifier(ckpt_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "onnx":
        export_onnx(classifier, path, opset)
    else:
        export_program(classifier, path)
    if not check:
        return path, None
    face_crop = FaceCrop.from_settings(classifier.hparams.get("face_crop"))
    images = check_batch(check_images, classifier.hparams.input_size, face_crop)
    difference = max_difference(classifier, path, images)
    log.info("%s vs PyTorch on %d images: max abs difference %.2e", path, len(images), difference)
    if difference > tolerance:
        raise RuntimeError(f"{path} differs from the checkpoint by {difference:.2e} > tolerance={tolerance}.")
    return path, difference
