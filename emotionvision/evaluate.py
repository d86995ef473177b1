"""`emotionvision-eval`: the evaluation report of a checkpoint, on a split of the run that made it
(its split.csv) or on any class-per-folder tree (`data.root=`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from emotionvision.callbacks import ReportCallback
from emotionvision.data.dataset import decoded_dataset
from emotionvision.data.faces import FaceCrop
from emotionvision.data.images import SkipReport, list_class_files
from emotionvision.data.split import SPLITS, read_manifest
from emotionvision.models.classifier import load_classifier

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> dict:
    """Test `cfg.ckpt_path` with `trainer.test` on the chosen images; the report callback writes the
    report into `cfg.output_dir`. Returns what metrics.json holds."""
    ckpt_path = Path(cfg.ckpt_path)
    model = load_classifier(ckpt_path)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else ckpt_path.resolve().parent.parent
    output_dir = Path(cfg.output_dir)
    skipped = SkipReport()
    if cfg.data.root:
        log.info("Evaluating every image under data.root=%s", cfg.data.root)
        samples, split = folder_samples(Path(cfg.data.root), model.class_names, skipped), "all"
        source = f"data.root {cfg.data.root}"
    else:
        manifest = Path(cfg.data.split_file) if cfg.data.split_file else run_dir / "split.csv"
        samples, split = manifest_samples(manifest, cfg.data.split, model.class_names), cfg.data.split
        source = f"split '{split}' of {manifest}"
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
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers)
    monitor = run_monitor(run_dir)
    report = ReportCallback(output_dir, monitor.metric, monitor.mode, run_dir=run_dir, split=split)
    trainer = instantiate(cfg.trainer, callbacks=[report])
    trainer.test(model, dataloaders=loader)
    return json.loads((output_dir / "metrics.json").read_text())


def run_monitor(run_dir: Path) -> DictConfig:
    """The training run's monitored metric and mode (from its .hydra/config.yaml), for its learning
    curves; metric None where the run's config is missing."""
    config = run_dir / ".hydra" / "config.yaml"
    monitor = OmegaConf.load(config).get("monitor") if config.is_file() else None
    return monitor or OmegaConf.create({"metric": None, "mode": "max"})


def manifest_samples(manifest: Path, split: str, class_names: list[str]) -> list[tuple[Path, int]]:
    """(path, class index) of the manifest's images in `split` ('all': every image)."""
    if split != "all" and split not in SPLITS:
        raise ValueError(f"data.split={split}: choose one of {[*SPLITS, 'all']}.")
    rows = [row for row in read_manifest(manifest) if split in ("all", row["split"])]
    _check_known(sorted({row["label"] for row in rows}), class_names, f"Split manifest {manifest}")
    missing = [row["path"] for row in rows if not Path(row["path"]).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(rows)} images listed in {manifest} are missing, e.g. {missing[0]}. "
            "Relative paths are read from the current directory: run from the directory training ran "
            "in, or evaluate a folder with data.root=PATH."
        )
    if not rows:
        raise ValueError(f"Split manifest {manifest} lists no images in split '{split}' (data.split).")
    return [(Path(row["path"]), class_names.index(row["label"])) for row in rows]


def folder_samples(root: Path, class_names: list[str], skipped: SkipReport) -> list[tuple[Path, int]]:
    """(path, class index) of every file in root/<class>/ (nested folders included), classes matched to
    the checkpoint's by name; hidden files and broken links are added to `skipped`."""
    if not root.is_dir():
        raise FileNotFoundError(
            f"data.root {root} does not exist: name a folder with one sub-folder per class."
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    _check_known([folder.name for folder in folders], class_names, f"data.root {root}")
    samples = [(path, class_names.index(f.name)) for f in folders for path in list_class_files(f, skipped)]
    if not samples:
        raise ValueError(f"data.root {root} holds no files in class folders (expected root/<class>/<image>).")
    return samples


def _check_known(names: list[str], class_names: list[str], source: str) -> None:
    unknown = [name for name in names if name not in class_names]
    if unknown:
        raise ValueError(
            f"{source} has classes {unknown} that the checkpoint does not know (its classes: {class_names}). "
            "Rename or remove them; a tree with its own train/ and test/ folders: point data.root at one."
        )


@hydra.main(version_base="1.3", config_path="pkg://emotionvision.conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Console entry point."""
    evaluate(cfg)


if __name__ == "__main__":
    main()
