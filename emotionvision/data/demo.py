"""The demo data set (`data=demo`, read by `sources.DemoSource`): a synthetic, learnable six-class
facial-emotion image set of drawn faces (`drawn_faces`), generated on first use; reproducible from its
seed."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from emotionvision.data.drawn_faces import EMOTIONS, render_face

log = logging.getLogger(__name__)

MARKER = ".complete"
JPEG_FRACTION = 0.125  # share of images stored as JPEG content (names stay *.png)
SUBJECT_STREAM = 7  # seeds a person's looks: (seed, SUBJECT_STREAM, person)


def _write_set(folder: Path, images_per_class: int, image_size: int, seed: int, subjects: int | None) -> None:
    """Draw and save every image of the set into `folder`/<emotion>/; with `subjects`, image i of each
    class shows person i % subjects (always drawn alike) and is named S<person>_<emotion>_<i>.png."""
    for label, emotion in enumerate(EMOTIONS):
        class_dir = folder / emotion
        class_dir.mkdir()
        for index in range(images_per_class):
            rng = np.random.default_rng((seed, label, index))
            person = None if subjects is None else index % subjects
            identity = None if person is None else np.random.default_rng((seed, SUBJECT_STREAM, person))
            image = render_face(emotion, image_size, rng, identity)
            prefix = "" if person is None else f"S{person:02d}_"
            path = class_dir / f"{prefix}{emotion}_{index:04d}.png"
            if rng.random() < JPEG_FRACTION:
                image.save(path, format="JPEG", quality=92)
            else:
                image.save(path, format="PNG")


def generate_demo_dataset(
    root: str | Path,
    images_per_class: int = 80,
    image_size: int = 96,
    seed: int = 0,
    subjects: int | None = None,
) -> Path:
    """Write class-per-folder images of drawn faces into root/<emotion>/ and return root.

    Files are named like `anger_0000.png` (with `subjects`, people drawn alike in every class:
    `S03_anger_0003.png`); most are PNG, about one in eight holds JPEG content. Idempotent: when
    root already holds a complete set (root/.complete exists) nothing is written, even if the
    arguments differ (a warning says so). The set is written into a
    temporary sibling folder and renamed into place at the end, so an interrupted run never
    leaves a half set; concurrent callers (e.g. one per DDP rank) all end with the same set.
    Raises FileExistsError if root exists, is not empty and holds no complete set.
    """
    root = Path(root)
    settings = {"images_per_class": images_per_class, "image_size": image_size, "seed": seed}
    settings |= {} if subjects is None else {"subjects": subjects}
    if _complete(root, settings):
        return root
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists, is not empty and holds no complete demo set")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        _write_set(staging, images_per_class, image_size, seed, subjects)
        (staging / MARKER).write_text(json.dumps(settings) + "\n")
        os.replace(staging, root)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and _complete(root, settings):
            return root  # another process (e.g. a DDP rank) put a complete set in place first
        raise
    log.info("Generated %d demo images per class in %s", images_per_class, root)
    return root


def _complete(root: Path, settings: dict[str, int | None]) -> bool:
    """True when root holds a finished set; warns when it was made with other settings."""
    marker = root / MARKER
    if not marker.is_file():
        return False
    if json.loads(marker.read_text()) != settings:
        log.warning("Keeping the demo set in %s, generated with other settings", root)
    return True
