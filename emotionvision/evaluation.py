"""Evaluating a checkpoint (or an ensemble of checkpoints, emotionvision/models/ensemble.py): the report
of its test on a split of the run that made it (its split.csv) or on any data set (`data.root=`: a
class-per-folder tree or a manifest CSV), on the classes it shares with the data. Used by the
`emotionvision-eval` and `emotionvision-crosseval` entry points; the images come through the data
sources and the decode cache training uses."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from emotionvision.callbacks import ReportCallback
from emotionvision.data.cache import DecodeCache
from emotionvision.data.dataset import ImageTensorDataset, decoded_dataset, make_loader
from emotionvision.data.faces import FaceCrop
from emotionvision.data.images import SkipReport
from emotionvision.data.manifest import SPLITS, read_manifest
from emotionvision.data.sources import DataSource, FolderSource, ManifestSource, Sample
from emotionvision.errors import UsageError
from emotionvision.models.classifier import EmotionClassifier
from emotionvision.models.ensemble import Ensemble, checkpoint_paths, load_checkpoints, member_runs
from emotionvision.models.tta import check_tta
from emotionvision.progress import interactive
from emotionvision.reporting.sweep_runs import split_digest
from emotionvision.rundir import RunDir

log = logging.getLogger(__name__)


class NoSharedClassError(UsageError):
    """The data to evaluate hold none of the checkpoint's classes."""


def evaluate(cfg: DictConfig) -> dict:
    """Test `cfg.ckpt_path` with `trainer.test` on the chosen images of the classes it shares with the
    data (`data.class_map` renames the data's classes, `data.classes` picks some), with the test-time
    augmentation `cfg.tta`; the report callback writes the report into `cfg.output_dir`. Several
    checkpoints (a list, or a sweep's folder) are tested as one ensemble. Returns what metrics.json
    holds, with the checkpoints evaluated."""
    paths = checkpoint_paths(cfg.ckpt_path)
    model = load_checkpoints(paths)
    model.tta = check_tta(cfg.tta)
    runs = member_runs(paths)
    run = RunDir(cfg.run_dir) if cfg.run_dir else runs[0]
    output = RunDir(cfg.output_dir)
    source, split, where = evaluation_source(cfg, run)
    skipped = SkipReport()
    samples, coverage = evaluation_samples(cfg, source, model.class_names, skipped, where)
    try:
        dataset = decoded_samples(cfg, model, samples, skipped, where)
    finally:
        skipped.write_csv(output.skipped)
    ensemble = len(paths) > 1
    learnt_from = runs if ensemble else [run]
    # an ensemble's members may have learnt from each other's held-out images (folds): always warned
    own_split = not cfg.data.root and not ensemble
    coverage["seen_in_training"] = seen_in_training(dataset.paths, learnt_from, own_split)
    if not cfg.data.root:  # a split manifest: compare tells runs evaluated on the same split by it
        coverage["split_digest"] = split_digest(source.root)
    loader = make_loader(dataset, cfg.data.batch_size, cfg.data.num_workers)
    # the learning curves and overfitting diagnostics of one training run: none for an ensemble
    monitor = run_monitor(run) if not ensemble else OmegaConf.create({"metric": None, "mode": "max"})
    report = ReportCallback(
        output.path,
        monitor.metric,
        monitor.mode,
        run_dir=run.path,
        split=split,
        subsets=run_subsets(run),
        explain=cfg.explain,
    )
    # the test bar on a terminal only, as in training (EpochLog): in a log file its redraws garble it
    trainer = instantiate(cfg.trainer, callbacks=[report], enable_progress_bar=interactive())
    # verbose=False: the report logs its metrics (Lightning's table would average over absent classes)
    trainer.test(model, dataloaders=loader, verbose=False)
    return output.merge_metrics(coverage | {"checkpoints": [str(path) for path in paths]})


def evaluation_source(cfg: DictConfig, run: RunDir) -> tuple[DataSource, str, str]:
    """The source of the images to evaluate, the split name and how messages name them: every image of
    `data.root` (a class-per-folder tree, or a manifest CSV; split 'all'), else split `data.split` of a
    split manifest (`data.split_file`, or the run's split.csv)."""
    data = cfg.data
    if data.root:
        log.info("Evaluating the images under data.root=%s", data.root)
        root = Path(data.root)
        manifest = root.is_file() or root.suffix == ".csv"
        source = ManifestSource(root, data.class_map) if manifest else FolderSource(root, data.class_map)
        if isinstance(source, FolderSource) and source.presets_splits:
            raise UsageError(
                f"data.root {root} holds train/ and test/ folders: point data.root at one of them."
            )
        return source, "all", f"data.root {data.root}"
    if data.split != "all" and data.split not in SPLITS:
        raise UsageError(f"data.split={data.split}: choose one of {[*SPLITS, 'all']}.")
    manifest = Path(data.split_file) if data.split_file else run.split
    source = ManifestSource(manifest, data.class_map, None if data.split == "all" else data.split)
    return source, data.split, f"split '{data.split}' of {manifest}"


def evaluation_samples(
    cfg: DictConfig, source: DataSource, class_names: list[str], skipped: SkipReport, where: str
) -> tuple[list[Sample], dict]:
    """The samples of `source` to evaluate (files it cannot list go to `skipped`), and the classes
    evaluated and skipped (with the class map) for metrics.json."""
    samples = source.samples(skipped)
    files: dict[str, list[Path]] = {name: [] for name in source.class_names()}
    for sample in samples:
        files[sample.label].append(sample.path)
    classes = list(cfg.data.classes) if cfg.data.classes else None
    chosen, coverage = choose_classes(files, class_names, classes, where)
    samples = [sample for sample in samples if sample.label in chosen]
    if not samples:
        raise UsageError(f"{where} holds no image of the classes {chosen} (expected <class>/<image>).")
    if source.class_map:
        coverage["class_map"] = source.class_map
    return samples, coverage


def decoded_samples(
    cfg: DictConfig,
    model: EmotionClassifier | Ensemble,
    samples: list[Sample],
    skipped: SkipReport,
    where: str,
) -> ImageTensorDataset:
    """The dataset of `samples` as the checkpoint's preprocessing decodes them (input size, face crop),
    through the decode cache of `data.cache_dir`."""
    face_crop = FaceCrop.from_settings(model.hparams.get("face_crop"))
    cache = DecodeCache(cfg.data.cache_dir, model.hparams.input_size, face_crop, cfg.data.max_image_pixels)
    labels = [model.class_names.index(sample.label) for sample in samples]
    return decoded_dataset(
        [sample.path for sample in samples], labels, cache, model.class_names, skipped, where
    )


def seen_in_training(paths: list[Path], runs: list[RunDir], own_split: bool) -> int:
    """How many of `paths` the training runs learnt from (their split.csv's train and val images); a
    warning says so unless `own_split` (the images come from a split manifest, chosen knowingly)."""
    learnt = {
        Path(row["path"]).resolve()
        for run in runs
        if run.split.is_file()
        for row in read_manifest(run.split)
        if row["split"] != "test"
    }
    seen = sum(path.resolve() in learnt for path in paths)
    if seen and not own_split:
        log.warning(
            "%d of the %d images were in the training or validation split of %s: not a held-out "
            "result (data.split_file=%s data.split=test evaluates its test split)",
            seen, len(paths), ", ".join(str(run.path) for run in runs), runs[0].split,
        )  # fmt: skip
    return seen


def saved_setting(run: RunDir, key: str) -> Any:
    """The value of `key` in the training run's .hydra/config.yaml, read and never instantiated; None
    where the file or the key is missing or does not resolve."""
    config = run.read_config() if run.config.is_file() else OmegaConf.create()
    return OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)


def run_monitor(run: RunDir) -> DictConfig:
    """The training run's monitored metric and mode (from its .hydra/config.yaml), for its learning
    curves; metric None where the run's config is missing or names none. Only these two strings are
    read: nothing of the config of a run directory (which may come from elsewhere) is instantiated by
    an evaluation or a cross-data-set matrix (resume= checks what it instantiates:
    emotionvision/targets.py)."""
    metric, mode = saved_setting(run, "monitor.metric"), saved_setting(run, "monitor.mode")
    return OmegaConf.create(
        {
            "metric": metric if isinstance(metric, str) else None,
            "mode": mode if mode in ("max", "min") else "max",
        }
    )


def run_subsets(run: RunDir) -> dict[str, str] | None:
    """The parts of the test images the training run reported on their own (its config's
    `callbacks.report.subsets`, {name: regular expression on the file name}: FER2013's PublicTest_ and
    PrivateTest_), so that its evaluation reports them too; None where it names none. Strings only are
    read, as in `run_monitor`."""
    subsets = saved_setting(run, "callbacks.report.subsets")
    if not isinstance(subsets, DictConfig):
        return None
    return {str(name): pattern for name, pattern in subsets.items() if isinstance(pattern, str)} or None


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
