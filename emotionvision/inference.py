"""Inference with a trained checkpoint, an ensemble of checkpoints or an exported ONNX file:
`Predictor` and the predictions file.

From Python: `Predictor("run/checkpoints/best-epoch007.ckpt").predict(["photo.jpg", "folder/"], top_k=3)`.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torchvision.transforms.v2.functional import to_dtype

from emotionvision.atomic import atomic_open, write_text
from emotionvision.data.cache import decode_image
from emotionvision.data.faces import FaceCrop
from emotionvision.data.images import (
    DECODE_ERRORS,
    DEFAULT_MAX_IMAGE_PIXELS,
    find_inputs,
    skip_reason,
)
from emotionvision.errors import UsageError
from emotionvision.models.classifier import EmotionClassifier
from emotionvision.models.ensemble import Ensemble, checkpoint_paths, load_checkpoints
from emotionvision.models.tta import check_tta
from emotionvision.outputs import check_prediction_output

if TYPE_CHECKING:
    from emotionvision.models.onnx import OnnxClassifier

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """'auto' is CUDA when available, else the CPU; any other name is passed to torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(ckpt_path: str | Path | Sequence[str | Path]) -> EmotionClassifier | Ensemble | OnnxClassifier:
    """The classifier of a .ckpt checkpoint, an onnxruntime session of an exported .onnx file
    (`emotionvision-export`; class names and preprocessing come from its metadata), or the ensemble of
    several checkpoints (a list, or a sweep's folder: `checkpoint_paths`)."""
    paths = checkpoint_paths(ckpt_path)
    if len(paths) == 1 and paths[0].suffix == ".onnx":
        from emotionvision.models.onnx import OnnxClassifier

        return OnnxClassifier(paths[0])
    return load_checkpoints(paths)


@dataclass
class Prediction:
    """The top labels of one file, most probable first; `error` says why a file was not read."""

    path: str
    labels: list[str]
    probabilities: list[float]
    error: str | None = None


class Predictor:
    """A checkpoint's classifier (or an ensemble's, or an ONNX file's) with its own preprocessing
    (class names, input size, mean/std, face crop) and the test-time augmentation `tta` (none | flip
    | ten_crop)."""

    def __init__(
        self,
        ckpt_path: str | Path | Sequence[str | Path],
        device: str = "auto",
        batch_size: int = 32,
        tta: str = "none",
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.tta = check_tta(tta)
        self.model = load_model(ckpt_path).to(resolve_device(device))
        self.class_names: list[str] = self.model.class_names
        self.input_size: int = self.model.hparams.input_size
        self.face_crop = FaceCrop.from_settings(self.model.hparams.get("face_crop"))
        self.batch_size = batch_size
        self.max_image_pixels = max_image_pixels

    def decode(self, path: Path) -> torch.Tensor:
        """The uint8 (3, S, S) tensor training makes of an image file (S = the input size; its face
        crop where the model was trained on face crops). Raises as `decode_image` does, e.g. for more
        than `max_image_pixels` pixels."""
        return decode_image(path, self.input_size, self.face_crop, self.max_image_pixels)[0]

    def predict(self, inputs: Iterable[str | Path], top_k: int = 1) -> list[Prediction]:
        """Top-k labels of every image file in `inputs` (files, or folders searched recursively).
        Unreadable files are logged and returned with `error` set, and so are the files of a folder that
        training leaves out (hidden files, links to folders, FIFOs and other non-files: `find_inputs`);
        a FIFO or other non-file is never opened."""
        if top_k < 1:
            raise UsageError(f"top_k must be at least 1 (got {top_k}).")
        entries = find_inputs(inputs)
        predictions = []
        for start in range(0, len(entries), self.batch_size):
            predictions += self._predict_batch(entries[start : start + self.batch_size], top_k)
        return predictions

    def _predict_batch(self, entries: list[tuple[Path, str | None]], top_k: int) -> list[Prediction]:
        pixels, errors = {}, {}
        files = [path for path, _ in entries]
        for path, unread in entries:
            if unread is not None:
                errors[path] = unread_error(path, unread)
                continue
            try:
                pixels[path] = self.decode(path)
            except DECODE_ERRORS as error:
                reason = skip_reason(error, path)
                log.warning("%s skipped (%s): %s", path, reason, error)
                errors[path] = f"{reason}: {error}"
        ranked = {}
        if pixels:
            images = to_dtype(
                torch.stack(list(pixels.values())).to(self.model.device), torch.float32, scale=True
            )
            with torch.inference_mode():
                probabilities = self.model.probabilities(images, self.tta).cpu()
            top = probabilities.topk(min(top_k, len(self.class_names)), dim=1)
            ranked = dict(
                zip(pixels, zip(top.indices.tolist(), top.values.tolist(), strict=True), strict=True)
            )
        predictions = []
        for path in files:
            if path in errors:
                predictions.append(Prediction(str(path), [], [], errors[path]))
            else:
                indices, probabilities = ranked[path]
                predictions.append(
                    Prediction(str(path), [self.class_names[i] for i in indices], probabilities)
                )
        return predictions


def unread_error(path: Path, reason: str) -> str:
    """The error of a prediction row for a file `find_inputs` gives a reason not to read."""
    if reason == "broken link":
        try:
            path.stat()
        except OSError as error:  # a missing target, or a loop of links
            return f"{reason}: {error}"
    if reason == "link to a folder (not followed)" and path.parent.resolve().is_relative_to(path.resolve()):
        return f"{reason}: it points to a folder above it, a loop"
    hints = {
        "hidden file": "left out as in training; name the file in inputs= to label it",
        "link to a folder (not followed)": "name the folder in inputs= to label its images",
        "not a regular file": "a FIFO, socket or device is not read",
    }
    return f"{reason}: {hints[reason]}" if reason in hints else reason


def write_predictions(predictions: list[Prediction], output: Path) -> None:
    """CSV (path, label_1, probability_1, ..., error) or JSON (a list of records), by suffix."""
    check_prediction_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".json":
        write_text(output, json.dumps([asdict(p) for p in predictions], indent=2))
        return
    top_k = max((len(p.labels) for p in predictions), default=0)
    ranks = range(1, top_k + 1)
    with atomic_open(output, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["path", *(f"{column}_{k}" for k in ranks for column in ("label", "probability")), "error"]
        )
        for prediction in predictions:
            ranked = [
                cell
                for label, probability in zip(prediction.labels, prediction.probabilities, strict=True)
                for cell in (label, f"{probability:.6f}")
            ]
            padding = [""] * (2 * top_k - len(ranked))
            writer.writerow([prediction.path, *ranked, *padding, prediction.error or ""])
