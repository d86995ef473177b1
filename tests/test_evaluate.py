"""emotionvision-eval and the report emotionvision-train writes, on a tiny generated run."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emotionvision import evaluation
from emotionvision.cli import evaluate, train
from emotionvision.data.demo import generate_demo_dataset
from emotionvision.data.images import SkipReport
from emotionvision.data.manifest import SPLITS, read_manifest
from emotionvision.reporting.curves import overfitting_summary, overfitting_text, read_history
from emotionvision.rundir import RunDir

REPORT_FILES = (
    "metrics.json",
    "classification_report.txt",
    "predictions.csv",
    "overfitting.txt",
    "confusion_matrix.png",
    "roc_curves.png",
    "reliability.png",
    "learning_curves.png",
    "errors.png",
)


def run_app(main, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> None:
    """Run a Hydra console entry point in this process with command-line `overrides`."""
    monkeypatch.setattr(sys, "argv", ["emotionvision", *overrides])
    main()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-epoch training run on 48 generated 32 px faces (six classes)."""
    work = tmp_path_factory.mktemp("run")
    images = generate_demo_dataset(work / "faces", images_per_class=8, image_size=32)
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_app(
            train.main,
            monkeypatch,
            "data=folder",
            f"data.root={images}",
            "data.image_size=32",
            "data.batch_size=16",
            "data.num_workers=0",
            "trainer.max_epochs=2",
            "trainer.accelerator=cpu",
            "trainer.log_every_n_steps=1",
            "++callbacks.report.subsets={anger_images:'^anger_'}",  # as FER2013's PrivateTest_
            "+trainer.enable_progress_bar=false",
            "+trainer.enable_model_summary=false",
            f"paths.root_dir={work}",
            f"hydra.run.dir={work}/train",
        )
    return work / "train"


@pytest.fixture(scope="module")
def eval_dir(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """emotionvision-eval of the run's best checkpoint, with the defaults (the run's test split)."""
    output = tmp_path_factory.mktemp("eval")
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_app(
            evaluate.main,
            monkeypatch,
            f"ckpt_path={best}",
            f"paths.root_dir={output}",
            f"hydra.run.dir={output}",
        )
    return output


def compose_eval(tmp_path: Path, *overrides: str):
    """The eval config with `overrides`, writing into `tmp_path` (report and decode cache)."""
    with initialize_config_module(config_module="emotionvision.conf", version_base="1.3"):
        paths = [f"paths.root_dir={tmp_path}", f"output_dir={tmp_path}/report"]
        return compose(config_name="eval", overrides=[*paths, *overrides])


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_eval_reproduces_the_test_metrics_of_training(run_dir: Path, eval_dir: Path) -> None:
    trained = read_json(run_dir / "metrics.json")
    evaluated = read_json(eval_dir / "metrics.json")
    for name in ("test/acc", "test/macro_f1", "test/auroc", "test/anger_images/acc"):  # the run's subsets too
        assert evaluated[name] == pytest.approx(trained[name], abs=1e-6), name
    assert evaluated["test/confusion_matrix"] == trained["test/confusion_matrix"]
    test_rows = [row for row in read_manifest(run_dir / "split.csv") if row["split"] == "test"]
    assert evaluated["num_images"] == len(test_rows)
    with (eval_dir / "predictions.csv").open() as handle:
        predictions = list(csv.DictReader(handle))
    assert [row["path"] for row in predictions] == [row["path"] for row in test_rows]
    assert [row["true_label"] for row in predictions] == [row["label"] for row in test_rows]
    probabilities = torch.tensor([[float(row[f"prob_{c}"]) for c in ("anger", "sad")] for row in predictions])
    assert probabilities.min() >= 0 and probabilities.max() <= 1


@pytest.mark.parametrize("report", ["train", "eval"])
def test_report_holds_every_file_and_figure(report: str, run_dir: Path, eval_dir: Path) -> None:
    folder = run_dir if report == "train" else eval_dir
    for name in REPORT_FILES:
        assert (folder / name).is_file(), name
    for png in folder.glob("*.png"):
        with Image.open(png) as image:
            assert image.format == "PNG" and min(image.size) >= 400, png.name
    metrics = read_json(folder / "metrics.json")
    for name in ("balanced_acc", "log_loss", "ece", "precision/anger", "f1/sad", "support/fear"):
        assert f"test/{name}" in metrics
    text = (folder / "classification_report.txt").read_text()
    assert all(name in text for name in ("anger", "disgust", "macro avg", "weighted avg"))
    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"report/test/confusion_matrix", "report/learning_curves"} <= set(events.Tags()["images"])


def test_overfitting_section_agrees_with_training_logs(run_dir: Path, eval_dir: Path) -> None:
    trained = read_json(run_dir / "metrics.json")
    overfitting = read_json(eval_dir / "metrics.json")["overfitting"]
    assert overfitting["last_epoch"] == trained["epochs_trained"] - 1
    assert overfitting["at_best_epoch"]["val/macro_f1"] == pytest.approx(trained["best_val/macro_f1"])
    gaps = overfitting["at_last_epoch"]
    assert gaps["loss_gap"] == pytest.approx(gaps["val/loss"] - gaps["train/loss"])
    assert overfitting["early_stopping_fired"] is False  # patience 10 > 2 epochs
    assert overfitting == trained["overfitting"]
    assert "was best at epoch" in (eval_dir / "overfitting.txt").read_text()


def test_history_csv_holds_one_row_per_epoch(run_dir: Path) -> None:
    """The learning curves come from history.csv, whatever the logger."""
    history = read_history(run_dir / "history.csv")
    assert [row["epoch"] for row in history] == [0, 1]
    assert history[0]["time"] < history[1]["time"]
    for row in history:
        assert {"train/loss", "val/loss", "train/macro_f1", "val/macro_f1", "lr-AdamW"} <= set(row)
    best = max(row["val/macro_f1"] for row in history)
    assert best == pytest.approx(read_json(run_dir / "metrics.json")["best_val/macro_f1"])


def test_overfitting_summary_by_hand() -> None:
    curves = {
        "train/loss": {e: 1.0 - 0.1 * e for e in range(8)},
        "val/loss": {e: 1.0 for e in range(8)},
        "train/macro_f1": {e: 0.1 * e for e in range(8)},
        "val/macro_f1": {0: 0.2, 1: 0.4, 2: 0.5, 3: 0.5, 4: 0.45, 5: 0.44, 6: 0.43, 7: 0.42},
    }
    summary = overfitting_summary(curves, "val/macro_f1", "max", stopped_epoch=7)
    assert summary["best_epoch"] == 2  # the first of the tied peaks, as ModelCheckpoint keeps it
    assert summary["last_epoch"] == 7
    assert summary["at_last_epoch"]["macro_f1_gap"] == pytest.approx(0.7 - 0.42)
    assert summary["early_stopping_fired"] is True and summary["early_stopping_epoch"] == 7
    assert "Early stopping fired at epoch 7" in overfitting_text(summary)
    by_loss = overfitting_summary(curves, "val/loss", "min", stopped_epoch=0)
    assert by_loss["best_epoch"] == 0 and by_loss["early_stopping_fired"] is False
    assert set(by_loss["at_best_epoch"]) == {"train/loss", "val/loss", "loss_gap"}


def test_data_split_selects_the_images_of_the_manifest(run_dir: Path, tmp_path: Path) -> None:
    manifest = run_dir / "split.csv"
    rows = read_manifest(manifest)
    chosen = {}
    for split in (*SPLITS, "all"):
        cfg = compose_eval(tmp_path, "ckpt_path=unused.ckpt", f"data.split={split}")
        source, name, _ = evaluation.evaluation_source(cfg, RunDir(run_dir))
        assert name == split
        chosen[split] = source.samples(SkipReport())
    assert len(chosen["all"]) == len(rows) == sum(len(chosen[split]) for split in SPLITS)
    for split in SPLITS:
        expected = [(row["path"], row["label"]) for row in rows if row["split"] == split]
        assert [(str(sample.path), sample.label) for sample in chosen[split]] == expected


def test_eval_of_another_folder_and_of_a_manifest(run_dir: Path, tmp_path: Path) -> None:
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    rows = read_manifest(run_dir / "split.csv")
    folder = tmp_path / "folder"
    for row in rows[:10]:  # a tree holding only some of the classes
        (folder / row["label"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(row["path"], folder / row["label"])
    cfg = compose_eval(tmp_path, f"ckpt_path={best}", f"data.root={folder}")
    report = evaluation.evaluate(cfg)
    assert report["num_images"] == 10 and report["split"] == "all"
    counts = Counter(row["label"] for row in rows[:10])
    assert {name: report[f"all/support/{name}"] for name in counts} == counts
    listed = tmp_path / "images.csv"  # the same images in a manifest, paths relative to it
    files = sorted(folder.rglob("*.png"))
    listed.write_text("path,label\n" + "".join(f"{p.relative_to(tmp_path)},{p.parent.name}\n" for p in files))
    from_manifest = evaluation.evaluate(
        compose_eval(tmp_path / "csv", f"ckpt_path={best}", f"data.root={listed}", "explain=null")
    )
    assert from_manifest["all/confusion_matrix"] == report["all/confusion_matrix"]
    assert "cam/method" in report and (tmp_path / "report" / "cam_by_class.png").is_file()
    assert (
        "cam/method" not in from_manifest and not (tmp_path / "csv" / "report" / "cam_by_class.png").exists()
    )
    assert from_manifest["num_images"] == 10 and from_manifest["all/acc"] == pytest.approx(report["all/acc"])


def test_eval_names_data_it_cannot_evaluate(run_dir: Path, tmp_path: Path) -> None:
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    for name in ("anger", "contempt"):
        (tmp_path / "tree" / name).mkdir(parents=True)
    cfg = compose_eval(tmp_path, f"ckpt_path={best}", f"data.root={tmp_path}/tree")
    with pytest.raises(ValueError, match=r"holds no image of the classes \['anger'\]"):
        evaluation.evaluate(cfg)
    for split in ("train", "test"):
        (tmp_path / "fer" / split / "anger").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"holds train/ and test/ folders: point data.root at one"):
        evaluation.evaluate(compose_eval(tmp_path, f"ckpt_path={best}", f"data.root={tmp_path}/fer"))
    with pytest.raises(ValueError, match=r"data\.split=dev"):
        evaluation.evaluate(compose_eval(tmp_path, f"ckpt_path={best}", "data.split=dev"))
