"""The cross-data-set matrix (train set x test set): markdown and CSV tables and a heat-map figure of
the cells' accuracy and macro-F1 on their shared classes. Cells in, files out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from emotionvision.atomic import write_text
from emotionvision.reporting.figures import save_png
from emotionvision.reporting.tables import table_line, write_csv
from emotionvision.rundir import RunDir

METRICS = {"acc": "Accuracy", "macro_f1": "Macro-F1"}


@dataclass
class CrossCell:
    """One checkpoint (`train`: the name of its training set) tested on one data set (`test`). `acc`
    and `macro_f1` are NaN where they share no class (`note` says why); `seen` counts the evaluated
    images that were in the checkpoint's training or validation split."""

    train: str
    test: str
    acc: float = math.nan
    macro_f1: float = math.nan
    num_images: int = 0
    shared_classes: list[str] = field(default_factory=list)
    skipped_classes: dict[str, int] = field(default_factory=dict)
    seen: int = 0
    report: str = ""
    note: str = ""

    def row(self) -> dict[str, object]:
        """The cell as a CSV row."""
        skipped = ";".join(f"{name}:{count}" for name, count in self.skipped_classes.items())
        return vars(self) | {"shared_classes": ";".join(self.shared_classes), "skipped_classes": skipped}


def metric_matrix(cells: list[CrossCell], trains: list[str], tests: list[str], metric: str) -> np.ndarray:
    """`metric` of each cell: rows are `trains`, columns `tests` (NaN where a cell is missing)."""
    matrix = np.full((len(trains), len(tests)), np.nan)
    for cell in cells:
        matrix[trains.index(cell.train), tests.index(cell.test)] = getattr(cell, metric)
    return matrix


def crosseval_markdown(cells: list[CrossCell], trains: list[str], tests: list[str]) -> str:
    """A matrix per metric (rows: the training set, columns: the test set), then every cell's classes,
    images and report (relative to the output directory)."""
    lines = ["# Cross-data-set evaluation", ""]
    lines += [
        "Rows: the checkpoint, named after the data it was trained on; columns: the data it is tested "
        "on, on the classes both share. Macro-F1 averages over those classes; predictions of the "
        "checkpoint's other classes count as mistakes.",
    ]
    seen = {(cell.train, cell.test) for cell in cells if cell.seen}
    for metric, title in METRICS.items():
        matrix = metric_matrix(cells, trains, tests, metric)
        lines += ["", f"## {title}", "", table_line(["train \\ test", *tests])]
        lines.append(table_line(["---"] * (len(tests) + 1)))
        for row, train in enumerate(trains):
            values = [_value(matrix[row, col], (train, test) in seen) for col, test in enumerate(tests)]
            lines.append(table_line([train, *values]))
    lines += ["", "## Cells", ""]
    header = ["train", "test", "images", "shared classes", "skipped classes (images)", "report"]
    lines += [table_line(header), table_line(["---"] * len(header))]
    for cell in cells:
        skipped = ", ".join(f"{name} ({count})" for name, count in cell.skipped_classes.items())
        shared = ", ".join(cell.shared_classes) or cell.note
        lines.append(table_line([cell.train, cell.test, str(cell.num_images), shared, skipped, cell.report]))
    lines += _seen_notes(cells)
    return "\n".join(lines) + "\n"


def _seen_notes(cells: list[CrossCell]) -> list[str]:
    """Footnotes for the cells whose test images include images the checkpoint learnt from."""
    notes = [
        f"- {cell.train} on {cell.test}: {cell.seen} of the {cell.num_images} images were in the "
        "checkpoint's training or validation split."
        for cell in cells
        if cell.seen
    ]
    if not notes:
        return []
    return [
        "",
        "\\* Not a held-out result: test the run's own split instead, as a tree "
        f"{{split_file: {RunDir('RUN').split}, split: test}}.",
        "",
        *notes,
    ]


def _value(value: float, seen: bool) -> str:
    return "n/a" if np.isnan(value) else f"{value:.3f}" + (" \\*" if seen else "")


def crosseval_figure(cells: list[CrossCell], trains: list[str], tests: list[str]) -> Figure:
    """A heat-map per metric: rows the training set, columns the test set, each cell annotated with
    its value (* where the test images include training images) and image count; grey: no shared
    class."""
    width = 2.5 + 1.1 * len(tests)
    figure = Figure(figsize=(width * len(METRICS), 1.8 + 0.8 * len(trains)), layout="constrained")
    panels = figure.subplots(1, len(METRICS))
    images = metric_matrix(cells, trains, tests, "num_images")
    seen = metric_matrix(cells, trains, tests, "seen") > 0
    colours = colormaps["viridis"].with_extremes(bad="lightgrey")
    for axes, (metric, title) in zip(panels, METRICS.items(), strict=True):
        matrix = metric_matrix(cells, trains, tests, metric)
        shown = axes.imshow(np.ma.masked_invalid(matrix), cmap=colours, vmin=0, vmax=1)
        figure.colorbar(shown, ax=axes, label=title)
        axes.set_xticks(range(len(tests)), tests, rotation=30, ha="right")
        axes.set_yticks(range(len(trains)), trains)
        axes.set_xlabel("test set")
        axes.set_ylabel("train set (checkpoint)")
        axes.set_title(title)
        for row, col in np.ndindex(matrix.shape):
            value = matrix[row, col]
            text = _cell_text(value, int(images[row, col]), seen[row, col])
            colour = "black" if np.isnan(value) or value > 0.6 else "white"
            axes.text(col, row, text, ha="center", va="center", color=colour, fontsize=9)
    note = " (*: includes images the checkpoint trained on)" if seen.any() else ""
    figure.suptitle(f"Cross-data-set evaluation on shared classes{note}")
    return figure


def _cell_text(value: float, images: int, seen: bool) -> str:
    if np.isnan(value):
        return "no shared\nclass"
    return f"{value:.2f}{' *' if seen else ''}\n{images} img"


def write_crosseval(cells: list[CrossCell], trains: list[str], tests: list[str], output_dir: Path) -> str:
    """Write crosseval.md, crosseval.csv and crosseval.png into `output_dir`; returns the markdown."""
    output_dir.mkdir(parents=True, exist_ok=True)
    report = crosseval_markdown(cells, trains, tests)
    write_text(output_dir / "crosseval.md", report)
    write_csv(output_dir / "crosseval.csv", [cell.row() for cell in cells])
    save_png(crosseval_figure(cells, trains, tests), output_dir / "crosseval.png")
    return report
