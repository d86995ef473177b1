"""The report's metrics (torchmetrics) against scikit-learn and hand computation on fixed predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from emotionvision.reporting.run_report import classification_report_text
from emotionvision.reporting.scores import CALIBRATION_BINS, calibration_bins, report_results

CLASSES = ["anger", "happy", "pain", "sad"]


@pytest.fixture(scope="module")
def predictions() -> tuple[np.ndarray, np.ndarray]:
    """Fixed probabilities (60 x 4, rows sum to 1) loosely agreeing with their targets."""
    rng = np.random.default_rng(7)
    targets = np.repeat(np.arange(len(CLASSES)), [9, 21, 12, 18])
    logits = rng.normal(size=(len(targets), len(CLASSES))) + 1.5 * np.eye(len(CLASSES))[targets]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probabilities.astype(np.float32), targets


@pytest.fixture(scope="module")
def results(predictions: tuple[np.ndarray, np.ndarray]) -> dict[str, float]:
    probabilities, targets = map(torch.from_numpy, predictions)
    return report_results(probabilities, targets, CLASSES)


def test_summary_metrics_match_sklearn(predictions, results) -> None:
    probabilities, targets = predictions
    predicted = probabilities.argmax(axis=1)
    expected = {
        "acc": sk.accuracy_score(targets, predicted),
        "balanced_acc": sk.balanced_accuracy_score(targets, predicted),
        "macro_f1": sk.f1_score(targets, predicted, average="macro"),
        "macro_precision": sk.precision_score(targets, predicted, average="macro"),
        "weighted_precision": sk.precision_score(targets, predicted, average="weighted"),
        "weighted_recall": sk.recall_score(targets, predicted, average="weighted"),
        "weighted_f1": sk.f1_score(targets, predicted, average="weighted"),
        "auroc": sk.roc_auc_score(targets, probabilities, multi_class="ovr", average="macro"),
        "log_loss": sk.log_loss(targets, probabilities, labels=range(len(CLASSES))),
    }
    assert 0.3 < expected["acc"] < 0.95  # neither trivial nor perfect, so the comparison means something
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=1e-5), name


def test_per_class_metrics_match_sklearn(predictions, results) -> None:
    probabilities, targets = predictions
    precision, recall, f1, support = sk.precision_recall_fscore_support(targets, probabilities.argmax(axis=1))
    for index, name in enumerate(CLASSES):
        assert results[f"precision/{name}"] == pytest.approx(precision[index], abs=1e-6)
        assert results[f"recall/{name}"] == pytest.approx(recall[index], abs=1e-6)
        assert results[f"f1/{name}"] == pytest.approx(f1[index], abs=1e-6)
        assert results[f"support/{name}"] == support[index]
        one_vs_rest = sk.roc_auc_score(targets == index, probabilities[:, index])
        assert results[f"auroc/{name}"] == pytest.approx(one_vs_rest, abs=1e-6)


def test_ece_and_reliability_bins_match_hand_computation(predictions, results) -> None:
    probabilities, targets = predictions
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    bins = np.minimum((confidence * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    ece = sum(
        abs(correct[bins == b].mean() - confidence[bins == b].mean()) * np.mean(bins == b)
        for b in np.unique(bins)
    )
    assert results["ece"] == pytest.approx(ece, abs=1e-5)

    accuracy, mean_confidence, share = calibration_bins(*map(torch.from_numpy, predictions))
    assert share.sum() == pytest.approx(1.0)
    for b in np.unique(bins):
        assert accuracy[b] == pytest.approx(correct[bins == b].mean(), abs=1e-6)
        assert mean_confidence[b] == pytest.approx(confidence[bins == b].mean(), abs=1e-6)
    assert float((share * (accuracy - mean_confidence).abs()).sum()) == pytest.approx(
        results["ece"], abs=1e-6
    )


def test_classification_report_text_is_the_familiar_table_then_the_summary(predictions, results) -> None:
    probabilities, targets = predictions
    text = classification_report_text(*map(torch.from_numpy, predictions), CLASSES, results)
    table = sk.classification_report(targets, probabilities.argmax(axis=1), target_names=CLASSES, digits=3)
    assert text.startswith(table)
    assert f"log-loss {results['log_loss']:.4f}\n" in text
    assert "no images" not in text


def test_macro_averages_run_over_the_classes_with_images(predictions) -> None:
    """Data holding only some of the model's classes (cross-data-set evaluation): macro averages over
    those, as scikit-learn's with labels=present; the absent classes' recall, F1 and AUC are NaN."""
    probabilities, targets = predictions
    kept = np.isin(targets, [1, 3])  # happy and sad only; the model still predicts all four
    probabilities, targets = probabilities[kept], targets[kept]
    predicted = probabilities.argmax(axis=1)
    assert set(predicted) - {1, 3}  # some predictions fall on the absent classes
    results = report_results(*map(torch.from_numpy, (probabilities, targets)), CLASSES)
    present = [1, 3]
    expected = {
        "acc": sk.accuracy_score(targets, predicted),
        "balanced_acc": sk.recall_score(targets, predicted, labels=present, average="macro"),
        "macro_f1": sk.f1_score(targets, predicted, labels=present, average="macro"),
        "macro_precision": sk.precision_score(targets, predicted, labels=present, average="macro"),
        "weighted_f1": sk.f1_score(targets, predicted, labels=present, average="weighted"),
        "auroc": np.mean([sk.roc_auc_score(targets == c, probabilities[:, c]) for c in present]),
    }
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=1e-5), name
    for name in ("anger", "pain"):
        assert results[f"support/{name}"] == 0
        assert all(np.isnan(results[f"{metric}/{name}"]) for metric in ("recall", "f1", "auroc"))
    # the text report's table lists the classes with images and averages over them, as the metrics do
    text = classification_report_text(*map(torch.from_numpy, (probabilities, targets)), CLASSES, results)
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}
    assert {"happy", "sad"} <= rows.keys() and not {"anger", "pain"} & rows.keys()
    macro_avg = next(line for line in text.splitlines() if line.strip().startswith("macro avg"))
    assert [float(value) for value in macro_avg.split()[2:5]] == pytest.approx(
        [results[name] for name in ("macro_precision", "balanced_acc", "macro_f1")], abs=5e-4
    )
    assert f"accuracy {results['acc']:.4f} (no images of anger, pain; predicting them is a mistake)" in text


def test_one_class_has_no_roc_auc(predictions) -> None:
    probabilities, targets = predictions
    only_sad = targets == 3
    results = report_results(
        torch.from_numpy(probabilities[only_sad]), torch.from_numpy(targets[only_sad]), CLASSES
    )
    assert np.isnan(results["auroc"]) and np.isnan(results["auroc/sad"])
    assert results["macro_f1"] == pytest.approx(results["f1/sad"])
    assert results["balanced_acc"] == pytest.approx(results["acc"])
