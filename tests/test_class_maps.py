"""Class maps (data.class_map) in training, evaluation and prediction; evaluation restricted to a
checkpoint's classes; the cross-data-set matrix (emotionvision-crosseval), on tiny generated trees."""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from PIL import Image
from sklearn import metrics as sk

from emotionvision import evaluation
from emotionvision.cli import crosseval, train
from emotionvision.data import EmotionDataModule
from emotionvision.data.manifest import read_manifest
from emotionvision.errors import UsageError
from emotionvision.inference import Predictor
from emotionvision.models import EmotionClassifier

SIZE = 32
# a CK+-like tree (folder names unlike the checkpoint's) and a JAFFE-like one with extra classes
TRAIN_TREE = {"angry": 10, "happy": 10, "sadness": 10}
TRAIN_MAP = {"angry": "anger", "sadness": "sad"}
OTHER_TREE = {"happiness": 5, "neutral": 4, "sad": 6, "surprise": 3}
OTHER_MAP = {"happiness": "happy"}


def hydra_dict(mapping: dict[str, str]) -> str:
    return "{" + ",".join(f"{key}:{value}" for key, value in mapping.items()) + "}"


def run_app(main, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> None:
    """Run a Hydra console entry point in this process with command-line `overrides`."""
    monkeypatch.setattr(sys, "argv", ["emotionvision", *overrides])
    main()


def compose_eval(tmp_path: Path, *overrides: str, name: str = "eval"):
    """The eval (or crosseval) config with `overrides`, writing into `tmp_path`."""
    with initialize_config_module(config_module="emotionvision.conf", version_base="1.3"):
        paths = [f"paths.root_dir={tmp_path}", f"output_dir={tmp_path}/report", "trainer.accelerator=cpu"]
        return compose(config_name=name, overrides=[*paths, *overrides])


def on_jaffe(checkpoint: Path, trees: dict[str, Path]) -> list[str]:
    """Eval overrides: the checkpoint on the JAFFE-like tree with its class map."""
    return [
        f"ckpt_path={checkpoint}",
        f"data.root={trees['jaffe']}",
        f"data.class_map={hydra_dict(OTHER_MAP)}",
    ]


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory, make_tree) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("trees")
    return {
        "ck": make_tree(work / "ck", TRAIN_TREE, size=SIZE),
        "jaffe": make_tree(work / "jaffe", OTHER_TREE, size=SIZE, seed=1),
        "contempt": make_tree(work / "contempt", {"contempt": 3}, size=SIZE, seed=2),
    }


@pytest.fixture(scope="module")
def run_dir(trees: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, quick_run_overrides) -> Path:
    """A one-batch training run on the CK+-like tree with data.class_map given on the command line."""
    work = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as monkeypatch:
        run_app(
            train.main,
            monkeypatch,
            *quick_run_overrides,
            "data=folder",
            f"data.root={trees['ck']}",
            f"data.class_map={hydra_dict(TRAIN_MAP)}",
            "trainer.accelerator=cpu",
            "+trainer.enable_progress_bar=false",
            f"paths.root_dir={work}",
            f"hydra.run.dir={work}/train",
        )
    return work / "train"


@pytest.fixture(scope="module")
def checkpoint(run_dir: Path) -> Path:
    (best,) = (run_dir / "checkpoints").glob("best-*.ckpt")
    return best


@pytest.fixture(scope="module")
def other_eval(checkpoint: Path, trees: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """emotionvision-eval of the checkpoint on the JAFFE-like tree with its class map; its metrics.json."""
    output = tmp_path_factory.mktemp("eval")
    cfg = compose_eval(output, *on_jaffe(checkpoint, trees))
    evaluation.evaluate(cfg)
    return json.loads((output / "report" / "metrics.json").read_text()) | {"report": output / "report"}


def test_class_map_renames_and_merges_folders(make_tree, tmp_path: Path, caplog) -> None:
    root = make_tree(tmp_path / "tree", {"anger": 6, "angry": 4, "happy": 10, "sad": 10})
    options = {"image_size": SIZE, "cache_dir": tmp_path / "cache", "num_workers": 0}
    with caplog.at_level(logging.WARNING, logger="emotionvision"):
        data = EmotionDataModule(root, class_map={"angry": "anger", "fear": "afraid"}, **options)
    assert data.class_names == ["anger", "happy", "sad"]
    assert "data.class_map names folders ['fear'] that" in caplog.text
    data.setup()
    labels = Counter(row[1] for row in data.manifest)
    assert labels == {"anger": 10, "happy": 10, "sad": 10}
    angry = [row for row in data.manifest if Path(row[0]).parent.name == "angry"]
    assert len(angry) == 4 and {row[1] for row in angry} == {"anger"}
    picked = EmotionDataModule(root, classes=["sad", "anger"], class_map={"angry": "anger"}, **options)
    picked.setup()
    assert picked.class_names == ["sad", "anger"]
    assert Counter(row[1] for row in picked.manifest) == {"anger": 10, "sad": 10}
    with pytest.raises(UsageError, match=r"data.classes names \['angry'\].*data.class_map") as error:
        EmotionDataModule(root, classes=["angry", "happy"], class_map={"angry": "anger"}, **options)
    assert "\n" not in str(error.value)


def test_training_uses_the_mapped_names(run_dir: Path, checkpoint: Path) -> None:
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["class_names"] == ["anger", "happy", "sad"]
    rows = read_manifest(run_dir / "split.csv")
    by_folder = {(Path(row["path"]).parent.name, row["label"]) for row in rows}
    assert by_folder == {("angry", "anger"), ("happy", "happy"), ("sadness", "sad")}
    assert OmegaConf.load(run_dir / ".hydra" / "config.yaml").data.class_map == TRAIN_MAP


def test_predict_answers_in_the_mapped_names(checkpoint: Path, trees: dict[str, Path]) -> None:
    predictions = Predictor(checkpoint, device="cpu").predict([trees["ck"] / "sadness"], top_k=3)
    assert len(predictions) == TRAIN_TREE["sadness"]
    assert all(sorted(prediction.labels) == ["anger", "happy", "sad"] for prediction in predictions)


def test_eval_maps_folders_and_skips_classes_the_checkpoint_lacks(other_eval: dict) -> None:
    metrics = other_eval
    assert metrics["classes_evaluated"] == ["happy", "sad"]
    assert metrics["classes_skipped"] == {"neutral": 4, "surprise": 3}
    assert metrics["class_map"] == OTHER_MAP and metrics["seen_in_training"] == 0
    assert metrics["num_images"] == 5 + 6
    supports = {name: metrics[f"all/support/{name}"] for name in ("anger", "happy", "sad")}
    assert supports == {"anger": 0, "happy": 5, "sad": 6}
    assert math.isnan(metrics["all/recall/anger"])  # no images of it: undefined, not 0
    scores = metrics["all/acc"], metrics["all/macro_f1"], metrics["num_images"]
    assert_scores_match_predictions(metrics["report"] / "predictions.csv", ["happy", "sad"], *scores)


def test_data_classes_restricts_the_tree(
    checkpoint: Path, trees: dict[str, Path], tmp_path: Path, caplog
) -> None:
    cfg = compose_eval(tmp_path, *on_jaffe(checkpoint, trees), "data.classes=[sad]")
    with caplog.at_level(logging.INFO, logger="emotionvision"):
        metrics = evaluation.evaluate(cfg)
    assert metrics["classes_evaluated"] == ["sad"] and metrics["num_images"] == 6
    assert metrics["classes_skipped"] == {"happy": 5, "neutral": 4, "surprise": 3}
    unknown = "classes the checkpoint does not know are skipped (images: {'neutral': 4, 'surprise': 3})"
    assert unknown in caplog.text and "Classes left out by data.classes: ['happy']" in caplog.text


def test_eval_refuses_classes_the_checkpoint_lacks_in_one_line(
    checkpoint: Path, trees: dict[str, Path], tmp_path: Path
) -> None:
    chosen = compose_eval(tmp_path, *on_jaffe(checkpoint, trees), "data.classes=[neutral,sad]")
    with pytest.raises(UsageError, match=r"data.classes names \['neutral'\], which the checkpoint") as error:
        evaluation.evaluate(chosen)
    assert "data.class_map={folder: class}" in str(error.value) and "\n" not in str(error.value)
    disjoint = compose_eval(tmp_path, f"ckpt_path={checkpoint}", f"data.root={trees['contempt']}")
    with pytest.raises(evaluation.NoSharedClassError, match=r"shares no class with the checkpoint") as error:
        evaluation.evaluate(disjoint)
    assert "data.class_map={folder: class}" in str(error.value) and "\n" not in str(error.value)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of an untrained model knowing fear and sad (no run directory)."""
    torch.manual_seed(0)
    model = EmotionClassifier("resnet18", ["fear", "sad"], input_size=SIZE)
    path = tmp_path_factory.mktemp("untrained") / "fear_sad.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


@pytest.mark.slow
def test_crosseval_matrix(
    checkpoint: Path,
    untrained: Path,
    trees: dict[str, Path],
    run_dir: Path,
    other_eval: dict,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """2 checkpoints x 3 trees through the console entry point: the cells agree with emotionvision-eval."""
    run_app(
        crosseval.main,
        monkeypatch,
        f"checkpoints={{ck:{checkpoint},fear_sad:{untrained}}}",
        f"trees={{ck:{trees['ck']},jaffe:{{root:{trees['jaffe']},class_map:{hydra_dict(OTHER_MAP)}}},"
        f"contempt:{trees['contempt']}}}",
        f"data.class_map={hydra_dict(TRAIN_MAP)}",
        "trainer.accelerator=cpu",
        f"paths.root_dir={tmp_path}",
        f"hydra.run.dir={tmp_path}/crosseval",
    )
    output = tmp_path / "crosseval"
    with (output / "crosseval.csv").open() as handle:
        cells = {(row["train"], row["test"]): row for row in csv.DictReader(handle)}
    assert list(cells) == [(a, b) for a in ("ck", "fear_sad") for b in ("ck", "jaffe", "contempt")]
    same = cells["ck", "jaffe"]  # the very evaluation other_eval ran
    assert float(same["acc"]) == pytest.approx(other_eval["all/acc"])
    assert float(same["macro_f1"]) == pytest.approx(other_eval["all/macro_f1"])
    assert int(same["num_images"]) == other_eval["num_images"] == 11
    assert same["shared_classes"] == "happy;sad" and same["skipped_classes"] == "neutral:4;surprise:3"
    cell_metrics = json.loads((output / same["report"] / "metrics.json").read_text())
    assert cell_metrics["all/confusion_matrix"] == other_eval["all/confusion_matrix"]
    own = cells["ck", "ck"]  # the training tree: its train and val images are flagged
    learnt = [row for row in read_manifest(run_dir / "split.csv") if row["split"] != "test"]
    assert own["shared_classes"] == "anger;happy;sad" and int(own["num_images"]) == 30
    assert int(own["seen"]) == len(learnt) > 0
    one_class = cells["fear_sad", "jaffe"]  # shares sad only
    assert one_class["shared_classes"] == "sad" and int(one_class["num_images"]) == 6
    assert math.isnan(json.loads((output / one_class["report"] / "metrics.json").read_text())["all/auroc"])
    for cell in cells.values():  # each cell's numbers from its predictions, over its shared classes
        if cell["report"]:
            scores = float(cell["acc"]), float(cell["macro_f1"]), int(cell["num_images"])
            predictions = output / cell["report"] / "predictions.csv"
            assert_scores_match_predictions(predictions, cell["shared_classes"].split(";"), *scores)
    for train_set in ("ck", "fear_sad"):
        empty = cells[train_set, "contempt"]
        assert math.isnan(float(empty["acc"])) and empty["note"] == "no shared class"
    report = (output / "crosseval.md").read_text()
    assert f"| ck | {float(own['acc']):.3f} \\* | {float(same['acc']):.3f} | n/a |" in report
    assert f"- ck on ck: {len(learnt)} of the 30 images were in the checkpoint's training" in report
    assert "| fear_sad | contempt | 0 | no shared class |  |  |" in report
    with Image.open(output / "crosseval.png") as image:
        assert image.format == "PNG" and min(image.size) > 200


def assert_scores_match_predictions(
    predictions: Path, shared: list[str], acc: float, macro_f1: float, num_images: int
) -> None:
    """Accuracy and macro-F1 over the `shared` classes as scikit-learn computes them from the report's
    predictions.csv."""
    with predictions.open() as handle:
        rows = list(csv.DictReader(handle))
    truth = [row["true_label"] for row in rows]
    guess = [row["predicted_label"] for row in rows]
    assert set(truth) == set(shared) and len(rows) == num_images
    assert acc == pytest.approx(sk.accuracy_score(truth, guess))
    expected = sk.f1_score(truth, guess, labels=shared, average="macro", zero_division=0)
    assert macro_f1 == pytest.approx(expected, abs=1e-6)


def test_crosseval_names_a_bad_tree_in_one_line(tmp_path: Path) -> None:
    cfg = compose_eval(tmp_path, "checkpoints={a:x.ckpt}", "trees={t:{path:/data}}", name="crosseval")
    with pytest.raises(UsageError, match=r"trees.t=.*give a folder path") as error:
        crosseval.crosseval(cfg)
    assert "\n" not in str(error.value)
    with pytest.raises(UsageError, match=r"checkpoints: give one or more"):
        crosseval.crosseval(compose_eval(tmp_path, "trees={t:/data}", name="crosseval"))
    nowhere = [f"checkpoints={{a:{tmp_path}/a.ckpt}}", f"trees={{t:{tmp_path}}}"]
    missing = compose_eval(tmp_path, *nowhere, name="crosseval")
    with pytest.raises(UsageError, match=r"^checkpoints.a=.*a.ckpt: no such file or folder; fix the path.$"):
        crosseval.crosseval(missing)


def test_crosseval_cell_config_merges_class_maps(tmp_path: Path) -> None:
    cfg = compose_eval(tmp_path, "data.class_map={sad: sadness, angry: anger}", name="crosseval")
    spec = OmegaConf.create({"split_file": "run/split.csv", "class_map": {"sad": "x"}})
    tree = crosseval.tree_spec("ck", spec)
    cell = crosseval.cell_config(cfg, Path("a.ckpt"), tree, tmp_path / "cell")
    assert (cell.data.root, cell.data.split_file, cell.data.split) == (None, "run/split.csv", "test")
    assert cell.data.class_map == {"sad": "x", "angry": "anger"}  # the tree's own map wins
    assert (cell.ckpt_path, cell.output_dir) == ("a.ckpt", str(tmp_path / "cell"))
    plain = crosseval.cell_config(cfg, Path("a.ckpt"), crosseval.tree_spec("t", "/data/t"), tmp_path)
    assert (plain.data.root, plain.data.split_file) == ("/data/t", None)


def test_crosseval_cli_reports_a_usage_error_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    with pytest.raises(SystemExit) as exit_code:
        run_app(crosseval.main, monkeypatch, "trees={t:/data}", f"hydra.run.dir={tmp_path}/run")
    assert exit_code.value.code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("emotionvision-crosseval: error: checkpoints: give one or more")
    assert "\n" not in error and "Traceback" not in error
