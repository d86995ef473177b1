"""Matplotlib figures (headless)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def confusion_matrix_figure(matrix: np.ndarray, class_names: list[str], title: str) -> Figure:
    """Counts annotated on a row-normalised colour scale; true classes on rows."""
    matrix = np.asarray(matrix)
    row_share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.0 + 0.8 * len(class_names)
    figure, axes = plt.subplots(figsize=(size + 1.5, size))
    image = axes.imshow(row_share, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="share of true class")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for row, col in np.ndindex(matrix.shape):
        colour = "white" if row_share[row, col] > 0.5 else "black"
        axes.text(col, row, f"{matrix[row, col]}", ha="center", va="center", color=colour)
    figure.tight_layout()
    return figure
