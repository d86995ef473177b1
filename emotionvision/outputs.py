"""The files predict and export write, checked before any model is loaded: torch-free, so the commands
refuse a bad `output=` or `format=` in a second (emotionvision/cli/predict.py, export.py)."""

from __future__ import annotations

from pathlib import Path

from emotionvision.errors import UsageError

PREDICTION_SUFFIXES = (".csv", ".json")
EXPORT_FORMATS = {"onnx": ".onnx", "torch_export": ".pt2"}


def check_prediction_output(output: Path) -> None:
    """UsageError unless `output` names a .csv or .json file."""
    if output.suffix not in PREDICTION_SUFFIXES:
        raise UsageError(f"output={output}: name a .csv or a .json file.")


def export_path(ckpt_path: str | Path, format: str, output: str | Path | None) -> Path:
    """The file an export of `ckpt_path` to `format` writes: `output`, or the checkpoint's name with the
    format's suffix; UsageError for an unknown format or a suffix that does not match it."""
    if format not in EXPORT_FORMATS:
        raise UsageError(f"format={format!r}: choose one of {', '.join(EXPORT_FORMATS)}.")
    suffix = EXPORT_FORMATS[format]
    path = Path(output) if output else Path(ckpt_path).with_suffix(suffix)
    if path.suffix != suffix:
        raise UsageError(f"output={path}: a format={format} file must end with {suffix}.")
    return path
