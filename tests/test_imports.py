"""What importing the reporting library costs and changes: no torch where none is needed, no pyplot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from emotionvision.reporting.figures import confusion_matrix_figure

TORCH_FREE = [
    "emotionvision.reporting",
    "emotionvision.reporting.statistics",
    "emotionvision.reporting.sweep_runs",
    "emotionvision.reporting.tables",
    "emotionvision.reporting.matrix",
    "emotionvision.reporting.curves",
    "emotionvision.reporting.verdicts",
    "emotionvision.reporting.figures",
    "emotionvision.reporting.hparams",
]


def modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    script = f"{code}\nimport sys\nprint('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(result.stdout.split())


def test_reporting_modules_import_without_torch() -> None:
    """The package and its modules that write no TensorBoard logs and take no tensors."""
    loaded = modules_after("\n".join(f"import {module}" for module in TORCH_FREE))
    assert set(TORCH_FREE) <= loaded and "torch" not in loaded


def test_figures_leave_pyplot_alone(tmp_path: Path) -> None:
    """Figures are built and saved without pyplot, so nothing registers them or picks a backend."""
    loaded = modules_after(
        "from pathlib import Path\n"
        "from emotionvision.reporting.figures import confusion_matrix_figure, save_png\n"
        "figure = confusion_matrix_figure([[3, 1], [0, 2]], ['a', 'b'], 't')\n"
        f"save_png(figure, Path({str(tmp_path)!r}) / 'm.png')"
    )
    assert "matplotlib.figure" in loaded and "matplotlib.pyplot" not in loaded
    assert (tmp_path / "m.png").stat().st_size > 1000


def test_tensorboard_takes_a_figure_built_without_pyplot(tmp_path: Path) -> None:
    """SummaryWriter.add_figure (what Lightning's TensorBoard logger hands the classifier's confusion
    matrices to) renders a plain `Figure` into an image event."""
    figure = confusion_matrix_figure(np.array([[3, 1], [0, 2]]), ["a", "b"], "val confusion matrix")
    with SummaryWriter(tmp_path) as writer:
        writer.add_figure("val/confusion_matrix", figure, global_step=1)
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    (image,) = events.Images("val/confusion_matrix")
    assert image.step == 1 and image.width > 100 and image.height > 100
