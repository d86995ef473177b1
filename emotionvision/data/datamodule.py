"""LightningDataModule: a data source's images, grouped, split, decoded once and served as tensors."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from emotionvision.data.cache import DecodeCache, DecodedImage
from emotionvision.data.dataset import ImageTensorDataset, decode_labelled, make_loader
from emotionvision.data.faces import FaceCrop
from emotionvision.data.grouping import Grouping
from emotionvision.data.images import DEFAULT_MAX_IMAGE_PIXELS, SkipReport
from emotionvision.data.manifest import SPLITS, write_manifest
from emotionvision.data.settings import check_data_settings
from emotionvision.data.sources import DataSource, FolderSource, ManifestSource, Sample
from emotionvision.data.splitting import LEFT_OUT, Splitter, log_split_summary
from emotionvision.errors import UsageError
from emotionvision.reporting.figures import face_sheet, save_png
from emotionvision.rundir import RunDir

log = logging.getLogger(__name__)

SourceFactory = Callable[..., DataSource]
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # images, targets, dataset indices


def default_num_workers() -> int:
    """Loader processes for this machine: none on 2 cores or fewer (there the workers took cores from
    the compute threads: benchmarks/train_speed.py measured 0 workers fastest), else half the cores,
    at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores // 2)


def make_source(
    root: str | Path, class_map: Mapping | None, split_file: str | Path | None, source: SourceFactory | None
) -> DataSource:
    """`source` (a `DataSource` class or partial; FolderSource where None) of `root`; a split manifest
    (`split_file`) instead where one is given."""
    if split_file is not None:
        return ManifestSource(split_file, class_map)
    return (source or FolderSource)(root, class_map)


class EmotionDataModule(pl.LightningDataModule):
    """The images `source` lists under `root` (data/sources.py), in the classes `classes` picks; near-
    duplicates and subjects grouped (data/grouping.py: `near_duplicate_bits`, `group_by`); split by
    class and group (data/splitting.py: `split_ratios`, `split_seed`, or fold `fold` of `folds`);
    decoded once at `image_size` into the cache (data/cache.py) and served with `augmentation` on
    training images (each image in the loader); `batch_augmentation` (float images in [0, 1], a
    batch in, the batch out, each image drawn its own way: kornia's) augments training batches on
    their device; `mixing` (a factory given the number of classes, data/mixing.py) then mixes them,
    their targets becoming rows of class probabilities. `split_file` reuses
    a split manifest instead of splitting.

    Written beside `manifest_path` (a run's split.csv: path, label, split, group): skipped.csv (path,
    reason: hidden, broken links, non-images, unreadable, more than `max_image_pixels` pixels, None:
    no limit) and, with face crops, faces.png.
    """

    def __init__(
        self,
        root: str | Path,
        classes: list[str] | None = None,
        class_map: dict[str, str] | None = None,
        split_ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
        split_seed: int = 42,
        split_file: str | Path | None = None,
        manifest_path: str | Path | None = None,
        near_duplicate_bits: int | None = 20,
        group_by: str | None = None,
        folds: int | str | None = None,
        fold: int | None = None,
        image_size: int = 224,
        cache_dir: str | Path = "data/cache",
        batch_size: int = 32,
        num_workers: int | None = None,
        augmentation: v2.Transform | None = None,
        batch_augmentation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        mixing: Callable[[int], v2.Transform] | None = None,
        train_label_shuffle_seed: int | None = None,
        face_crop: dict | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        source: SourceFactory | None = None,
    ) -> None:
        super().__init__()
        # checked before the source lists (or the demo generates) anything
        numbers = (split_seed, near_duplicate_bits, image_size, batch_size, num_workers, max_image_pixels)
        split_ratios = check_data_settings(split_ratios, *numbers)
        self.source = make_source(root, class_map, split_file, source)
        self.root = self.source.root
        self.class_names = self.source.pick_classes(list(classes) if classes else None)
        self.grouping = Grouping(near_duplicate_bits, group_by)
        self.splitter = Splitter(split_ratios, split_seed, folds, fold)
        self.manifest_path = Path(manifest_path) if manifest_path else None
        self.image_size = image_size
        self.cache_dir = Path(cache_dir)
        self.face_crop = FaceCrop.from_settings(face_crop)
        self.max_image_pixels = max_image_pixels
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.augmentation = augmentation
        self.batch_augmentation = batch_augmentation or None  # batch_augmentation=none: an empty node
        self.mixing = mixing(len(self.class_names)) if mixing else None  # mixing=none: an empty node
        self.train_label_shuffle_seed = train_label_shuffle_seed
        self.skipped = SkipReport()
        self.datasets: dict[str, ImageTensorDataset] = {}
        self.manifest: list[tuple[str, str, str, int]] = []

    def prepare_data(self) -> None:
        """Decode every image not yet in the cache (once, on one process)."""
        samples = self.source.samples(SkipReport(), self.class_names)
        self._cache().get_many([sample.path for sample in samples], SkipReport())

    def setup(self, stage: str | None = None) -> None:
        """List, decode, group and split the images; write split.csv; build the datasets."""
        if self.datasets:
            return
        samples, labels, subjects, images = self._decoded()
        groups, splits = self._split(samples, labels, subjects, images)
        kept = self._leave_out([sample.path for sample in samples], splits == LEFT_OUT)
        paths, images = [samples[i].path for i in kept], [images[i] for i in kept]
        labels, groups, splits = labels[kept], groups[kept], splits[kept]
        ratios = self.splitter.target_ratios(self.source.presets_splits, splits)
        log_split_summary(labels, groups, splits, ratios, self.class_names)
        self.manifest = [
            (str(path), self.class_names[label], split, int(group), *self._box_column(image))
            for path, label, split, group, image in zip(paths, labels, splits, groups, images, strict=True)
        ]
        self._write_manifest()
        self._write_face_sheet(images)
        self._build_datasets(images, paths, labels, splits)

    def fold_count(self) -> int:
        """How many cross-validation folds `folds` makes (for 'loso', the number of subjects), checked
        against the images and subjects listed: file names and tables are read, nothing is decoded."""
        samples, subjects = self._subjects(SkipReport())
        return self.splitter.fold_count(subjects, self.source.presets_splits, self.root, len(samples))

    def _subjects(self, report: SkipReport) -> tuple[list[Sample], np.ndarray | None]:
        """The source's samples of the chosen classes and their subject ids (None: no subjects)."""
        samples = self.source.samples(report, self.class_names)
        return samples, self.grouping.subjects(samples)

    def _decoded(self) -> tuple[list[Sample], np.ndarray, np.ndarray | None, list[DecodedImage]]:
        """The samples that decode (with face crops: that the face policy keeps), their labels, subject
        ids and images; the options are checked before anything is decoded, skipped.csv written after."""
        report = SkipReport()
        samples, subjects = self._subjects(report)
        self.splitter.check(subjects, self.source.presets_splits, self.root, len(samples))
        labels = [self.class_names.index(sample.label) for sample in samples]
        paths = [sample.path for sample in samples]
        kept_paths, images, kept_labels = decode_labelled(
            paths, labels, self._cache(), self.class_names, report
        )
        report.log_summary(self.root)
        self.skipped = report
        self._write_skipped()
        self._check_classes_present(np.asarray(kept_labels, dtype=np.int64))
        position = {path: i for i, path in enumerate(paths)}
        kept = np.array([position[path] for path in kept_paths], dtype=np.int64)
        kept_subjects = None if subjects is None else subjects[kept]
        return [samples[i] for i in kept], np.asarray(kept_labels, dtype=np.int64), kept_subjects, images

    def _split(
        self,
        samples: list[Sample],
        labels: np.ndarray,
        subjects: np.ndarray | None,
        images: list[DecodedImage],
    ) -> tuple[np.ndarray, np.ndarray]:
        """The groups (each kept whole) and split names of the decoded samples."""
        paths = [sample.path for sample in samples]
        hashes = torch.stack([image.hash_bits for image in images]).numpy()
        pixels = [image.pixels for image in images]  # to tell flat images apart
        duplicates, groups = self.grouping.groups(paths, labels, hashes, subjects, self.class_names, pixels)
        preset = np.array([sample.split for sample in samples], dtype=object)
        splits = self.splitter.split(
            labels, groups, preset, subjects, duplicates, self.class_names, self.root
        )
        return groups, splits

    def _cache(self) -> DecodeCache:
        return DecodeCache(self.cache_dir, self.image_size, self.face_crop, self.max_image_pixels)

    def _check_classes_present(self, labels: np.ndarray) -> None:
        counts = np.bincount(labels, minlength=len(self.class_names))
        empty = [name for name, count in zip(self.class_names, counts, strict=True) if count == 0]
        if empty:
            listed = RunDir(self.manifest_path.parent).skipped if self.manifest_path else None
            raise UsageError(
                f"No readable images for classes {empty} under {self.root} (the files skipped and why: "
                f"{listed or 'the log above'}): add images, or leave the classes out with data.classes."
            )

    def _leave_out(self, paths: list[Path], left_out: np.ndarray) -> np.ndarray:
        """Indices of the images kept; those a fold leaves out go into skipped.csv."""
        if left_out.any():
            for index in np.flatnonzero(left_out):
                self.skipped.add("duplicates an image of the held-out subject", paths[index])
            self._write_skipped()
        return np.flatnonzero(~left_out)

    def _box_column(self, image: DecodedImage) -> tuple[str, ...]:
        """The manifest's face_box cell ('x0 y0 x1 y1', empty where no face was found) with face crops."""
        if self.face_crop is None:
            return ()
        return (" ".join(map(str, image.face_box)) if image.face_box else "",)

    @rank_zero_only
    def _write_face_sheet(self, images: list[DecodedImage]) -> None:
        """faces.png beside the manifest: a sample of the face crops and of the images without a face."""
        if self.face_crop is not None and self.face_crop.detector and self.manifest_path is not None:
            path = RunDir(self.manifest_path.parent).faces
            save_png(face_sheet([row[0] for row in self.manifest], images, self.face_crop.detector), path)
            log.info("Face crops shown in %s", path)

    @rank_zero_only
    def _write_skipped(self) -> None:
        """skipped.csv (path, reason) beside the manifest."""
        if self.manifest_path is not None:
            self.skipped.write_csv(RunDir(self.manifest_path.parent).skipped)

    @rank_zero_only
    def _write_manifest(self) -> None:
        if self.manifest_path is not None:
            write_manifest(self.manifest_path, self.manifest)
            log.info("Split manifest written to %s", self.manifest_path)

    def _build_datasets(
        self, images: list[DecodedImage], paths: list[Path], labels: np.ndarray, splits: np.ndarray
    ) -> None:
        for split in SPLITS:
            members = np.flatnonzero(splits == split)
            split_labels = labels[members]
            if split == "train" and self.train_label_shuffle_seed is not None:
                split_labels = np.random.default_rng(self.train_label_shuffle_seed).permutation(split_labels)
            transform = self.augmentation if split == "train" else None
            self.datasets[split] = ImageTensorDataset(
                [images[i] for i in members], split_labels.tolist(), [paths[i] for i in members], transform
            )
        sizes = {split: len(dataset) for split, dataset in self.datasets.items()}
        log.info("Split sizes: %s (classes: %s)", sizes, self.class_names)

    @property
    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency weights of the training split, normalised to mean 1."""
        counts = torch.bincount(torch.tensor(self.datasets["train"].labels), minlength=len(self.class_names))
        weights = counts.sum() / (len(self.class_names) * counts.clamp(min=1).float())
        return weights / weights.mean()

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Augment (`batch_augmentation`), then mix (`mixing`) training batches on their device:
        (images, targets or target rows, indices). Sanity-check, validation, test and prediction
        batches pass unchanged."""
        if self.trainer is None or not self.trainer.training:
            return batch
        images, targets, indices = batch
        if self.batch_augmentation is not None:
            images = self.batch_augmentation(images)
        if self.mixing is not None:
            images, targets = self.mixing(images, targets)
        return images, targets, indices

    def _loader(self, split: str) -> DataLoader:
        return make_loader(self.datasets[split], self.batch_size, self.num_workers, train=split == "train")

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
