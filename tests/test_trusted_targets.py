"""A run directory is data, not code: `resume=RUN` instantiates only the `_target_`s of RUN's saved config
that lie in the trusted packages (emotionvision/targets.py), never a loader such as torch.load; a
copied run directory carrying a gadget and its payload is refused in one line, and the payload never
runs. Evaluations (and so cross-data-set matrices) read only the monitored metric from a run's config."""

from __future__ import annotations

import importlib.resources
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from emotionvision.errors import UsageError
from emotionvision.evaluation import run_monitor
from emotionvision.rundir import RunDir
from emotionvision.targets import (
    TRUSTED_PACKAGES,
    check_targets,
    trusted_config,
    trusted_packages,
    untrusted_reason,
)

BIN = Path(sys.executable).parent


class WritesMarker:
    """Unpickling this writes a marker file: the payload a run directory from elsewhere could carry."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


@pytest.fixture
def hostile_run(seed_sweep: Path, tmp_path: Path) -> Path:
    """A copy of a seed-sweep run, as if interrupted (no metrics.json), whose .hydra/config.yaml adds
    a callback `{_target_: torch.load, f: <its payload.pkl>, weights_only: false}` (issue 16, item 10)."""
    run = tmp_path / "received_run"
    shutil.copytree(seed_sweep / "0" / ".hydra", run / ".hydra")
    (run / "checkpoints").mkdir()
    shutil.copy(seed_sweep / "0" / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt")
    torch.save(WritesMarker(tmp_path / "marker"), run / "payload.pkl")
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    gadget = {"_target_": "torch.load", "f": str(run / "payload.pkl"), "weights_only": False}
    config["callbacks"] = {"gadget": gadget, **config["callbacks"]}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return run


def test_a_received_run_directory_with_a_gadget_is_refused_in_one_line(
    hostile_run: Path, tmp_path: Path
) -> None:
    config_before = (hostile_run / ".hydra" / "config.yaml").read_text()
    env = {key: value for key, value in os.environ.items() if key != "HYDRA_FULL_ERROR"}
    result = subprocess.run(
        [str(BIN / "emotionvision-train"), f"resume={hostile_run}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"emotionvision-train: error: resume={hostile_run}: {hostile_run / '.hydra' / 'config.yaml'} names "
        "_target_ torch.load at callbacks.gadget, which a config read back from disk may not instantiate: "
        "it is outside the trusted packages. A run directory from elsewhere can carry code, so its config "
        f"only instantiates classes and functions of {', '.join(TRUSTED_PACKAGES)} "
        "(trusted_targets=[PACKAGE] adds one you trust), never a loader, writer or runner."
    ]
    assert not (tmp_path / "marker").exists()  # the payload never ran
    assert (hostile_run / ".hydra" / "config.yaml").read_text() == config_before  # the run is kept as it was
    # an evaluation (each crosseval cell is one) reads the run's monitored metric, nothing it could run
    assert run_monitor(RunDir(hostile_run)) == {"metric": "val/macro_f1", "mode": "max"}
    assert not (tmp_path / "marker").exists()
    torch.load(hostile_run / "payload.pkl", weights_only=False)  # the payload is real: unpickled, it runs
    assert (tmp_path / "marker").read_text() == "code ran"


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("torch.load", "it is outside the trusted packages"),
        ("builtins.exec", "it is outside the trusted packages"),
        # a trusted package's name in front of a loader it imports
        ("emotionvision.models.checkpoint.torch.load", "it is torch.serialization.load, defined outside"),
        ("emotionvision.runtime.os.system", "it is posix.system, defined outside"),
        (
            "emotionvision.cli.train.instantiate",
            "it is hydra._internal.instantiate._instantiate2.instantiate",
        ),
        # loaders, writers and runners inside the trusted packages
        (
            "emotionvision.models.EmotionClassifier.load_from_checkpoint",
            "a function that loads, writes or runs",
        ),
        ("lightning.fabric.utilities.cloud_io._load", "a function that loads, writes or runs"),
        ("timm.models.load_checkpoint", "a function that loads, writes or runs"),
        ("torch.nn.Module.load_state_dict", "a function that loads, writes or runs"),
        ("torchvision.io.write_file", "a function that loads, writes or runs"),
        ("torchvision.datasets.utils.extract_archive", "a function that loads, writes or runs"),
        ("lightning.pytorch.cli.instantiate_class", "which instantiates any class a string names"),
        ("lightning.pytorch.cli.LightningCLI", "which instantiates any class a string names"),
        ("emotionvision.models", "it is a module, not a class or function"),
        ("emotionvision.no_such_thing", "it cannot be imported"),
    ],
)
def test_gadgets_are_refused(target: str, reason: str) -> None:
    found = untrusted_reason(target, trusted_packages())
    assert found is not None and reason in found, found


def test_the_configs_emotionvision_writes_pass_and_the_list_extends(seed_sweep: Path, tmp_path: Path) -> None:
    saved = OmegaConf.load(seed_sweep / "0" / ".hydra" / "config.yaml")
    check_targets(OmegaConf.to_container(saved), "a run's config")  # every target of a real run
    for target in ("emotionvision.data.mixing.batch_mixing", "torchvision.transforms.v2.RandAugment"):
        assert untrusted_reason(target, trusted_packages()) is None
    # kornia's transforms, in a list (_args_), as a resumed run with batch_augmentation=standard has them
    conf = importlib.resources.files("emotionvision.conf")
    shipped = OmegaConf.load(conf / "batch_augmentation" / "standard.yaml")
    check_targets(OmegaConf.to_container(shipped), "batch_augmentation=standard")
    # targets hidden in lists and interpolations are found: what is checked is what is instantiated
    nested = OmegaConf.create(
        {"a": [1, {"_target_": "${oc.decode:'json.loads'}"}], "b": "${oc.create:{_target_: os.system}}"}
    )
    with pytest.raises(UsageError, match=r"names _target_ json\.loads at a\[1\]"):
        check_targets(nested, "x")

    # an escaped interpolation resolves to an interpolation, which would be resolved after the check
    escaped = tmp_path / "config.yaml"
    escaped.write_text('callbacks:\n  x: "\\\\${oc.create:{_target_: builtins.exec, _args_: [print(1)]}}"\n')
    with pytest.raises(UsageError, match=r"has callbacks\.x resolve to another interpolation"):
        trusted_config(escaped, "resume=RUN")
    # trusted_targets=[json] (the command line's setting) adds a package, but never its loaders
    custom = {"_target_": "json.JSONDecoder"}
    with pytest.raises(UsageError, match="outside the trusted packages"):
        check_targets(custom, "x")
    check_targets(custom, "x", extra=["json"])
    with pytest.raises(UsageError, match="a function that loads"):
        check_targets({"_target_": "json.loads"}, "x", extra=["json"])
    with pytest.raises(UsageError, match=r"trusted_targets=\['os; rm'\]: give dotted module names"):
        trusted_packages(["os; rm"])
