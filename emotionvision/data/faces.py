"""Face detection and cropping, for face crops as a preprocessing choice.

Two detectors, registered by name in `DETECTORS`: `haar` (OpenCV's frontal-face Haar cascade) and
`mtcnn` (facenet-pytorch's MTCNN on CPU, weights shipped in the package). Both need the `faces`
extra, imported lazily; nothing is downloaded. `detect` maps an RGB image (PIL, or a uint8 array)
to the preferred face box (x0, y0, x1, y1) in its pixels, or None; `detect_all` lists every face.
Images are shrunk to `max_side` before detection (boxes come back in full-size pixels).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import numpy as np
from PIL import Image

from emotionvision.errors import UsageError

Box = tuple[int, int, int, int]
INSTALL_HINT = 'pip install "emotionvision[faces]"'
DETECT = "detect"  # FaceCrop.apply's box where no earlier detection is known


class FaceDetector(Protocol):
    """What a registered detector offers."""

    name: ClassVar[str]

    def detect(self, image: Image.Image | np.ndarray) -> Box | None: ...

    def detect_all(self, image: Image.Image | np.ndarray) -> list[Box]: ...

    def settings_key(self) -> str: ...


def _require(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(f"face detection needs the '{module}' module: {INSTALL_HINT}") from error


def _as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from a PIL image or a uint8 HxW / HxWx3 array."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    return image.convert("RGB")


class _Detector:
    """Shared parts: the settings key and the downscale to `max_side` before detection."""

    name: ClassVar[str]
    max_side: int

    def settings_key(self) -> str:
        """'name:setting=value,...', stable for a given configuration (for cache keys)."""
        settings = ",".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"{self.name}:{settings}"

    def detect(self, image: Image.Image | np.ndarray) -> Box | None:
        """The preferred face (see the class), or None."""
        boxes = self.detect_all(image)
        return boxes[0] if boxes else None

    def detect_all(self, image: Image.Image | np.ndarray) -> list[Box]:
        """Every face found, preferred first, clipped to the image."""
        image = _as_pil(image)
        width, height = image.size
        scale = min(1.0, self.max_side / max(width, height))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        boxes = []
        for _, (x0, y0, x1, y1) in sorted(self._detect(np.asarray(image)), key=lambda f: -f[0]):
            box = (max(0, round(x0 / scale)), max(0, round(y0 / scale)))
            box += (min(width, round(x1 / scale)), min(height, round(y1 / scale)))
            if box[2] > box[0] and box[3] > box[1]:
                boxes.append(box)
        return boxes

    def _detect(self, pixels: np.ndarray) -> list[tuple[float, tuple[float, float, float, float]]]:
        """(preference, (x0, y0, x1, y1)) of each face in the RGB uint8 `pixels`."""
        raise NotImplementedError


@dataclasses.dataclass
class HaarDetector(_Detector):
    """OpenCV frontal-face Haar cascade on the (histogram-equalised) grey image; largest face first."""

    name: ClassVar[str] = "haar"
    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_size: int = 30
    equalize: bool = True
    max_side: int = 640

    def __post_init__(self) -> None:
        cv2 = _require("cv2")
        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        if self._cascade.empty():
            raise RuntimeError("OpenCV's haarcascade_frontalface_default.xml could not be loaded")

    def _detect(self, pixels: np.ndarray) -> list[tuple[float, tuple[float, float, float, float]]]:
        grey = self._cv2.cvtColor(pixels, self._cv2.COLOR_RGB2GRAY)
        if self.equalize:
            grey = self._cv2.equalizeHist(grey)
        faces = self._cascade.detectMultiScale(
            grey, self.scale_factor, self.min_neighbors, minSize=(self.min_size, self.min_size)
        )
        return [(float(w * h), (x, y, x + w, y + h)) for x, y, w, h in faces]


@dataclasses.dataclass
class MtcnnDetector(_Detector):
    """facenet-pytorch MTCNN on CPU; faces scored >= `min_confidence`, the largest first
    (`select="largest"`) or the most confident first (`select="probability"`)."""

    name: ClassVar[str] = "mtcnn"
    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_confidence: float = 0.9
    select: str = "largest"
    max_side: int = 640

    def __post_init__(self) -> None:
        if self.select not in ("largest", "probability"):
            raise ValueError(f"select must be 'largest' or 'probability', not {self.select!r}")
        self.thresholds = tuple(float(t) for t in self.thresholds)  # one settings key for list or tuple
        facenet = _require("facenet_pytorch")
        self._mtcnn = facenet.MTCNN(
            min_face_size=self.min_face_size, thresholds=list(self.thresholds), keep_all=False, device="cpu"
        )

    def _detect(self, pixels: np.ndarray) -> list[tuple[float, tuple[float, float, float, float]]]:
        boxes, probs = self._mtcnn.detect(Image.fromarray(pixels))
        if boxes is None:
            return []
        faces = []
        for (x0, y0, x1, y1), prob in zip(boxes, probs, strict=True):
            if prob is not None and prob >= self.min_confidence:
                key = (x1 - x0) * (y1 - y0) if self.select == "largest" else prob
                faces.append((float(key), (float(x0), float(y0), float(x1), float(y1))))
        return faces


DETECTORS: dict[str, type[_Detector]] = {"haar": HaarDetector, "mtcnn": MtcnnDetector}


def make_detector(name: str, **settings: Any) -> FaceDetector:
    """The detector registered as `name`, built with `settings` (its dataclass fields)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose one of {sorted(DETECTORS)}")
    return DETECTORS[name](**settings)


def crop_face(image: Image.Image | np.ndarray, box: Box, margin: float = 0.2) -> Image.Image:
    """Crop a square around `box`: each side grows by `margin` x the box size, the shorter side is
    then widened to the longer one, and the square is shifted to lie inside the image (clipped
    only where it is larger than the image)."""
    image = _as_pil(image)
    width, height = image.size
    x0, y0, x1, y1 = box
    side = max(1, round(max(x1 - x0, y1 - y0) * (1 + 2 * margin)))
    left = min(max(0, round((x0 + x1 - side) / 2)), max(0, width - side))
    top = min(max(0, round((y0 + y1 - side) / 2)), max(0, height - side))
    return image.crop((left, top, min(width, left + side), min(height, top + side)))


def to_grey_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """Greyscale, replicated to three channels (so RGB models take it unchanged)."""
    return _as_pil(image).convert("L").convert("RGB")


@functools.cache
def _shared_detector(name: str) -> FaceDetector:
    """One detector per name and process (MTCNN loads its networks once)."""
    return make_detector(name)


@dataclasses.dataclass(frozen=True)
class FaceCrop:
    """Face crops as preprocessing (`data.face_crop`): the face `detector` finds is cropped with
    `margin` and, with `grey`, made greyscale (three equal channels, like FER2013's faces).
    `no_face`: an image without a face is used whole ('whole') or left out ('skip'). Detector None:
    no detection, whole images (greyscale with `grey`)."""

    detector: str | None = "mtcnn"
    margin: float = 0.2
    grey: bool = True
    no_face: str = "whole"

    def __post_init__(self) -> None:
        if self.detector is not None and self.detector not in DETECTORS:
            raise UsageError(f"data.face_crop.detector={self.detector!r}: choose one of {sorted(DETECTORS)}.")
        if self.no_face not in ("whole", "skip"):
            raise UsageError(f"data.face_crop.no_face={self.no_face!r}: choose 'whole' or 'skip'.")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> FaceCrop | None:
        """The face crop of `face_crop` settings (data.face_crop, or a checkpoint's hparams); None for
        none (whole images)."""
        return cls(**settings) if settings else None

    def key(self) -> str:
        """A short digest of everything that shapes the cached pixels (detector settings, margin, grey)."""
        fields = dataclasses.fields(DETECTORS[self.detector]) if self.detector else ()
        defaults = ",".join(f"{f.name}={f.default!r}" for f in fields)
        text = f"{self.detector}:{defaults}|margin={self.margin}|grey={self.grey}"
        return hashlib.sha1(text.encode()).hexdigest()[:10]

    def apply(self, image: Image.Image, box: Box | str | None = DETECT) -> tuple[Image.Image, Box | None]:
        """The face crop of an RGB image (the whole image where no face is found) and the face box:
        found by the detector (`box` DETECT), or the `box` a detection of this same image found before
        (None: no face)."""
        if box == DETECT:
            box = _shared_detector(self.detector).detect(image) if self.detector else None
        cropped = crop_face(image, box, self.margin) if box is not None else image
        return (to_grey_rgb(cropped) if self.grey else cropped), box
