"""An exported ONNX classifier (`emotionvision-export`) on onnxruntime, as Predictor runs a checkpoint."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType

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


class OnnxClassifier:
    """An exported .onnx classifier run by onnxruntime (CPU), offering what `Predictor` uses of an
    `EmotionClassifier`: `class_names`, `hparams` (input_size, face_crop, mean, std, backbone from the
    metadata), `device`, `to` and `probabilities`."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"Model {path} does not exist (ckpt_path).")
        self.session = require("onnxruntime").InferenceSession(str(path), providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if "class_names" not in meta or "input_size" not in meta:
            raise UsageError(f"{path} has no class_names/input_size metadata: use emotionvision-export.")
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
