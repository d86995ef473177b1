"""The report figures read unambiguously: captions that fit, the reliability diagram's legend, chance
lines."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from emotionvision.reporting.figures import (
    CAPTION_WIDTH,
    cross_validation_figure,
    image_grid_figure,
    mistake_caption,
    reliability_figure,
    save_png,
    shorten_middle,
)
from emotionvision.reporting.scores import (
    calibration_bins,
    chance_levels,
    confident_mistakes,
    report_results,
)

LONG_NAME = "subject_000123_session_04_take_17_frame_000981_left_camera.png"


def test_shorten_middle_keeps_both_ends_within_the_width() -> None:
    assert shorten_middle("short.png") == "short.png"
    short = shorten_middle(LONG_NAME)
    assert len(short) == CAPTION_WIDTH and "…" in short
    assert short.startswith("subject_000") and short.endswith("camera.png")
    assert len(shorten_middle(LONG_NAME, 9)) == 9


def test_mistake_captions_fit_their_panels(tmp_path: Path) -> None:
    """Captions of long file and class names: every line bounded, and drawn without overlapping
    their neighbours or leaving the figure."""
    captions = [
        mistake_caption(f"/data/{i}_{LONG_NAME}", "happiness_with_surprise", "neutral_expression", 0.987)
        for i in range(8)
    ]
    for caption in captions:
        lines = caption.split("\n")
        assert len(lines) == 3 and max(map(len, lines)) <= CAPTION_WIDTH, caption
        assert lines[2].endswith("(0.99)")
    figure = image_grid_figure([np.zeros((32, 32, 3), np.uint8)] * 8, captions, "mistakes")
    save_png(figure, tmp_path / "errors.png")  # lays the figure out
    width = figure.bbox.width
    rows: dict[float, list] = {}
    for axes in figure.axes:
        if axes.get_title():
            box = axes.title.get_window_extent()
            assert box.x0 >= 0 and box.x1 <= width
            rows.setdefault(round(axes.get_position().y0, 3), []).append(box)
    assert sum(map(len, rows.values())) == 8
    for boxes in rows.values():
        boxes.sort(key=lambda box: box.x0)
        assert all(left.x1 < right.x0 for left, right in pairwise(boxes))


def test_confident_mistakes_are_the_wrong_ones_most_confident_first() -> None:
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.95, 0.05]])
    targets = torch.tensor([1, 1, 1, 0, 0])
    assert confident_mistakes(probabilities, targets, 5) == [0, 3, 2]
    assert confident_mistakes(probabilities, targets, 2) == [0, 3]


def test_reliability_diagram_tells_accuracy_confidence_and_gap_apart() -> None:
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.softmax(3 * torch.randn(400, 3, generator=generator), dim=1)
    targets = torch.randint(0, 3, (400,), generator=generator)
    accuracy, confidence, share = (values.numpy() for values in calibration_bins(probabilities, targets))
    figure = reliability_figure(accuracy, confidence, share, 0.1, "test")
    top = figure.axes[0]
    labels = [text.get_text() for text in top.get_legend().get_texts()]
    assert sorted(labels) == [
        "accuracy in bin (bar)",
        "gap: mean confidence - accuracy",
        "mean confidence in bin (tick)",
        "perfect calibration",
    ]
    ticks = next(c for c in top.collections if c.get_label() == "mean confidence in bin (tick)")
    heights = sorted(segment[0][1] for segment in ticks.get_segments())
    assert heights == pytest.approx(sorted(confidence[share > 0]))


def test_chance_levels_are_what_a_uniform_random_guess_scores() -> None:
    """Imbalanced classes: the formulas against the project's metrics of 200,000 random guesses."""
    support = [20_000, 60_000, 120_000, 0]
    targets = torch.repeat_interleave(torch.arange(4), torch.tensor(support))
    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand(len(targets), 4, generator=generator)
    probabilities /= probabilities.sum(dim=1, keepdim=True)
    measured = report_results(probabilities, targets, ["a", "b", "c", "d"])
    levels = chance_levels(support)
    assert levels["acc"] == 0.25
    for name in ("acc", "macro_f1", "auroc"):
        assert measured[name] == pytest.approx(levels[name], abs=0.004), name
    assert chance_levels([5, 5, 5])["macro_f1"] == pytest.approx(1 / 3)


def test_cross_validation_figure_draws_labelled_chance_lines() -> None:
    values = {"acc": [0.5, 0.6], "macro_f1": [0.4, 0.5], "auroc": [0.7, 0.8]}
    chance = chance_levels([10, 10, 20])
    figure = cross_validation_figure(values, np.eye(3, dtype=int) * 10, ["a", "b", "c"], "cv", chance)
    axes = figure.axes[0]
    lines = [c for c in axes.collections if c.get_linestyle()[0][1] is not None]  # dashed
    assert sorted(segments[0][1] for c in lines for segments in c.get_segments()) == pytest.approx(
        sorted(chance.values())
    )
    (label,) = [text.get_text() for text in axes.get_legend().get_texts()]
    assert label.startswith("chance: a uniform random guess among 3 classes")
