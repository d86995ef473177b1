"""Matplotlib figures, built as `Figure` objects (no pyplot: no global figure registry or backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from emotionvision.atomic import atomic_open
from emotionvision.rundir import metric_key

# characters a caption line of `image_grid_figure` holds within its panel (2.6 inches at 9 points)
CAPTION_WIDTH = 28
CHANCE_STYLE = {"linestyle": "--", "color": "tab:red", "linewidth": 1.2}
# the chance line's legend (levels: `scores.chance_levels`)
CHANCE_LABEL = (
    "chance: a uniform random guess among {classes} classes\n(acc 1/{classes}, its macro-F1, ROC-AUC 0.5)"
)


def confusion_matrix_figure(matrix: np.ndarray, class_names: list[str], title: str) -> Figure:
    """Counts annotated on a row-normalised colour scale; true classes on rows."""
    size = 1.0 + 0.8 * len(class_names)
    figure = Figure(figsize=(size + 1.5, size), layout="tight")
    axes = figure.subplots()
    _draw_confusion_matrix(figure, axes, np.asarray(matrix), class_names, as_share=False)
    axes.set_title(title)
    return figure


def confusion_matrix_pair_figure(matrix: np.ndarray, class_names: list[str], title: str) -> Figure:
    """Two panels: counts, and shares of each true class (rows sum to 1)."""
    size = 1.0 + 0.8 * len(class_names)
    figure = Figure(figsize=(2 * size + 3, size + 1), layout="constrained")
    counts_axes, share_axes = figure.subplots(1, 2)
    _draw_confusion_matrix(figure, counts_axes, np.asarray(matrix), class_names, as_share=False)
    _draw_confusion_matrix(figure, share_axes, np.asarray(matrix), class_names, as_share=True)
    counts_axes.set_title("counts")
    share_axes.set_title("row-normalised (recall on the diagonal)")
    figure.suptitle(title)
    return figure


def cross_validation_figure(
    values: dict[str, list[float]],
    matrix: np.ndarray,
    class_names: list[str],
    title: str,
    chance: dict[str, float] | None = None,
) -> Figure:
    """Left: each metric's value per fold (points), mean ± std (bar) and its `chance` level where
    given (keyed as `values`); right: the pooled confusion matrix as shares of each true class."""
    size = 1.0 + 0.8 * len(class_names)
    figure = Figure(figsize=(size + 7, size + 1), layout="constrained")
    metric_axes, matrix_axes = figure.subplots(1, 2, width_ratios=[2, 3])
    for position, fold_values in enumerate(values.values()):
        metric_axes.errorbar(
            position,
            np.mean(fold_values),
            yerr=np.std(fold_values, ddof=1) if len(fold_values) > 1 else 0,
            fmt="_",
            markersize=24,
            capsize=6,
            color="#3182bd",
        )
        jitter = np.linspace(-0.15, 0.15, len(fold_values))
        metric_axes.scatter(position + jitter, fold_values, s=14, color="#6baed6", alpha=0.8)
    levels = [(position, chance[name]) for position, name in enumerate(values) if name in (chance or {})]
    for index, (position, level) in enumerate(levels):
        label = None if index else CHANCE_LABEL.format(classes=len(class_names))
        metric_axes.hlines(level, position - 0.35, position + 0.35, label=label, **CHANCE_STYLE)
    if levels:
        metric_axes.legend(loc="lower left", fontsize=8)
    metric_axes.set_xticks(range(len(values)), list(values))
    metric_axes.set_ylim(0, 1)
    metric_axes.set_title(f"per fold (points), mean ± std ({len(next(iter(values.values())))} folds)")
    _draw_confusion_matrix(figure, matrix_axes, matrix, class_names, as_share=True)
    matrix_axes.set_title(f"pooled confusion matrix ({int(matrix.sum())} images)")
    figure.suptitle(f"cross-validation {title}")
    return figure


def _draw_confusion_matrix(
    figure: Figure, axes: Axes, matrix: np.ndarray, class_names: list[str], as_share: bool
) -> None:
    """The matrix coloured by row share, each cell annotated with its count or its row share."""
    row_share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    image = axes.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="share of true class")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for row, col in np.ndindex(matrix.shape):
        colour = "white" if row_share[row, col] > 0.5 else "black"
        text = f"{row_share[row, col]:.2f}" if as_share else f"{matrix[row, col]}"
        axes.text(col, row, text, ha="center", va="center", color=colour)


def roc_figure(
    false_positive_rates: list[np.ndarray],
    true_positive_rates: list[np.ndarray],
    aucs: list[float],
    class_names: list[str],
    title: str,
) -> Figure:
    """One one-vs-rest ROC curve per class, its AUC in the legend."""
    figure = Figure(figsize=(6.5, 6), layout="constrained")
    axes = figure.subplots()
    for fpr, tpr, auc, name in zip(false_positive_rates, true_positive_rates, aucs, class_names, strict=True):
        axes.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="chance")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_aspect("equal")
    axes.legend(loc="lower right")
    axes.set_title(title)
    return figure


def reliability_figure(
    bin_accuracy: np.ndarray, bin_confidence: np.ndarray, bin_share: np.ndarray, ece: float, title: str
) -> Figure:
    """Reliability diagram of the calibration bins: a bar of each bin's accuracy, a tick at its mean
    confidence and the gap between them shaded, against the diagonal of perfect calibration; the
    share of samples per bin below."""
    num_bins = len(bin_share)
    edges = np.linspace(0, 1, num_bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    width = 1 / num_bins
    used = bin_share > 0
    figure = Figure(figsize=(6, 7), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(centres, bin_accuracy, width=width, edgecolor="black", label="accuracy in bin (bar)")
    top.bar(
        centres[used],
        (bin_confidence - bin_accuracy)[used],
        bottom=bin_accuracy[used],
        width=width,
        color="tab:red",
        alpha=0.25,
        hatch="//",
        edgecolor="tab:red",
        label="gap: mean confidence - accuracy",
    )
    top.hlines(
        bin_confidence[used],
        (centres - width / 2)[used],
        (centres + width / 2)[used],
        color="black",
        linewidth=2.5,
        label="mean confidence in bin (tick)",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.set_ylabel("accuracy / mean confidence")
    top.set_ylim(0, 1.02)
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"{title}\nECE {ece:.4f} ({num_bins} bins)")
    bottom.bar(centres, bin_share, width=width, edgecolor="black", color="tab:orange")
    bottom.set_xlabel("confidence (top predicted probability)")
    bottom.set_ylabel("share of samples")
    bottom.set_xlim(0, 1.03)
    return figure


def learning_curves_figure(
    curves: dict[str, dict[int, float]], quantities: list[str], best_epoch: int, title: str
) -> Figure:
    """Training vs validation curves per epoch of each quantity (e.g. 'loss', 'macro_f1'; `curves`
    keyed by logged name, e.g. 'train/loss', mapping epoch -> value), the best epoch marked."""
    figure = Figure(figsize=(5.5 * len(quantities), 4.5), layout="constrained")
    panels = figure.subplots(1, len(quantities), squeeze=False)
    for axes, quantity in zip(panels[0], quantities, strict=True):
        for stage in ("train", "val"):
            points = curves.get(metric_key(stage, quantity), {})
            axes.plot(list(points), list(points.values()), marker="o", label=stage)
        axes.axvline(best_epoch, linestyle="--", color="grey", label=f"best epoch ({best_epoch})")
        axes.set_xlabel("epoch")
        axes.set_ylabel(quantity)
        axes.set_title(quantity)
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.legend()
    figure.suptitle(title)
    return figure


def image_grid_figure(images: list[np.ndarray], captions: list[str], title: str, columns: int = 4) -> Figure:
    """Images (H x W x 3 uint8) in a grid, each with its caption above it."""
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(2.6 * columns, 3 * rows + 0.5), layout="constrained")
    axes_grid = figure.subplots(rows, columns, squeeze=False)
    for axes in axes_grid.flat:
        axes.axis("off")
    for axes, image, caption in zip(axes_grid.flat, images, captions, strict=False):
        axes.imshow(image)
        axes.set_title(caption, fontsize=9)
    if not images:
        axes_grid[0, 0].text(0, 0.5, "no images to show", fontsize=12)
    figure.suptitle(title)
    return figure


def shorten_middle(text: str, width: int = CAPTION_WIDTH) -> str:
    """`text` in at most `width` characters (at least 3): its middle replaced by '…' where it is
    longer, so that both ends (e.g. a file name's stem and extension) stay readable."""
    if len(text) <= width:
        return text
    head = width // 2
    return f"{text[:head]}…{text[len(text) - (width - 1 - head) :]}"


def mistake_caption(path: str, true_name: str, predicted_name: str, confidence: float) -> str:
    """An image's caption in an image grid: its file name, true class, predicted class and the
    prediction's confidence, each line in CAPTION_WIDTH characters."""
    score = f" ({confidence:.2f})"
    predicted = shorten_middle(predicted_name, CAPTION_WIDTH - len("predicted ") - len(score))
    return (
        f"{shorten_middle(Path(path).name)}\ntrue {shorten_middle(true_name, CAPTION_WIDTH - 5)}\n"
        f"predicted {predicted}{score}"
    )


def save_png(figure: Figure, path: Path) -> None:
    """Write the figure as a PNG file at the reports' resolution, whole or not at all."""
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)


def face_sheet(paths: list[str], images: list, detector: str, shown: int = 12) -> Figure:
    """Contact sheet of face crops: up to `shown` images with a face and `shown` // 2 without one.
    `images` carry `pixels` (3 x S x S uint8 tensors) and `face_box` (None: no face)."""
    with_face = [i for i, image in enumerate(images) if image.face_box is not None]
    without = [i for i, image in enumerate(images) if image.face_box is None]
    step = max(1, len(with_face) // shown)
    chosen = with_face[::step][:shown] + without[: shown // 2]
    captions = [
        shorten_middle(f"{Path(paths[i]).parent.name}/{Path(paths[i]).name}")
        + ("" if images[i].face_box else "\nno face: whole image")
        for i in chosen
    ]
    pictures = [images[i].pixels.permute(1, 2, 0).numpy() for i in chosen]
    title = f"{detector} face crops: {len(with_face)} of {len(images)} images have a face"
    return image_grid_figure(pictures, captions, title, columns=6)
