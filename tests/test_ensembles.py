"""Ensembles: several checkpoints (a list, or a seed sweep's folder) evaluated as one model, the mean of
their class probabilities, refused when they disagree on classes or preprocessing, and set beside
the single models by emotionvision-compare."""

from __future__ import annotations

import copy
import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from emotionvision.cli import evaluate
from emotionvision.errors import UsageError
from emotionvision.models.classifier import load_classifier
from emotionvision.models.ensemble import Ensemble, checkpoint_paths, load_checkpoints
from emotionvision.reporting.comparison import compare

CLASSES = ["anger", "happy", "sad"]
GREY = {"detector": None, "margin": 0.0, "grey": True, "no_face": "whole"}
REPORT_FILES = (
    "metrics.json",
    "classification_report.txt",
    "predictions.csv",
    "confusion_matrix.png",
    "roc_curves.png",
    "reliability.png",
    "errors.png",
)


def run_app(main, *overrides: str) -> None:
    """Run a Hydra console entry point in this process with command-line `overrides`."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(sys, "argv", ["emotionvision", *overrides])
        main()


@pytest.fixture(scope="module")
def sweep_dir(seed_sweep: Path) -> Path:
    """`emotionvision-train -m seed=0,1 tta=flip`: two runs on one split, each tested after fit."""
    return seed_sweep


@pytest.fixture(scope="module")
def work(seed_sweep: Path) -> Path:
    """The root of the sweep (and of its decode cache)."""
    return seed_sweep.parent


@pytest.fixture(scope="module")
def members(sweep_dir: Path) -> list[Path]:
    """The best checkpoint of each run of the sweep, in job order."""
    return [next((sweep_dir / job / "checkpoints").glob("best-*.ckpt")) for job in ("0", "1")]


@pytest.fixture(scope="module")
def ensemble_dir(sweep_dir: Path, work: Path) -> Path:
    """`emotionvision-eval ckpt_path=SWEEP_DIR tta=flip`: the ensemble of the sweep's checkpoints,
    with the test-time augmentation of their runs' tests."""
    overrides = [f"ckpt_path={sweep_dir}", "tta=flip", f"paths.root_dir={work}"]
    run_app(evaluate.main, *overrides, f"hydra.run.dir={work}/ensemble")
    return work / "ensemble"


def read_predictions(folder: Path) -> tuple[list[str], torch.Tensor]:
    """The image paths and class probabilities of a report's predictions.csv."""
    with (folder / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    probabilities = [[float(row[f"prob_{name}"]) for name in CLASSES] for row in rows]
    return [row["path"] for row in rows], torch.tensor(probabilities, dtype=torch.float64)


def read_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def test_an_ensemble_averages_its_members_probabilities(
    sweep_dir: Path, members: list[Path], ensemble_dir: Path
) -> None:
    assert checkpoint_paths(sweep_dir) == members
    metrics = read_metrics(ensemble_dir)
    assert metrics["checkpoints"] == [str(path) for path in members] and metrics["tta"] == "flip"
    for name in REPORT_FILES:
        assert (ensemble_dir / name).is_file(), name
    assert not (ensemble_dir / "learning_curves.png").exists()  # one training run's: none for an ensemble
    # each member alone: the report of its run's test after fit, on the same test images
    paths, ensemble = read_predictions(ensemble_dir)
    (first_paths, first), (second_paths, second) = (read_predictions(p.parent.parent) for p in members)
    assert paths == first_paths == second_paths and len(paths) == metrics["num_images"] > 0
    assert not torch.allclose(first, second, atol=1e-3)  # two seeds, two models
    assert torch.allclose(ensemble, (first + second) / 2, atol=2e-6)  # predictions.csv has 6 decimals
    # the same mean, of the members' test-time augmented probabilities
    model = load_checkpoints(members)
    assert isinstance(model, Ensemble) and model.hparams.members == [str(path) for path in members]
    images = torch.rand(4, 3, 32, 32)
    with torch.inference_mode():
        alone = [member.probabilities(images, "flip") for member in model.members]
        assert torch.allclose(model.probabilities(images, "flip"), sum(alone) / 2, atol=1e-6)


def test_an_ensemble_of_a_checkpoint_with_itself_scores_as_the_checkpoint(
    members: list[Path], work: Path
) -> None:
    first = members[0]
    output = work / "twice"
    overrides = [f"ckpt_path=[{first},{first}]", "tta=flip", f"paths.root_dir={work}"]
    run_app(evaluate.main, *overrides, f"hydra.run.dir={output}")
    twice, alone = read_metrics(output), read_metrics(first.parent.parent)
    assert twice["checkpoints"] == [str(first), str(first)]
    for name in ("test/acc", "test/macro_f1", "test/auroc", "test/log_loss", "test/ece"):
        assert twice[name] == pytest.approx(alone[name], abs=1e-6), name
    assert twice["test/confusion_matrix"] == alone["test/confusion_matrix"]


def test_checkpoints_that_disagree_are_refused_in_one_line(
    members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    first, second = (load_classifier(path) for path in members)
    changes = {
        "class_names": ["anger", "happy", "surprise"],
        "input_size": 48,
        "mean": [0.5, 0.5, 0.5],
        "face_crop": GREY,
    }
    for setting, value in changes.items():
        changed = copy.deepcopy(second)
        changed.hparams[setting] = value
        with pytest.raises(UsageError) as refusal:
            Ensemble([first, second, changed], ["a.ckpt", "b.ckpt", "c.ckpt"])
        message = str(refusal.value)
        assert "\n" not in message and message.startswith(f"ckpt_path: c.ckpt has {setting}=")
    # the command: a checkpoint saved with another face crop
    contents = torch.load(members[1], weights_only=True)
    grey = tmp_path / "grey.ckpt"
    torch.save(contents | {"hyper_parameters": contents["hyper_parameters"] | {"face_crop": GREY}}, grey)
    with pytest.raises(SystemExit):
        run_app(
            evaluate.main,
            f"ckpt_path=[{members[0]},{grey}]",
            f"paths.root_dir={tmp_path}",
            f"hydra.run.dir={tmp_path / 'refused'}",
        )
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"emotionvision-eval: error: ckpt_path: {grey} has face_crop=")


def test_compare_sets_the_ensemble_beside_the_single_models(
    sweep_dir: Path, ensemble_dir: Path, tmp_path: Path
) -> None:
    # a second ensemble's report, of another sweep's checkpoints, and one checkpoint's evaluation
    # without tta each stand as their own variant
    other, single = tmp_path / "other_ensemble", tmp_path / "single_checkpoint"
    for folder, checkpoints, tta in (
        (other, [f"other_sweep/{job}/checkpoints/best.ckpt" for job in (0, 1)], "flip"),
        (single, ["some_run/checkpoints/best-epoch007.ckpt"], "none"),
    ):
        shutil.copytree(ensemble_dir, folder)
        metrics = read_metrics(folder)
        metrics.update(checkpoints=checkpoints, tta=tta)
        (folder / "metrics.json").write_text(json.dumps(metrics))
    report = compare([sweep_dir, ensemble_dir, other, single], tmp_path / "out")
    ensemble = f"ensemble of 2 checkpoints from {sweep_dir.name}, tta=flip"
    assert "| single models | 2 |" in report
    assert f"| {ensemble} | 1 |" in report
    assert "| ensemble of 2 checkpoints from other_sweep, tta=flip | 1 |" in report
    assert "| best-epoch007.ckpt from some_run | 1 |" in report
    assert "Every run used the same split" in report
    assert "## Not paired: each beside the runs of its checkpoints, else beside single models" in report
    assert f"- {ensemble}: test/acc " in report and "unpaired, so no test" in report
    with (tmp_path / "out/runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["variant"] for row in rows][:3] == ["single models", "single models", ensemble]


def test_compare_sets_each_ensemble_beside_the_runs_of_its_checkpoints(
    sweep_dir: Path, ensemble_dir: Path, tmp_path: Path
) -> None:
    # a second sweep (label smoothing) that scored 0.99 on every metric, and the ensemble of its checkpoints
    sweep_smooth, ensemble_smooth = tmp_path / "sweep_smooth", tmp_path / "ensemble_smooth"
    shutil.copytree(sweep_dir, sweep_smooth)
    shutil.copytree(ensemble_dir, ensemble_smooth)
    for job in ("0", "1"):
        with (sweep_smooth / job / ".hydra/overrides.yaml").open("a") as handle:
            handle.write("- loss.label_smoothing=0.1\n")
        metrics = read_metrics(sweep_smooth / job)
        metrics.update({name: 0.99 for name in ("test/acc", "test/macro_f1", "test/auroc")})
        (sweep_smooth / job / "metrics.json").write_text(json.dumps(metrics))
    metrics = read_metrics(ensemble_smooth)
    checkpoints = [str(next((sweep_smooth / job / "checkpoints").glob("best-*.ckpt"))) for job in ("0", "1")]
    metrics.update(
        {name: 1.0 for name in ("test/acc", "test/macro_f1", "test/auroc")}, checkpoints=checkpoints
    )
    (ensemble_smooth / "metrics.json").write_text(json.dumps(metrics))
    report = compare([sweep_dir, sweep_smooth, ensemble_dir, ensemble_smooth], tmp_path / "out")
    lines = [line for line in report.splitlines() if line.endswith("unpaired, so no test.")]
    own, other = (
        next(line for line in lines if f"from {name}," in line) for name in (sweep_dir.name, "sweep_smooth")
    )
    assert own.endswith("of the loss.label_smoothing=(default) runs; unpaired, so no test.")
    assert "test/acc 1.000 (above 2 of 2)" in other
    assert other.endswith("of the loss.label_smoothing=0.1 runs; unpaired, so no test.")
