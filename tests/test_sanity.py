"""Sanity-check runs (sanity=shuffled_labels, sanity=overfit_batch) and their verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emotionvision.cli.train import train
from emotionvision.reporting.statistics import wilson_interval
from emotionvision.reporting.verdicts import overfit_batch_verdict, shuffled_labels_verdict

TINY = [
    "data=folder",
    "data.image_size=32",
    "data.num_workers=0",
    "logger=csv",
    "++trainer.enable_model_summary=false",
]


def run_sanity_check(compose_train, tmp_path: Path, root: Path, overrides: list[str]) -> dict:
    """Train in-process with the overrides; the sanity.json the run wrote."""
    output_dir = tmp_path / "run"
    cfg = compose_train(
        [
            f"data.root={root}",
            f"paths.output_dir={output_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            *TINY,
            *overrides,
        ]
    )
    train(cfg)
    return json.loads((output_dir / "sanity.json").read_text())


def test_wilson_interval_matches_the_textbook_formula() -> None:
    low, high = wilson_interval(100, 172)  # 58.1% of a 172-image test set
    assert low == pytest.approx(0.5067, abs=1e-3)
    assert high == pytest.approx(0.6522, abs=1e-3)


def test_shuffled_labels_pass_at_chance_with_memorised_training_set() -> None:
    confusion = [[8, 6, 6], [7, 7, 6], [6, 7, 7]]  # 22 of 60 right; majority class rate 1/3
    verdict = shuffled_labels_verdict(train_acc=0.95, test_confusion=confusion, min_train_gain=0.2)
    assert verdict["passed"]
    assert verdict["chance_uniform"] == pytest.approx(1 / 3)
    assert verdict["chance_majority"] == pytest.approx(1 / 3)
    assert verdict["test_images"] == 60
    low, high = verdict["test_acc_ci"]
    assert low < 22 / 60 < high


def test_shuffled_labels_fail_when_test_accuracy_beats_chance() -> None:
    confusion = [[18, 1, 1], [1, 18, 1], [1, 1, 18]]  # 90% right although training labels were random
    verdict = shuffled_labels_verdict(train_acc=0.95, test_confusion=confusion, min_train_gain=0.2)
    assert not verdict["passed"]
    assert "above chance" in verdict["summary"]


def test_shuffled_labels_fail_as_inconclusive_when_training_stays_at_chance() -> None:
    confusion = [[8, 6, 6], [7, 7, 6], [6, 7, 7]]
    verdict = shuffled_labels_verdict(train_acc=0.4, test_confusion=confusion, min_train_gain=0.2)
    assert not verdict["passed"]
    assert "inconclusive" in verdict["summary"]


def test_majority_class_rate_is_the_chance_level_of_an_imbalanced_test_split() -> None:
    confusion = [[30, 0], [10, 0]]  # always predicting the majority class: 75%, not significant
    verdict = shuffled_labels_verdict(train_acc=1.0, test_confusion=confusion, min_train_gain=0.2)
    assert verdict["chance_majority"] == pytest.approx(0.75)
    assert verdict["chance_uniform"] == pytest.approx(0.5)
    assert verdict["passed"]


def test_overfit_batch_verdict() -> None:
    assert overfit_batch_verdict(1.0, batch_images=18, epochs=4, min_train_acc=0.99)["passed"]
    assert not overfit_batch_verdict(0.8, batch_images=18, epochs=100, min_train_acc=0.99)["passed"]


def test_overfit_batch_run_fits_one_batch(compose_train, tmp_path: Path, make_tree) -> None:
    root = make_tree(tmp_path / "images")
    overrides = [
        "sanity=overfit_batch",
        "~callbacks.model_checkpoint",
        "~callbacks.last_checkpoint",
        "++trainer.enable_checkpointing=false",
    ]
    verdict = run_sanity_check(compose_train, tmp_path, root, overrides)
    assert verdict["verdict"] == "PASS", verdict
    assert verdict["train_acc"] == 1.0
    assert verdict["epochs"] < 100  # stopped once the batch was fitted


def test_shuffled_labels_run_passes_on_a_sound_pipeline(compose_train, tmp_path: Path, make_tree) -> None:
    root = make_tree(tmp_path / "images")
    verdict = run_sanity_check(
        compose_train,
        tmp_path,
        root,
        [
            "sanity=shuffled_labels",
            "data.split_ratios=[0.5,0.1,0.4]",  # a larger test split: chance is measured on 12 images
            "trainer.max_epochs=8",
            "scheduler=none",
            "callbacks=none",  # no checkpoints or validation: the test split is scored after training
            "++trainer.enable_checkpointing=false",
            "++trainer.limit_val_batches=0",
        ],
    )
    assert verdict["verdict"] == "PASS", verdict
    assert verdict["test_acc_ci"][0] <= verdict["chance_majority"]
    assert verdict["train_acc"] >= verdict["chance_majority"] + 0.2
    assert verdict["test_images"] >= 10
