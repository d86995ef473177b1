"""Cross-validation: stratified group-aware folds and leave-one-group-out, the fold run mode of
emotionvision-train (a job per fold, under any launcher) with its summary, and fold-paired comparison."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emotionvision.cli.crossval import CrossValidation, fold_subdir, sweep_override_keys, sweeper_params
from emotionvision.data import EmotionDataModule
from emotionvision.errors import UsageError

BIN = Path(sys.executable).parent
SUBJECT = r"^(S\d+)_"


def subject(path: str) -> str:
    return Path(path).name.split("_")[0]


def fold_module(root: Path, cache: Path, **options) -> EmotionDataModule:
    module = EmotionDataModule(
        root, image_size=16, cache_dir=cache, num_workers=0, group_by=SUBJECT, **options
    )
    module.setup()
    return module


def test_folds_are_subject_disjoint_and_test_every_image_once(tmp_path: Path, make_subject_tree) -> None:
    root = make_subject_tree(tmp_path / "images", subjects=9)
    tested: list[str] = []
    for fold in range(3):
        module = fold_module(root, tmp_path / "cache", folds=3, fold=fold)
        splits_of_subject = defaultdict(set)
        for path, _, split, *_ in module.manifest:
            splits_of_subject[subject(path)].add(split)
        assert all(len(splits) == 1 for splits in splits_of_subject.values())
        assert {split for splits in splits_of_subject.values() for split in splits} == {
            "train",
            "val",
            "test",
        }
        tested += [path for path, _, split, *_ in module.manifest if split == "test"]
    assert sorted(tested) == sorted(str(path) for path in root.rglob("*.png"))  # each image once


def test_loso_leaves_out_one_subject_per_fold(tmp_path: Path, make_subject_tree) -> None:
    root = make_subject_tree(tmp_path / "images", subjects=5)
    module = EmotionDataModule(
        root, image_size=16, cache_dir=tmp_path / "cache", group_by=SUBJECT, folds="loso", fold=0
    )
    assert module.fold_count() == 5
    held_out = set()
    for fold in range(5):
        module = fold_module(root, tmp_path / "cache", folds="loso", fold=fold)
        (test_subject,) = {subject(path) for path, _, split, *_ in module.manifest if split == "test"}
        assert test_subject not in {
            subject(path) for path, _, split, *_ in module.manifest if split != "test"
        }
        held_out.add(test_subject)
    assert len(held_out) == 5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"folds": "loso", "fold": 0, "group_by": None},
            "data.folds=loso leaves one group out: set data.group_by",
        ),
        ({"folds": 1, "fold": 0}, "data.folds=1: give a number of folds of 2 or more, or loso."),
        ({"folds": 3, "fold": 3}, "data.fold=3: data.folds=3 has no such fold"),
    ],
)
def test_fold_options_are_checked(tmp_path: Path, make_subject_tree, options: dict, message: str) -> None:
    root = make_subject_tree(tmp_path / "images", subjects=6)
    module = EmotionDataModule(
        root, image_size=16, cache_dir=tmp_path / "cache", **{"group_by": SUBJECT} | options
    )
    with pytest.raises(UsageError, match=message.replace(".", r"\.")):
        module.setup()


def train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "EMOTIONVISION_ROOT"}
    command = [str(BIN / "emotionvision-train"), *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


@pytest.mark.slow
def test_folds_of_two_variants_under_joblib_write_summaries_and_compare_fold_by_fold(
    tmp_path: Path, make_subject_tree, quick_run_overrides
) -> None:
    """`emotionvision-train data.folds=2 optimizer.lr=a,b` (no -m: the folds make it a multirun) runs the
    swept variant's folds under the joblib launcher in variant/fold<k>/, writes each variant's summary,
    and emotionvision-compare pairs the variants fold by fold."""
    root = make_subject_tree(tmp_path / "images", subjects=4)
    # n_jobs=1: joblib runs the jobs in this process (workers of their own would each import torch again)
    args = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "optimizer.lr=0.001,0.0001"]
    data = ["data=folder", f"data.root={root}", "data.folds=2", f"data.group_by='{SUBJECT}'"]
    train([*args, *data, *quick_run_overrides], tmp_path)
    (sweep_dir,) = (tmp_path / "logs/train/multiruns").iterdir()
    assert OmegaConf.load(sweep_dir / "multirun.yaml").hydra.sweeper.params == {"data.fold": "range(2)"}
    for variant in ("optimizer.lr=0.001", "optimizer.lr=0.0001"):
        folder = sweep_dir / variant
        assert sorted(path.name for path in folder.glob("fold*")) == ["fold0", "fold1"]
        folds = [json.loads((folder / f"fold{k}/metrics.json").read_text()) for k in range(2)]
        summary = json.loads((folder / "cv_summary.json").read_text())
        assert summary["folds"] == 2 and summary["classes"] == ["anger", "happy", "sad"]
        assert summary["test/acc"]["values"] == [fold["test/acc"] for fold in folds]
        assert summary["test/macro_f1"]["mean"] == pytest.approx(
            np.mean([fold["test/macro_f1"] for fold in folds])
        )
        pooled = np.sum([fold["test/confusion_matrix"] for fold in folds], axis=0)
        assert summary["pooled_confusion_matrix"] == pooled.tolist() and pooled.sum() == 24  # each image once
        assert summary["pooled_recall"]["happy"] == pytest.approx(pooled[1, 1] / pooled[1].sum())
        assert "| acc |" in (folder / "cv_summary.md").read_text()
        events = EventAccumulator(str(folder / "tensorboard"))
        events.Reload()
        accuracy = [event.value for event in events.Scalars("cross_validation/acc")]
        assert accuracy == pytest.approx([fold["test/acc"] for fold in folds])
        assert (folder / "cv_summary.png").stat().st_size > 0
    compare = subprocess.run(
        [str(BIN / "emotionvision-compare"), str(sweep_dir)], capture_output=True, text=True, timeout=300
    )
    assert compare.returncode == 0, compare.stderr[-3000:]
    assert "over 2 paired folds" in compare.stdout, compare.stdout  # the variants differ fold by fold
    assert "Each fold's runs used the same split (2 folds, 24 test images in all)" in compare.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["hparams_search=optuna", "data.folds=3"],
            "data.folds=3 runs every fold under Hydra's basic sweeper, not OptunaSweeper: search on one "
            "split (drop data.folds), then cross-validate the best settings.",
        ),
        (
            ["data=folder", "data.root=TREE", "data.folds=loso"],
            "data.folds=loso leaves one group out: set data.group_by to name each subject.",
        ),
    ],
    ids=["search-sweeper", "loso-without-group_by"],
)
def test_fold_mistakes_end_in_one_line_before_any_job(
    tmp_path: Path, make_subject_tree, args: list[str], message: str
) -> None:
    """The folds are counted when the sweep starts, before any job runs (Optuna would sample folds as
    a search space)."""
    tree = make_subject_tree(tmp_path / "images", subjects=3)
    env = {key: value for key, value in os.environ.items() if key != "EMOTIONVISION_ROOT"}
    command = [str(BIN / "emotionvision-train"), *(arg.replace("TREE", str(tree)) for arg in args)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and not (tmp_path / "logs").exists()
    assert result.stderr.strip().splitlines() == [f"emotionvision-train: error: {message}"]


def test_the_sweep_gains_every_fold_first_when_it_starts(
    tmp_path: Path, make_subject_tree, compose_train
) -> None:
    """With data.folds=loso the sweep gains data.fold=range(<groups>), before an experiment's swept keys
    (folds vary slowest); with data.fold chosen it is left as it is."""
    root = make_subject_tree(tmp_path / "images", subjects=5)
    data = ["data=folder", f"data.root={root}", "data.folds=loso", f"data.group_by='{SUBJECT}'"]
    overrides = ["experiment=compare_augmentation", *data, f"paths.root_dir={tmp_path}"]
    config = compose_train(overrides, return_hydra_config=True)
    experiment_params = OmegaConf.to_container(config.hydra.sweeper.params)
    CrossValidation().on_multirun_start(config)
    params = OmegaConf.to_container(config.hydra.sweeper.params)
    assert list(params.items()) == [("data.fold", "range(5)"), *experiment_params.items()]
    one_fold = compose_train([*overrides, "data.fold=2"], return_hydra_config=True)
    CrossValidation().on_multirun_start(one_fold)
    assert OmegaConf.to_container(one_fold.hydra.sweeper.params) == experiment_params


def test_more_folds_than_groups_are_refused_before_any_job(
    tmp_path: Path, make_tree, make_subject_tree, compose_train
) -> None:
    """data.folds=1000 on 60 images composed a job per fold for minutes: the folds are checked against
    the images (and subjects) listed when the sweep starts, and it ends in one line, no fold added."""
    root = make_tree(tmp_path / "images", dict.fromkeys(["anger", "happy", "sad"], 20))
    config = compose_train(
        ["data=folder", f"data.root={root}", "data.folds=1000", f"paths.root_dir={tmp_path}"],
        return_hydra_config=True,
    )
    with pytest.raises(SystemExit) as exited:
        CrossValidation().on_multirun_start(config)
    assert exited.value.code.endswith(
        f"error: data.folds=1000: {root} holds 60 images of the chosen classes, each fold testing whole "
        "groups of them: set data.folds to 60 or fewer (5 or 10 is usual)."
    )
    assert "data.fold" not in sweeper_params(config.hydra.sweeper)
    assert not (tmp_path / "cache").exists()  # nothing decoded
    subjects = make_subject_tree(tmp_path / "subjects", subjects=6)
    module = EmotionDataModule(subjects, cache_dir=tmp_path / "cache", group_by=SUBJECT, folds=7, fold=0)
    with pytest.raises(UsageError, match=r"data\.folds=7: .* has 6 subjects, each kept whole in one fold"):
        module.fold_count()
    with pytest.raises(UsageError, match=r"data\.folds=7: .* has 6 subjects"):
        module.setup()  # a single fold is checked before its decode too
    assert not (tmp_path / "cache").exists()
    module = EmotionDataModule(subjects, cache_dir=tmp_path / "cache", group_by=SUBJECT, folds=6, fold=0)
    assert module.fold_count() == 6


def test_an_oversized_loso_validation_is_warned(tmp_path: Path, make_subject_tree, caplog) -> None:
    """Leave-one-subject-out carves validation from whole subjects: 1 of the 3 left (12 images)
    against a target of 6 (15/85 of 36). The size check runs for loso too, its test share being
    the held-out subject's."""
    root = make_subject_tree(tmp_path / "images", subjects=4, per_subject=4)
    with caplog.at_level(logging.WARNING, logger="emotionvision"):
        module = fold_module(root, tmp_path / "cache", folds="loso", fold=0)
    sizes = {split: len(dataset) for split, dataset in module.datasets.items()}
    assert sizes == {"train": 24, "val": 12, "test": 12}
    assert "The val split holds 12 images, 6 off its target of 6" in caplog.text
    assert "The test split" not in caplog.text


def test_fold_directories_are_named_by_the_other_swept_values(tmp_path: Path) -> None:
    """Hydra's override grammar tells swept keys (a,b and range(); not a quoted 'a,b') on the command
    line and in sweeper parameters; a fold's directory holds the job's values of those keys."""
    task = ["data.folds=3", "+trainer.gradient_clip_val=1,2", "model.init_from=null,runs/a.ckpt", "x='a,b'"]
    params = {"data.fold": "range(3)", "seed": "range(2)", "augmentation": "none"}
    multirun = {"hydra": {"overrides": {"task": task}, "sweeper": {"params": params}}}
    OmegaConf.save(multirun, tmp_path / "multirun.yaml")
    swept = sweep_override_keys(tmp_path / "multirun.yaml")
    assert swept == {"trainer.gradient_clip_val", "model.init_from", "seed"}
    job = ["data.fold=1", "seed=0", "augmentation=none", "data.folds=3", "+trainer.gradient_clip_val=2"]
    job += ["model.init_from=runs/a.ckpt", "x='a,b'"]
    expected = "seed=0,+trainer.gradient_clip_val=2,model.init_from=runs_a.ckpt/fold1"
    assert fold_subdir(7, 1, str(tmp_path), job) == expected
    assert fold_subdir(7, None, str(tmp_path), job) == "7"  # a job of a sweep without folds
    assert fold_subdir(7, 1, str(tmp_path / "elsewhere"), job) == "fold1"  # no multirun.yaml: no variants
