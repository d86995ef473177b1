"""Face detectors and face crops (emotionvision.data.faces).

Detector tests need the `faces` extra and skip without it; the real-photo test needs six_emotions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotionvision.data.faces import INSTALL_HINT, _require, crop_face, make_detector, to_grey_rgb
from emotionvision.data.images import load_rgb

# the module each detector needs (from the `faces` extra)
NEEDS = {"haar": "cv2", "mtcnn": "facenet_pytorch"}
# of the first REAL_IMAGES happy photos (sorted by name), at least this many get a face;
# measured: haar 8/10, mtcnn 10/10
REAL_IMAGES = 10
MIN_FOUND = {"haar": 6, "mtcnn": 8}


@pytest.fixture(scope="module", params=sorted(NEEDS))
def detector(request):
    """Each registered detector with its default settings, on one thread."""
    pytest.importorskip(NEEDS[request.param], reason=f"needs the faces extra: {INSTALL_HINT}")
    import torch

    torch.set_num_threads(1)
    return make_detector(request.param)


def coordinate_image(width: int = 200, height: int = 120) -> Image.Image:
    """Red = x, green = y of each pixel, so a crop's pixels tell where it was taken from."""
    y, x = np.mgrid[0:height, 0:width]
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8), "RGB")


def crop_origin(crop: Image.Image) -> tuple[int, int]:
    red, green = np.asarray(crop)[0, 0, :2]
    return int(red), int(green)


@pytest.mark.parametrize(
    "pixels",
    [
        np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8),
        np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1)),  # grey gradient, 2-D
        np.full((64, 64, 3), 128, dtype=np.uint8),
    ],
    ids=["noise", "gradient", "uniform"],
)
def test_no_face_in_images_without_faces(detector, pixels: np.ndarray) -> None:
    assert detector.detect(pixels) is None
    assert detector.detect_all(Image.fromarray(pixels)) == []


@pytest.mark.realdata
def test_real_happy_photos_get_faces(detector, six_emotions: Path) -> None:
    paths = sorted((six_emotions / "happy").iterdir())[:REAL_IMAGES]
    found = 0
    for path in paths:
        image = load_rgb(path)
        box = detector.detect(image)
        if box is not None:
            found += 1
            x0, y0, x1, y1 = box
            assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
            assert crop_face(image, box, margin=0.2).width > 0
    assert found >= MIN_FOUND[detector.name], f"{detector.name}: a face in {found}/{len(paths)} happy photos"


def test_settings_key_names_detector_and_settings(detector) -> None:
    key = detector.settings_key()
    assert key.startswith(f"{detector.name}:") and "max_side=640" in key
    assert make_detector(detector.name, max_side=320).settings_key() != key
    assert make_detector(detector.name).settings_key() == key


def test_unknown_detector_and_missing_module_name_the_fix() -> None:
    with pytest.raises(ValueError, match="haar"):
        make_detector("dlib")
    with pytest.raises(ImportError, match=r"emotionvision\[faces\]"):
        _require("emotionvision_no_such_module")


def test_crop_face_expands_by_margin_and_makes_square() -> None:
    image = coordinate_image()
    crop = crop_face(image, (80, 50, 120, 70), margin=0.25)  # 40 x 20 box centred at (100, 60)
    assert crop.size == (60, 60)  # longer side 40 grown by 25 % on each side
    assert crop_origin(crop) == (70, 30)
    assert crop_face(image, (80, 50, 120, 70), margin=0.0).size == (40, 40)


def test_crop_face_shifts_inside_the_borders() -> None:
    image = coordinate_image()
    top_left = crop_face(image, (0, 0, 20, 20), margin=0.5)
    assert top_left.size == (40, 40) and crop_origin(top_left) == (0, 0)
    bottom_right = crop_face(image, (180, 100, 200, 120), margin=0.5)
    assert bottom_right.size == (40, 40) and crop_origin(bottom_right) == (160, 80)


def test_crop_face_larger_than_image_is_clipped() -> None:
    image = coordinate_image(200, 120)
    crop = crop_face(image, (60, 20, 140, 100), margin=0.5)  # a 160 px square in a 120 px tall image
    assert crop.size == (160, 120) and crop_origin(crop) == (20, 0)
    assert crop_face(image, (0, 0, 200, 120), margin=1.0).size == (200, 120)


def test_crop_face_accepts_arrays_and_grey_replicates_channels() -> None:
    pixels = np.asarray(coordinate_image())
    crop = crop_face(pixels, (80, 50, 120, 70), margin=0.0)
    assert crop.mode == "RGB" and crop.size == (40, 40)
    grey = np.asarray(to_grey_rgb(crop))
    assert grey.shape == (40, 40, 3)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert grey.std() > 0
