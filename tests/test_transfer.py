"""Transfer from EmotionVision checkpoints (model.init_from) and the fine-tuning strategies."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from emotionvision.cli.train import train
from emotionvision.models import EmotionClassifier

REPO_ROOT = Path(__file__).resolve().parents[1]
FER2013 = Path(os.environ.get("EMOTIONVISION_FER2013", REPO_ROOT.parent / "shared" / "datasets" / "fer2013"))


def fit(compose_train, tmp_path: Path, root: Path, name: str, *overrides: str) -> Path:
    """Train in-process on `root` (32 px, tiny budget); the run directory."""
    output_dir = tmp_path / name
    cfg = compose_train(
        [
            "data=folder",
            f"data.root={root}",
            "data.image_size=32",
            "data.num_workers=0",
            "data.batch_size=8",
            "logger=csv",
            "++trainer.enable_progress_bar=false",
            "++trainer.enable_model_summary=false",
            f"paths.output_dir={output_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            *overrides,
        ]
    )
    train(cfg)
    return output_dir


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, make_tree) -> Path:
    """A 1-epoch run on classes angry / happy / sad: the checkpoint to transfer from."""
    from hydra import compose, initialize_config_module

    work = tmp_path_factory.mktemp("source")
    root = make_tree(work / "images", {"angry": 8, "happy": 8, "sad": 8})
    with initialize_config_module(config_module="emotionvision.conf", version_base="1.3"):
        return fit(
            lambda overrides: compose(config_name="train", overrides=overrides),
            work,
            root,
            "run",
            "trainer.max_epochs=1",
        )


def checkpoint_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_transfer_between_different_class_sets(source_run: Path) -> None:
    source = checkpoint_state(source_run)
    ckpt = str(source_run / "checkpoints" / "last.ckpt")
    classes = ["anger", "fear", "happy"]
    model = EmotionClassifier(
        "resnet18", classes, input_size=32, init_from=ckpt, init_class_map={"angry": "anger"}
    )
    state = model.state_dict()
    for key in ("model.conv1.weight", "model.layer4.1.bn2.running_var", "model.layer2.0.conv1.weight"):
        torch.testing.assert_close(state[key], source[key])
    torch.testing.assert_close(state["model.fc.weight"][0], source["model.fc.weight"][0])  # angry -> anger
    torch.testing.assert_close(state["model.fc.weight"][2], source["model.fc.weight"][1])  # happy -> happy
    torch.testing.assert_close(state["model.fc.bias"][2], source["model.fc.bias"][1])
    fresh = state["model.fc.weight"][1]  # fear: no such class in the source
    assert not any(torch.allclose(fresh, row) for row in source["model.fc.weight"])


def test_transfer_refuses_another_backbone(source_run: Path) -> None:
    with pytest.raises(ValueError, match=r"holds a resnet18 backbone but this model is a inception_v3"):
        init = str(source_run / "checkpoints" / "last.ckpt")
        EmotionClassifier("inception_v3", ["a", "b"], input_size=299, init_from=init)


def backbone_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state.items() if key.startswith("model.") and ".fc." not in key}


def test_linear_probe_keeps_the_backbone_unchanged(compose_train, source_run: Path, tmp_path: Path) -> None:
    init = str(source_run / "checkpoints" / "last.ckpt")
    root = source_run.parent / "images"
    run = fit(
        compose_train,
        tmp_path,
        root,
        "probe",
        "finetune=linear_probe",
        f"model.init_from={init}",
        "trainer.max_epochs=2",
    )
    before, after = backbone_tensors(checkpoint_state(source_run)), backbone_tensors(checkpoint_state(run))
    assert before.keys() == after.keys() and len(before) > 100
    for key, value in before.items():
        torch.testing.assert_close(after[key], value, msg=key)  # weights and BatchNorm statistics
    assert not torch.equal(
        checkpoint_state(run)["model.fc.weight"], checkpoint_state(source_run)["model.fc.weight"]
    )


def test_gradual_unfreezes_with_a_lower_backbone_rate(
    compose_train, source_run: Path, tmp_path: Path
) -> None:
    init = str(source_run / "checkpoints" / "last.ckpt")
    root = source_run.parent / "images"
    overrides = [
        "finetune=gradual",
        "callbacks.finetune.unfreeze_backbone_at_epoch=1",
        f"model.init_from={init}",
    ]
    overrides += ["trainer.max_epochs=2", "scheduler=none", "keep_training_state=true"]  # reads the optimizer
    run = fit(compose_train, tmp_path, root, "gradual", *overrides)
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    assert len(groups) == 2  # the heads, then the unfrozen backbone
    assert groups[1]["lr"] == pytest.approx(0.1 * groups[0]["lr"])
    changed = backbone_tensors(checkpoint["state_dict"])
    assert not torch.equal(changed["model.conv1.weight"], checkpoint_state(source_run)["model.conv1.weight"])


@pytest.mark.realdata
@pytest.mark.skipif(not FER2013.is_dir(), reason=f"real data set fer2013 not found at {FER2013}")
def test_fer2013_pretraining_transfers_to_six_emotions(
    compose_train, six_emotions: Path, tmp_path: Path
) -> None:
    """A tiny end to end: pretrain on a FER2013 subset, then start a six_emotions subset from it."""
    fer = tmp_path / "fer"
    for name in ("angry", "happy", "sad"):
        (fer / name).mkdir(parents=True)
        for path in sorted((FER2013 / "train" / name).iterdir())[:12]:
            shutil.copy(path, fer / name)
    pretrained = fit(compose_train, tmp_path, fer, "pretrain", "trainer.max_epochs=1")
    six = tmp_path / "six"
    for name in ("anger", "happy", "sad"):
        (six / name).mkdir(parents=True)
        for path in sorted((six_emotions / name).iterdir())[:12]:
            shutil.copy(path, six / name)
    best = next((pretrained / "checkpoints").glob("best-*.ckpt"))
    run = fit(
        compose_train,
        tmp_path,
        six,
        "transfer",
        f"model.init_from={best}",
        "model.init_class_map={angry: anger}",
        "trainer.max_epochs=1",
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["test/macro_f1"] <= 1.0 and metrics["epochs_trained"] == 1
    source = torch.load(best, weights_only=True)["state_dict"]
    first = torch.load(next((run / "checkpoints").glob("*.ckpt")), weights_only=True)["state_dict"]
    assert first["model.fc.weight"].shape == source["model.fc.weight"].shape == (3, 512)
