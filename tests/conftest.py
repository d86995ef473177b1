"""Shared fixtures: tiny generated image trees, the real six_emotions set, Hydra composition."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
# pytest-xdist (`pytest -n auto`, as CI runs it) runs one worker per core; each worker, and every process
# it starts, gets an equal share of torch threads, so that workers do not oversubscribe the cores
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores // _workers)))
SIX_EMOTIONS = Path(
    os.environ.get("EMOTIONVISION_SIX_EMOTIONS", REPO_ROOT.parent / "shared" / "datasets" / "six_emotions")
)


def class_image(label: int, rng: np.random.Generator, size: int = 24) -> Image.Image:
    """Noise plus a class tint (channel label % 3 raised, brighter for higher labels).

    The tint is constant across the image, so it is learnable but leaves the difference hash
    (which compares horizontally adjacent grey pixels) to the noise: no two images of a tree
    are near-duplicates unless made so on purpose.
    """
    pixels = rng.uniform(0, 150, (size, size, 3))
    pixels[..., label % 3] += 60 + 15 * (label // 3)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def make_image_tree(
    root: Path,
    counts: dict[str, int] | None = None,
    size: int = 24,
    seed: int = 0,
    fmt: str = "PNG",
) -> Path:
    """Write root/<class>/<class>_<i>.png images (`counts` images per class) and return root."""
    counts = counts if counts is not None else {"anger": 10, "happy": 10, "sad": 10}
    suffix = ".png" if fmt == "PNG" else ".jpg"
    for label, (name, count) in enumerate(sorted(counts.items())):
        class_dir = root / name
        class_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng((seed, label))
        for index in range(count):
            class_image(label, rng, size).save(class_dir / f"{name}_{index:03d}{suffix}", format=fmt)
    return root


def subject_tree(root: Path, subjects: int = 12, per_subject: int = 2) -> Path:
    """root/<class>/S<subject>_<n>.png for classes anger, happy, sad: every subject shows every class
    `per_subject` times (file names encode subjects, as in CK+)."""
    for label, name in enumerate(("anger", "happy", "sad")):
        (root / name).mkdir(parents=True)
        rng = np.random.default_rng(label)
        for subject in range(subjects):
            for n in range(per_subject):
                class_image(label, rng).save(root / name / f"S{subject:03d}_{n}.png")
    return root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with more `slow` tests first, each file's tests in their order: xdist hands whole files
    (`--dist loadfile`) to workers in collection order, so the long files start early and the short
    ones fill in at the end, rather than one worker finishing a long file alone."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.path])  # a stable sort: files stay together, in order


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `gpu` skip without CUDA (the `slow` and `realdata` markers only select)."""
    if item.get_closest_marker("gpu") is not None:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU (marked gpu)")


@pytest.fixture(scope="session")
def make_tree() -> Callable[..., Path]:
    """The `make_image_tree` helper (tests get helpers as fixtures: tests/ is not a package)."""
    return make_image_tree


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module's working directory for console-script runs, its images/ three tinted classes of 16
    images (a module may define its own `work`)."""
    cwd = tmp_path_factory.mktemp("work")
    make_image_tree(cwd / "images", {"anger": 16, "happy": 16, "sad": 16})
    return cwd


@pytest.fixture(scope="session")
def make_subject_tree() -> Callable[..., Path]:
    """The `subject_tree` helper."""
    return subject_tree


@pytest.fixture(scope="session")
def six_emotions() -> Path:
    """The real six_emotions folder; the test is skipped where it is absent."""
    if not SIX_EMOTIONS.is_dir():
        pytest.skip(
            f"real data set six_emotions not found at {SIX_EMOTIONS} (set EMOTIONVISION_SIX_EMOTIONS)"
        )
    return SIX_EMOTIONS


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A fresh decode-cache directory, so no test depends on earlier state."""
    return tmp_path / "cache"


@pytest.fixture
def compose_train() -> Iterator[Callable]:
    """compose(overrides, return_hydra_config=False) of the installed `train` config."""
    from hydra import compose, initialize_config_module

    import emotionvision.cli.train  # noqa: F401  (registers the config's resolvers)

    with initialize_config_module(config_module="emotionvision.conf", version_base="1.3"):

        def _compose(overrides: list[str], return_hydra_config: bool = False):
            return compose(config_name="train", overrides=overrides, return_hydra_config=return_hydra_config)

        yield _compose


@pytest.fixture(scope="session")
def quick_run_overrides() -> list[str]:
    """Overrides for a seconds-long training run on a tiny tree (32 px, one batch per stage)."""
    return [
        "data.image_size=32",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "++trainer.limit_train_batches=1",
        "++trainer.limit_val_batches=1",
        "++trainer.num_sanity_val_steps=0",
        "++trainer.enable_model_summary=false",
        "logger=csv",
    ]


@pytest.fixture(scope="session")
def seed_sweep(tmp_path_factory: pytest.TempPathFactory, quick_run_overrides: list[str]) -> Path:
    """`emotionvision-train -m seed=0,1 tta=flip`: two seconds-long runs (jobs 0/ and 1/) on one split
    of a tiny tree, each tested after fit with flip test-time augmentation; trained once for
    test_tta.py and test_ensembles.py. Its parent folder is their `paths.root_dir` (decode cache)."""
    import sys

    from emotionvision.cli import train

    work = tmp_path_factory.mktemp("seed_sweep")
    tree = make_image_tree(work / "faces", {"anger": 8, "happy": 8, "sad": 8}, size=40)
    argv = ["emotionvision-train", "-m", "seed=0,1", "tta=flip", "data=folder", f"data.root={tree}"]
    argv += [*quick_run_overrides, "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(sys, "argv", [*argv, f"paths.root_dir={work}", f"hydra.sweep.dir={work}/sweep"])
        train.main()
    return work / "sweep"
