"""Evaluating a checkpoint: the report of its test on a split of the run that made it (its split.csv)
or on any class-per-folder tree (`data.root=`), on the classes it shares with the data. Used by the
`emotionvision-eval` and `emotionvision-crosseval` entry points."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from emotionvision.callbacks import ReportCallback
from emotionvision.data.dataset import decoded_dataset
from emotionvision.data.faces import FaceCrop
from emotionvision.data.folders import checked_class_map, class_files, has_predefined_splits
from emotionvision.data.images import SkipReport
from emotionvision.data.split import SPLITS, read_manifest
from emotionvision.errors import UsageError
from emotionvision.models.classifier import load_classifier
from emotionvision.reporting.run_report import merge_json

log = logging.getLogger(__name__)


class NoSharedClassError(UsageError):
    """The data to evaluate hold none of the checkpoint's classes."""


def evaluate(cfg: DictConfig) -> dict:
    """Test `cfg.ckpt_path` with `trainer.test` on the chosen images of the classes it shares with the
    data (`data.class_map` renames the data's classes, `data.classes` picks some); the report callback
    writes the report into `cfg.output_dir`. Returns what metrics.json holds."""
    ckpt_path = Path(cfg.ckpt_path)
    model = load_classifier(ckpt_path)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else ckpt_path.resolve().parent.parent
    output_dir = Path(cfg.output_dir)
    skipped = SkipReport()
    samples, split, source, coverage = evaluation_samples(cfg, model.class_names, run_dir, skipped)
    face_crop = model.hparams.get("face_crop")
    face_crop = FaceCrop(**face_crop) if face_crop else None
    size = model.hparams.input_size
    try:
        dataset = decoded_dataset(
            samples,
            cfg.data.cache_dir,
            size,
            source,
            model.class_names,
            face_crop,
            skipped,
            cfg.data.max_image_pixels,
        )
    finally:
        skipped.write_csv(output_dir / "skipped.csv")
    coverage["seen_in_training"] = seen_in_training(dataset.paths, run_dir, own_split=not cfg.data.root)
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers)
    monitor = run_monitor(run_dir)
    report = ReportCallback(output_dir, monitor.metric, monitor.mode, run_dir=run_dir, split=split)
    trainer = instantiate(cfg.trainer, callbacks=[report])
    # verbose=False: the report logs its metrics (Lightning's table would average over absent classes)
    trainer.test(model, dataloaders=loader, verbose=False)
    return merge_json(output_dir / "metrics.json", coverage)


def evaluation_samples(
    cfg: DictConfig, class_names: list[str], run_dir: Path, skipped: SkipReport
) -> tuple[list[tuple[Path, int]], str, str, dict]:
    """(path, class index) of the images to evaluate, the split name, their source, and the classes
    evaluated and skipped (with the class map) for metrics.json."""
    files, split, source = labelled_files(cfg, run_dir, skipped)
    classes = list(cfg.data.classes) if cfg.data.classes else None
    chosen, coverage = choose_classes(files, class_names, classes, source)
    samples = [(path, class_names.index(name)) for name in chosen for path in files[name]]
    if not samples:
        raise UsageError(f"{source} holds no image of the classes {chosen} (expected <class>/<image>).")
    if cfg.data.class_map:
        coverage["class_map"] = checked_class_map(cfg.data.class_map)
    return samples, split, source, coverage


def seen_in_training(paths: list[Path], run_dir: Path, own_split: bool) -> int:
    """How many of `paths` the training run learnt from (its split.csv's train and val images); a
    warning says so unless `own_split` (the images come from a split manifest, chosen knowingly)."""
    manifest = run_dir / "split.csv"
    if not manifest.is_file():
        return 0
    learnt = {Path(row["path"]).resolve() for row in read_manifest(manifest) if row["split"] != "test"}
    seen = sum(path.resolve() in learnt for path in paths)
    if seen and not own_split:
        log.warning(
            "%d of the %d images were in the training or validation split of %s: not a held-out "
            "result (data.split_file=%s data.split=test evaluates its test split)",
            seen, len(paths), run_dir, manifest,
        )  # fmt: skip
    return seen


def run_monitor(run_dir: Path) -> DictConfig:
    """The training run's monitored metric and mode (from its .hydra/config.yaml), for its learning
    curves; metric None where the run's config is missing."""
    config = run_dir / ".hydra" / "config.yaml"
    monitor = OmegaConf.load(config).get("monitor") if config.is_file() else None
    return monitor or OmegaConf.create({"metric": None, "mode": "max"})


def labelled_files(
    cfg: DictConfig, run_dir: Path, skipped: SkipReport
) -> tuple[dict[str, list[Path]], str, str]:
    """The images to evaluate by class (after `data.class_map`), the split name and their source: every
    image of the `data.root` tree (split 'all'), else `data.split` of the run's split manifest."""
    if cfg.data.root:
        log.info("Evaluating the images under data.root=%s", cfg.data.root)
        files = folder_files(Path(cfg.data.root), skipped, cfg.data.class_map)
        return files, "all", f"data.root {cfg.data.root}"
    manifest = Path(cfg.data.split_file) if cfg.data.split_file else run_dir / "split.csv"
    files = manifest_files(manifest, cfg.data.split, cfg.data.class_map)
    return files, cfg.data.split, f"split '{cfg.data.split}' of {manifest}"


def manifest_files(
    manifest: Path, split: str, class_map: Mapping[str, str] | None = None
) -> dict[str, list[Path]]:
    """The manifest's images in `split` ('all': every image) by label, renamed by `class_map`."""
    if split != "all" and split not in SPLITS:
        raise UsageError(f"data.split={split}: choose one of {[*SPLITS, 'all']}.")
    rows = [row for row in read_manifest(manifest) if split in ("all", row["split"])]
    missing = [row["path"] for row in rows if not Path(row["path"]).is_file()]
    if missing:
        raise UsageError(
            f"{len(missing)} of the {len(rows)} images listed in {manifest} are missing, e.g. {missing[0]}. "
            "Relative paths are read from the current directory: run from the directory training ran "
            "in, or evaluate a folder with data.root=PATH."
        )
    if not rows:
        raise UsageError(f"Split manifest {manifest} lists no images in split '{split}' (data.split).")
    renames = checked_class_map(class_map)
    files: dict[str, list[Path]] = {}
    for row in rows:
        files.setdefault(renames.get(row["label"], row["label"]), []).append(Path(row["path"]))
    return dict(sorted(files.items()))


def folder_files(
    root: Path, skipped: SkipReport, class_map: Mapping[str, str] | None = None
) -> dict[str, list[Path]]:
    """Every file of root/<class>/ (nested folders included) by class, folders renamed by `class_map`;
    hidden files and broken links are added to `skipped`."""
    if not root.is_dir():
        raise UsageError(f"data.root {root} does not exist: name a folder with one sub-folder per class.")
    if has_predefined_splits(root):
        raise UsageError(f"data.root {root} holds train/ and test/ folders: point data.root at one of them.")
    return class_files(root, skipped, class_map, warn=True)


def choose_classes(
    files: dict[str, list[Path]], class_names: list[str], classes: list[str] | None, source: str
) -> tuple[list[str], dict]:
    """The classes of `files` to evaluate: `classes` where given, else those the checkpoint knows
    (`class_names`); the others are skipped with a warning. Returns them and what metrics.json
    records: 'classes_evaluated' and 'classes_skipped' ({class: images})."""
    found = list(files)
    if classes:
        _check_chosen(classes, found, class_names, source)
        chosen = list(classes)
    else:
        chosen = [name for name in found if name in class_names]
    if not chosen:
        raise NoSharedClassError(
            f"{source} shares no class with the checkpoint (its classes: {found}; the checkpoint's: "
            f"{class_names}): map its folders to the checkpoint's classes with "
            "data.class_map={folder: class}."
        )
    skipped = {name: len(paths) for name, paths in files.items() if name not in chosen}
    unknown = {name: count for name, count in skipped.items() if name not in class_names}
    if unknown:
        log.warning(
            "%s: classes the checkpoint does not know are skipped (images: %s); data.class_map={folder: "
            "class} maps folders to its classes %s",
            source, unknown, class_names,
        )  # fmt: skip
    if len(unknown) < len(skipped):
        log.info("Classes left out by data.classes: %s", sorted(set(skipped) - set(unknown)))
    return chosen, {"classes_evaluated": chosen, "classes_skipped": skipped}


def _check_chosen(classes: list[str], found: list[str], class_names: list[str], source: str) -> None:
    """UsageError for a `data.classes` entry that the checkpoint or the data lacks."""
    unknown = [name for name in classes if name not in class_names]
    if unknown:
        raise UsageError(
            f"data.classes names {unknown}, which the checkpoint does not know (its classes: {class_names}): "
            "drop them, or rename the data's folders to its classes with data.class_map={folder: class}."
        )
    absent = [name for name in classes if name not in found]
    if absent:
        raise UsageError(
            f"data.classes names {absent}, not classes of {source} (its classes: {found}): drop them, or "
            "map its folders to them with data.class_map={folder: class}."
        )
