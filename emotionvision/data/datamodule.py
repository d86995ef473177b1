"""LightningDataModule for class-per-folder emotion images."""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from emotionvision.data.cache import DecodeCache, DecodedImage
from emotionvision.data.dataset import EpochShuffle, ImageTensorDataset, apply_face_policy
from emotionvision.data.duplicates import conflicting_groups, duplicate_groups, merge_groups
from emotionvision.data.faces import FaceCrop
from emotionvision.data.folders import (
    checked_class_map,
    class_files,
    class_folders,
    find_class_names,
    has_predefined_splits,
)
from emotionvision.data.images import DEFAULT_MAX_IMAGE_PIXELS, SkipReport
from emotionvision.data.split import (
    SPLITS,
    carve_validation,
    check_stratifiable,
    fold_ratios,
    fold_splits,
    log_split_summary,
    read_manifest,
    stratified_group_split,
    subject_groups,
    write_manifest,
)
from emotionvision.errors import UsageError
from emotionvision.reporting.figures import face_sheet, save_png

log = logging.getLogger(__name__)


def default_num_workers() -> int:
    """Loader processes for this machine: none on 2 cores or fewer (there the workers took cores from
    the compute threads: benchmarks/train_speed.py measured 0 workers fastest), else half the cores,
    at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores // 2)


class EmotionDataModule(pl.LightningDataModule):
    """Images decoded once into a cache, a stratified duplicate-aware split, tensor augmentation.

    The split is written to `manifest_path` (CSV: path, label, split, group); `split_file`
    reuses such a manifest instead of splitting. With `folds` (a number, or 'loso': one fold per
    group) fold `fold` of a stratified group-aware cross-validation is the test split, and
    validation is carved from the other folds. Files in nested folders of a class folder belong to
    the class (their count is logged per class folder). Skipped files (hidden, broken links,
    non-images, unreadable, more than `max_image_pixels` pixels; None: no limit) are logged and
    listed in skipped.csv beside the manifest (columns path, reason).
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
        train_label_shuffle_seed: int | None = None,
        face_crop: dict | None = None,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        super().__init__()
        self.root = Path(root).expanduser().resolve()  # absolute paths in the manifest
        self.split_ratios = list(split_ratios)
        self.split_seed = split_seed
        self.split_file = Path(split_file) if split_file else None
        self.manifest_path = Path(manifest_path) if manifest_path else None
        self.near_duplicate_bits = near_duplicate_bits
        self.group_by = group_by
        self.folds, self.fold = folds, fold
        self.image_size = image_size
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.augmentation = augmentation
        self.train_label_shuffle_seed = train_label_shuffle_seed
        self.face_crop = FaceCrop(**face_crop) if face_crop else None
        self.max_image_pixels = max_image_pixels
        self.skipped = SkipReport()
        self.class_map = checked_class_map(class_map)
        if self.split_file is not None:
            manifest_labels = sorted({row["label"] for row in self._manifest_rows()})
            self.class_names = list(classes) if classes else manifest_labels
        else:
            self.class_names = find_class_names(self.root, classes, self.class_map)
        self.datasets: dict[str, ImageTensorDataset] = {}
        self.manifest: list[tuple[str, str, str, int]] = []

    def prepare_data(self) -> None:
        """Decode every image not yet in the cache (once, on one process)."""
        paths, _, _ = self._list_images(SkipReport())
        self._cache().get_many(paths, SkipReport())

    def setup(self, stage: str | None = None) -> None:
        """Load cached images, split them (or read the split file), build the datasets."""
        if self.datasets:
            return
        paths, labels, images, groups, preset = self._grouped_images()
        splits = self._assign_splits(labels, groups, preset)
        log_split_summary(labels, groups, splits, self._target_ratios(preset), self.class_names)
        self.manifest = [
            (str(path), self.class_names[label], split, int(group), *self._box_column(image))
            for path, label, split, group, image in zip(paths, labels, splits, groups, images, strict=True)
        ]
        self._write_manifest()
        self._write_face_sheet(images)
        self._build_datasets(images, paths, labels, splits)

    def fold_count(self) -> int:
        """How many cross-validation folds `folds` makes (for 'loso', the number of groups)."""
        self._check_folds()
        if self.folds != "loso":
            return int(self.folds)
        return len(np.unique(self._grouped_images()[3]))

    def _grouped_images(
        self,
    ) -> tuple[list[Path], np.ndarray, list[DecodedImage], np.ndarray, np.ndarray]:
        """The readable images: paths, labels, decoded images, the groups a split keeps whole and
        their preset split names (None where the split is made here)."""
        report = SkipReport()
        paths, labels, preset_splits = self._list_images(report)
        kept_paths, images = self._cache().get_many(paths, report)
        if self.face_crop is not None:
            label_of = dict(zip(paths, labels, strict=True))
            kept_labels = [label_of[path] for path in kept_paths]
            kept_paths, images, _ = apply_face_policy(
                kept_paths, images, kept_labels, self.face_crop, self.class_names, report
            )
        report.log_summary(self.root)
        self.skipped = report
        self._write_skipped()
        kept = {path: i for i, path in enumerate(kept_paths)}
        index = np.array([i for i, path in enumerate(paths) if path in kept])
        label_array = np.asarray(labels)[index]
        self._check_classes_present(label_array)
        hashes = torch.stack([image.hash_bits for image in images]).numpy()
        groups = self._groups(kept_paths, label_array, hashes)
        return kept_paths, label_array, images, groups, np.asarray(preset_splits, dtype=object)[index]

    def _cache(self) -> DecodeCache:
        return DecodeCache(self.cache_dir, self.image_size, self.face_crop, self.max_image_pixels)

    def _list_images(self, report: SkipReport) -> tuple[list[Path], list[int], list[str | None]]:
        """Candidate files with labels and predefined split names (from folders or split_file)."""
        if self.split_file is not None:
            return self._list_from_manifest()
        folders = [(self.root, None)]
        if has_predefined_splits(self.root):
            folders = [(self.root / "train", "train"), (self.root / "test", "test")]
        paths, labels, preset = [], [], []
        for folder, split in folders:
            files_of = class_files(folder, report, self.class_map, self.class_names)
            for label, (name, files) in enumerate(files_of.items()):
                if not files:
                    dirs = class_folders(folder, self.class_map).get(name, [folder / name])
                    raise UsageError(
                        f"Class folder {', '.join(map(str, dirs))} holds no files: add images, or pick "
                        "the classes to train on with data.classes."
                    )
                paths += files
                labels += [label] * len(files)
                preset += [split] * len(files)
        return paths, labels, preset

    def _manifest_rows(self) -> list[dict[str, str]]:
        """The rows of `split_file`, labels renamed by the class map."""
        rows = read_manifest(self.split_file)
        return [row | {"label": self.class_map.get(row["label"], row["label"])} for row in rows]

    def _list_from_manifest(self) -> tuple[list[Path], list[int], list[str | None]]:
        rows = [row for row in self._manifest_rows() if row["label"] in self.class_names]
        missing = [row["path"] for row in rows if not Path(row["path"]).is_file()]
        if missing:
            raise UsageError(
                f"{len(missing)} images listed in {self.split_file} are missing, e.g. {missing[0]}: "
                "restore them, or drop data.split_file to split anew."
            )
        label_of = {name: i for i, name in enumerate(self.class_names)}
        return (
            [Path(row["path"]) for row in rows],
            [label_of[row["label"]] for row in rows],
            [row["split"] for row in rows],
        )

    def _check_classes_present(self, labels: np.ndarray) -> None:
        counts = Counter(labels.tolist())
        empty = [name for i, name in enumerate(self.class_names) if counts.get(i, 0) == 0]
        if empty:
            raise UsageError(
                f"No readable images for classes {empty} under {self.root} (see skipped.csv): add images, "
                "or leave the classes out with data.classes."
            )

    def _groups(self, paths: list[Path], labels: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """Groups kept whole by the split: near-duplicates (unless near_duplicate_bits is None) merged
        with the subjects of `group_by`."""
        groups = np.arange(len(paths))
        if self.near_duplicate_bits is not None:
            groups = duplicate_groups(hashes, self.near_duplicate_bits)
            self._report_duplicates(paths, labels, groups)
        if self.group_by:
            groups = merge_groups(groups, subject_groups(paths, self.group_by))
        return groups

    def _report_duplicates(self, paths: list[Path], labels: np.ndarray, groups: np.ndarray) -> None:
        sizes = np.bincount(groups)
        log.info(
            "Duplicate groups (exact or within %d bits): %d groups, %d images",
            self.near_duplicate_bits,
            int((sizes > 1).sum()),
            int(sizes[sizes > 1].sum()),
        )
        conflicts = conflicting_groups(groups, labels)
        for rank, group in enumerate(conflicts):
            members = "; ".join(
                f"{paths[i]} ({self.class_names[labels[i]]})" for i in np.flatnonzero(groups == group)
            )
            level = logging.WARNING if rank < 5 else logging.DEBUG
            log.log(level, "Duplicates with conflicting labels: %s", members)
        if len(conflicts) > 5:
            log.warning(
                "%d duplicate groups with conflicting labels in all (listed at DEBUG).", len(conflicts)
            )

    def _assign_splits(self, labels: np.ndarray, groups: np.ndarray, preset: np.ndarray) -> np.ndarray:
        """Split names: preset ones kept (validation carved from a preset train split); the rest split
        stratified by group, or by cross-validation fold."""
        if self.split_file is not None:
            return preset.astype(str)
        if self.folds is not None:
            self._check_folds(preset)
            splits = fold_splits(labels, groups, self.folds, self.fold, self.split_ratios, self.split_seed)
            if not (splits == "test").any():
                raise UsageError(
                    f"data.fold={self.fold}: data.folds={self.folds} has no such fold (they count from 0)."
                )
            return splits
        if preset[0] is None:
            check_stratifiable(labels, groups, self.split_ratios, self.class_names, self.root)
            return stratified_group_split(labels, groups, self.split_ratios, self.split_seed)
        splits = preset.astype(str)
        train = splits == "train"
        splits[train] = carve_validation(labels[train], groups[train], self.split_ratios, self.split_seed)
        leaking = len(set(groups[train]) & set(groups[splits == "test"]))
        if leaking:
            log.warning("%d duplicate groups span the predefined train and test folders.", leaking)
        return splits

    def _target_ratios(self, preset: np.ndarray) -> list[float] | None:
        """The train, val and test shares of a split made here (None for preset or 'loso' splits)."""
        if self.split_file is not None or (preset[0] is not None and self.folds is None):
            return None
        if self.folds is None:
            return self.split_ratios
        return None if self.folds == "loso" else fold_ratios(int(self.folds), self.split_ratios)

    def _check_folds(self, preset: np.ndarray | None = None) -> None:
        """UsageError naming the option when `folds` and `fold` do not describe a cross-validation."""
        if self.folds == "loso" and not self.group_by:
            raise UsageError("data.folds=loso leaves one group out: set data.group_by to name each subject.")
        if self.folds != "loso" and (not isinstance(self.folds, int) or self.folds < 2):
            raise UsageError(f"data.folds={self.folds}: give a number of folds of 2 or more, or loso.")
        if self.split_file is not None or (preset is not None and preset[0] is not None):
            raise UsageError(
                "data.folds: cross-validation splits all images itself; drop data.split_file, or "
                f"use a tree without train/ and test/ folders (data.root={self.root})."
            )
        if preset is not None and self.fold is None:
            raise UsageError("data.folds is set but data.fold is not: emotionvision-train runs every fold.")

    def _box_column(self, image: DecodedImage) -> tuple[str, ...]:
        """The manifest's face_box cell ('x0 y0 x1 y1', empty where no face was found) with face crops."""
        if self.face_crop is None:
            return ()
        return (" ".join(map(str, image.face_box)) if image.face_box else "",)

    @rank_zero_only
    def _write_face_sheet(self, images: list[DecodedImage]) -> None:
        """faces.png beside the manifest: a sample of the face crops and of the images without a face."""
        if self.face_crop is not None and self.face_crop.detector and self.manifest_path is not None:
            path = self.manifest_path.parent / "faces.png"
            save_png(face_sheet([row[0] for row in self.manifest], images, self.face_crop.detector), path)
            log.info("Face crops shown in %s", path)

    @rank_zero_only
    def _write_skipped(self) -> None:
        """skipped.csv (path, reason) beside the manifest."""
        if self.manifest_path is not None:
            self.skipped.write_csv(self.manifest_path.parent / "skipped.csv")

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

    def _loader(self, split: str) -> DataLoader:
        """Training: an order fixed by the seed and the epoch, so a resumed run sees the batches an
        uninterrupted one does. Evaluation: every image once, also under DDP (Lightning's default
        sampler would pad ranks with repeats)."""
        dataset = self.datasets[split]
        seed = torch.initial_seed()  # set by seed_everything
        if split == "train":
            sampler = EpochShuffle(len(dataset), seed)
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        else:
            sampler = None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            # a last training batch of one image would break BatchNorm: drop the incomplete batch
            drop_last=split == "train" and len(dataset) > self.batch_size,
            num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(seed),  # worker seeds: not drawn from the global RNG
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
