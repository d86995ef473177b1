"""An exported ONNX classifier (`emotionvision-export`) on onnxruntime, as Predictor runs a checkpoint."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from emotionvision.errors import UsageError
from emotionvision.models.tta import tta_views

INSTALL_HINT = 'pip install "emotionvision[export]"'


def require(module: str) -> ModuleType:
    """The imported `module`, or an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"ONNX export and inference need the '{module}' module: {INSTALL_HINT}") from error


def session_options(runtime: ModuleType) -> Any:
    """onnxruntime's session options: torch's intra-op thread count (the commands' `threads` key,
    `set_torch_threads`) rather than every core, and worker threads that sleep rather than spin
    between runs, leaving the cores to the decode between batches and to other processes (spinning
    made batch 1 1.35-1.6x slower on a shared 2-core machine: benchmarks/predict_speed.py).
    Graph optimisation stays at onnxruntime's default, all levels."""
    options = runtime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxClassifier:
    """An exported .onnx classifier run by onnxruntime (CPU), offering what `Predictor` uses of an
    `EmotionClassifier`: `class_names`, `hparams` (input_size, face_crop, mean, std, backbone from the
    metadata), `device`, `to` and `probabilities`."""

    def __init__(self, path: str | Path, option: str = "ckpt_path") -> None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"Model {path} does not exist ({option}).")
        runtime = require("onnxruntime")
        try:
            self.session = runtime.InferenceSession(
                str(path), session_options(runtime), providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
            reason = str(error).splitlines()[0].split("failed:")[-1].strip() if str(error) else repr(error)
            raise UsageError(
                f"{option}: {path} is not an ONNX model onnxruntime can load ({reason}): export one with "
                "emotionvision-export, or pass a .ckpt checkpoint."
            ) from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "class_names" not in meta or "input_size" not in meta:
            raise UsageError(f"{path} has no class_names/input_size metadata: use emotionvision-export.")
        try:
            self.class_names: list[str] = json.loads(meta["class_names"])
            # attribute access and .get, as a LightningModule's hparams
            self.hparams = OmegaConf.create(
                {
                    "input_size": int(meta["input_size"]),
                    "face_crop": json.loads(meta["face_crop"]) if meta.get("face_crop") else None,
                    "mean": json.loads(meta.get("mean", "null")),
                    "std": json.loads(meta.get("std", "null")),
                    "backbone": meta.get("backbone"),
                }
            )
        except ValueError as error:  # JSONDecodeError, a non-numeric input_size
            raise UsageError(
                f"{option}: {path} has damaged metadata ({error}): export it again with emotionvision-export."
            ) from None
        if not isinstance(self.class_names, list):
            raise UsageError(
                f"{option}: {path} has damaged metadata (class_names is no list): export it again with "
                "emotionvision-export."
            )
        outputs = self.session.get_outputs()[0].shape
        width = outputs[-1] if outputs else None
        if isinstance(width, int) and width != len(self.class_names):
            raise UsageError(
                f"{option}: {path} disagrees with itself: its output has {width} columns (classes) but its "
                f"metadata name {len(self.class_names)} classes {self.class_names}: export it again with "
                "emotionvision-export."
            )
        self.input_name = self.session.get_inputs()[0].name
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> OnnxClassifier:
        """Itself: onnxruntime runs on the CPU whatever `device` (images are moved to `self.device`)."""
        return self

    def probabilities(self, images: torch.Tensor, tta: str = "none") -> torch.Tensor:
        """Class probabilities of float images in [0, 1], averaged over the views of `tta` (the same
        test-time augmentation as a checkpoint's: emotionvision/models/tta.py)."""
        return torch.stack([self._run(view) for view in tta_views(images, tta)]).mean(dim=0)

    def _run(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])
