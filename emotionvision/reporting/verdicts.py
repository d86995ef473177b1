"""Verdicts of the sanity-check runs (`sanity=shuffled_labels`, `sanity=overfit_batch`): sanity.json."""

from __future__ import annotations

import numpy as np

from emotionvision.reporting.statistics import wilson_interval


def shuffled_labels_verdict(
    train_acc: float, test_confusion: list[list[int]], min_train_gain: float, confidence: float = 0.95
) -> dict:
    """PASS when test accuracy is not significantly above chance while training accuracy is.

    Chance is the majority-class rate of the test split (what predicting the most frequent class
    scores; at least 1/K). Test accuracy is consistent with chance when the lower end of its Wilson
    interval does not exceed that rate. Training accuracy must reach chance + `min_train_gain`
    (the model memorised the permuted labels), else the check is inconclusive and FAILs.
    """
    matrix = np.asarray(test_confusion)
    test_images = int(matrix.sum())
    correct = int(np.trace(matrix))
    chance_majority = float(matrix.sum(axis=1).max() / test_images)
    ci_low, ci_high = wilson_interval(correct, test_images, confidence)
    required = chance_majority + min_train_gain
    test_at_chance = ci_low <= chance_majority
    train_above_chance = train_acc >= required
    if not test_at_chance:
        reason = "test accuracy is above chance although training labels were random: true labels reach"
        reason += " the model or the metrics by another path (e.g. shuffle not applied, wrong split scored)"
    elif not train_above_chance:
        reason = "training accuracy did not climb above chance: inconclusive, train longer"
    else:
        reason = "test accuracy is at chance while the model memorised the random training labels"
    test_acc = correct / test_images
    summary = (
        f"test acc {test_acc:.3f} ({confidence:.0%} Wilson CI {ci_low:.3f}-{ci_high:.3f}, "
        f"{test_images} images) vs chance {chance_majority:.3f} (majority class) / "
        f"{1 / len(matrix):.3f} (1/K); train acc {train_acc:.3f} (required {required:.3f}): {reason}"
    )
    return {
        "check": "shuffled_labels",
        "passed": test_at_chance and train_above_chance,
        "summary": summary,
        "test_acc": test_acc,
        "test_acc_ci": [ci_low, ci_high],
        "confidence": confidence,
        "test_images": test_images,
        "chance_uniform": 1 / len(matrix),
        "chance_majority": chance_majority,
        "train_acc": train_acc,
        "train_acc_required": required,
    }


def overfit_batch_verdict(train_acc: float, batch_images: int, epochs: int, min_train_acc: float) -> dict:
    """PASS when training accuracy on the one fixed batch reached `min_train_acc`."""
    passed = train_acc >= min_train_acc
    fits = "fits" if passed else "could not fit"
    return {
        "check": "overfit_batch",
        "passed": passed,
        "summary": f"train acc {train_acc:.3f} (required {min_train_acc:.3f}) after {epochs} epochs: "
        f"the model {fits} one fixed batch of {batch_images} images",
        "train_acc": train_acc,
        "train_acc_required": min_train_acc,
        "batch_images": batch_images,
        "epochs": epochs,
    }
