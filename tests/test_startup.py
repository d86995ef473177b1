"""Start-up: the commands answer `--help`, a config error and `--cfg job` without importing torch,
Lightning or the libraries built on them (emotionvision/cli/train.py imports them when a run starts);
and the console their logging configuration leaves quiet (conf/hydra/default.yaml)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore

BIN = Path(sys.executable).parent
HEAVY = {"torch", "lightning", "torchvision", "torchmetrics", "scipy", "sklearn", "matplotlib"}


def start(program: str, *args: str, cwd: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run the console script `program` under `python -X importtime`; its result and the top-level
    packages it imported."""
    unset = ("EMOTIONVISION_ROOT", "HYDRA_FULL_ERROR")
    env = {key: value for key, value in os.environ.items() if key not in unset}
    command = [sys.executable, "-X", "importtime", str(BIN / program), *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "emotionvision" in imported, result.stderr[-2000:]
    return result, imported


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if not line.startswith("import time:")]


@pytest.mark.parametrize(
    ("args", "status", "shown"),
    [
        (["--help"], 0, "== Configuration groups =="),
        (["--cfg", "job"], 0, "task_name: train"),
        (["modle=resnet18"], 1, "Could not override 'modle'"),
        (["seed=abc"], 1, "Value 'abc' of type 'str' could not be converted to Integer"),
    ],
)
def test_train_answers_without_torch(tmp_path: Path, args: list[str], status: int, shown: str) -> None:
    result, imported = start("emotionvision-train", *args, cwd=tmp_path)
    assert result.returncode == status, result.stdout[-2000:] + "\n".join(error_lines(result))[-2000:]
    assert shown in result.stdout + "\n".join(error_lines(result))
    assert not imported & HEAVY, sorted(imported & HEAVY)
    assert not (tmp_path / "logs").exists()  # no run directory


@pytest.mark.parametrize(
    ("program", "shown"),
    [
        ("emotionvision-eval", "ckpt_path"),
        ("emotionvision-crosseval", "checkpoints"),
        ("emotionvision-compare", "MULTIRUN_DIR"),
        ("emotionvision-predict", "inputs"),
        ("emotionvision-export", "opset"),
    ],
)
def test_other_commands_help_without_torch(tmp_path: Path, program: str, shown: str) -> None:
    result, imported = start(program, "--help", cwd=tmp_path)
    assert result.returncode == 0 and shown in result.stdout, result.stdout[-2000:]
    assert not imported & HEAVY, sorted(imported & HEAVY)


@pytest.mark.parametrize(
    ("program", "args", "message"),
    [
        (
            "emotionvision-predict",
            ["inputs=[a.jpg]", "output=out.txt"],
            "output=out.txt: name a .csv or a .json",
        ),
        ("emotionvision-export", ["format=zip"], "format='zip': choose one of onnx, torch_export."),
        (
            "emotionvision-export",
            ["output=model.pt2"],
            "output=model.pt2: a format=onnx file must end with .onnx",
        ),
    ],
)
def test_bad_output_values_answer_in_one_line_without_torch(
    tmp_path: Path, program: str, args: list[str], message: str
) -> None:
    """predict's output= and export's format= and output= are checked before a model is loaded."""
    result, imported = start(program, "ckpt_path=missing.ckpt", *args, cwd=tmp_path)
    lines = error_lines(result)
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(f"{program}: error: "), lines
    assert message in lines[0]
    assert not imported & HEAVY, sorted(imported & HEAVY)
    runs = tmp_path / "logs" / program.removeprefix("emotionvision-") / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # no run directory left


def test_hydra_shares_its_config_store() -> None:
    """`--help` lists every config group; Hydra 1.3 deep-copied the whole ConfigStore for each one
    (emotionvision/cli/hydra_compat.py): the commands make the copy the store itself."""
    import emotionvision.cli.train  # noqa: F401  (installs the work-around, as every command does)

    store = ConfigStore.instance()
    assert copy.deepcopy(store) is store
    assert copy.deepcopy({"store": store})["store"] is store


def test_library_chatter_goes_to_the_log_file_at_debug(tmp_path: Path) -> None:
    """Every command's job logging: Lightning's INFO lines and Python warnings reach the job's log
    file as DEBUG lines and neither stdout nor stderr; emotionvision's INFO lines reach both, its
    DEBUG lines the file alone; a Lightning warning stays a warning."""
    log_file = tmp_path / "train.log"
    script = textwrap.dedent(f"""
        import importlib.resources, logging, warnings
        from pathlib import Path
        import hydra
        from hydra.core.utils import configure_log
        from omegaconf import OmegaConf
        from emotionvision.cli.logs import CaptureWarnings

        hydra_default = Path(hydra.__file__).parent / "conf/hydra/job_logging/default.yaml"
        ours = importlib.resources.files("emotionvision.conf") / "hydra" / "default.yaml"
        config = OmegaConf.merge(OmegaConf.load(hydra_default), OmegaConf.load(ours).job_logging)
        config.handlers.file.filename = {str(log_file)!r}
        configure_log(config)
        CaptureWarnings().on_job_start(config=None)
        logging.getLogger("lightning.fabric.utilities.seed").info("Seed set to 0")
        logging.getLogger("lightning.pytorch.utilities.rank_zero").info("GPU available: False")
        warnings.warn("No positive samples in targets, true positive value should be meaningless")
        logging.getLogger("lightning.pytorch.trainer").warning("Lightning warns")
        logging.getLogger("emotionvision.data").info("Split sizes")
        logging.getLogger("emotionvision.runtime").debug("torch uses 2 CPU threads")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    assert [line.split(" - ")[-1] for line in result.stdout.splitlines()] == [
        "Lightning warns",
        "Split sizes",
    ]
    log = log_file.read_text()
    for line in (
        "[lightning.fabric.utilities.seed][DEBUG] - Seed set to 0",
        "[lightning.pytorch.utilities.rank_zero][DEBUG] - GPU available: False",
        "[lightning.pytorch.trainer][WARNING] - Lightning warns",
        "[emotionvision.data][INFO] - Split sizes",
        "[emotionvision.runtime][DEBUG] - torch uses 2 CPU threads",
    ):
        assert line in log, log
    assert "[py.warnings][DEBUG] - " in log and "UserWarning: No positive samples in targets" in log
