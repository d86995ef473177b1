"""The training toolkit's config choices: mixup/cutmix (`mixing=`) with soft-target losses and the
training metrics they define, RandAugment and TrivialAugment (`augmentation=`), and weight averaging
(`averaging=ema`) in validation, checkpoints, load_classifier, export and resume, and the augmentation of
whole batches on their device (`batch_augmentation=standard`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from torch import nn
from torchvision.transforms import v2

from emotionvision.callbacks.averaging import EMAAveraging
from emotionvision.cli.train import instantiate_run
from emotionvision.data.augmentation import check_batch_augmentation
from emotionvision.data.mixing import batch_mixing
from emotionvision.errors import UsageError
from emotionvision.models.backbones import BACKBONES, register_backbone
from emotionvision.models.checkpoint import read_checkpoint
from emotionvision.models.classifier import EmotionClassifier, load_classifier
from emotionvision.models.losses import CrossEntropy, FocalLoss

CLASS_WEIGHTS = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)


# ---------------------------------------------------------------------------------------------------
# mixup and cutmix


def neighbours(labels: torch.Tensor) -> torch.Tensor:
    """The label of the image each one is mixed with (torchvision pairs an image with the one before)."""
    return labels.roll(1, 0)


def test_mixup_mixes_images_and_targets_by_one_weight() -> None:
    torch.manual_seed(0)
    images, labels = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, rows = batch_mixing(3, mixup_alpha=0.2)(images, labels)
    assert rows.shape == (6, 3) and rows.dtype == torch.float32
    torch.testing.assert_close(rows.sum(dim=1), torch.ones(6))
    weight = rows[0, labels[0]]  # neighbours have different labels: the row shows the weight
    assert 0 < weight < 1
    own, other = F.one_hot(labels, 3).float(), F.one_hot(neighbours(labels), 3).float()
    torch.testing.assert_close(rows, weight * own + (1 - weight) * other)
    torch.testing.assert_close(mixed, weight * images + (1 - weight) * images.roll(1, 0))


def test_cutmix_pastes_a_box_and_mixes_targets_by_its_area() -> None:
    torch.manual_seed(1)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    images = (torch.arange(6.0) / 10).view(6, 1, 1, 1).expand(6, 3, 16, 16).contiguous()  # one value each
    mixed, rows = batch_mixing(3, cutmix_alpha=1.0)(images, labels)
    torch.testing.assert_close(rows.sum(dim=1), torch.ones(6))
    for index in range(6):
        pasted = (mixed[index] == images[index - 1]).all(dim=0)
        assert ((mixed[index] == images[index]).all(dim=0) ^ pasted).all()  # each pixel from one of two
        area = pasted.float().mean()
        assert 0 < area < 1  # this seed draws a box inside the image
        rows_in, cols_in = pasted.any(dim=1).nonzero(), pasted.any(dim=0).nonzero()
        assert pasted.sum() == len(rows_in) * len(cols_in)  # a rectangle
        torch.testing.assert_close(rows[index, labels[index - 1]], area)
        torch.testing.assert_close(rows[index, labels[index]], 1 - area)


def test_mixup_cutmix_draws_either_and_bad_settings_fail() -> None:
    both = batch_mixing(3, mixup_alpha=0.2, cutmix_alpha=1.0)
    assert isinstance(both, v2.RandomChoice) and both.p == [0.5, 0.5]
    assert [type(t) for t in both.transforms] == [v2.MixUp, v2.CutMix]
    torch.manual_seed(0)
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 1])
    kinds = set()
    for _ in range(12):
        mixed, _ = both(images, labels)
        from_either = (mixed == images) | (mixed == images.roll(1, 0))
        kinds.add("cutmix" if from_either.all() else "mixup")
    assert kinds == {"mixup", "cutmix"}
    with pytest.raises(UsageError, match="mixing=none"):
        batch_mixing(3)
    with pytest.raises(UsageError, match=r"mixing\.mixup_alpha must be > 0"):
        batch_mixing(3, mixup_alpha=0.0)


# ---------------------------------------------------------------------------------------------------
# soft targets in the losses


def soft_rows() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(2)
    logits = torch.randn(5, 3, dtype=torch.float64)
    rows = torch.tensor(
        [[0.7, 0.3, 0.0], [0.0, 0.25, 0.75], [1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.1, 0.6, 0.3]],
        dtype=torch.float64,
    )
    return logits, rows


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_soft_cross_entropy_matches_a_hand_computation(weighted: bool, smoothing: float) -> None:
    logits, rows = soft_rows()
    loss = CrossEntropy(class_weighted=weighted, label_smoothing=smoothing)
    loss.set_class_weights(CLASS_WEIGHTS)
    weights = CLASS_WEIGHTS.tolist() if weighted else [1.0, 1.0, 1.0]
    log_p = logits.log_softmax(dim=1).tolist()
    total = sum(
        weights[c] * ((1 - smoothing) * row[c] + smoothing / 3) * -log_p[n][c]
        for n, row in enumerate(rows.tolist())
        for c in range(3)
    )
    weight_sum = sum(weights[c] * row[c] for row in rows.tolist() for c in range(3))
    torch.testing.assert_close(loss(logits, rows), torch.tensor(total / weight_sum, dtype=torch.float64))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_soft_focal_loss_matches_a_hand_computation(weighted: bool, smoothing: float) -> None:
    logits, rows = soft_rows()
    loss = FocalLoss(gamma=2.0, class_weighted=weighted, label_smoothing=smoothing)
    loss.set_class_weights(CLASS_WEIGHTS)
    weights = CLASS_WEIGHTS.tolist() if weighted else [1.0, 1.0, 1.0]
    probabilities = logits.softmax(dim=1).tolist()
    total = weight_sum = 0.0
    for row, p in zip(rows.tolist(), probabilities, strict=True):
        nll = [-torch.log(torch.tensor(value, dtype=torch.float64)).item() for value in p]
        for k in range(3):  # the index loss had the label been k, weighted by the row's share of k
            smoothed = (1 - smoothing) * nll[k] + smoothing / 3 * sum(nll)
            total += row[k] * weights[k] * (1 - p[k]) ** 2 * smoothed
            weight_sum += row[k] * weights[k]
    torch.testing.assert_close(loss(logits, rows), torch.tensor(total / weight_sum, dtype=torch.float64))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("kind", ["ce", "focal"])
def test_one_hot_rows_give_the_index_loss(kind: str, weighted: bool, smoothing: float) -> None:
    logits, _ = soft_rows()
    targets = torch.tensor([0, 2, 1, 1, 0])
    if kind == "ce":
        loss = CrossEntropy(class_weighted=weighted, label_smoothing=smoothing)
    else:
        loss = FocalLoss(gamma=2.0, class_weighted=weighted, label_smoothing=smoothing)
    loss.set_class_weights(CLASS_WEIGHTS)
    one_hot = F.one_hot(targets, 3).double()
    torch.testing.assert_close(loss(logits, one_hot), loss(logits, targets))
    if kind == "ce":  # the index path is PyTorch's own
        weight = CLASS_WEIGHTS if weighted else None
        expected = F.cross_entropy(logits, targets, weight=weight, label_smoothing=smoothing)
        torch.testing.assert_close(loss(logits, targets), expected)


def test_an_unweighted_mix_is_the_mix_of_the_losses() -> None:
    logits, _ = soft_rows()
    first, second = torch.tensor([0, 1, 2, 0, 1]), torch.tensor([1, 2, 0, 2, 1])
    rows = 0.3 * F.one_hot(first, 3).double() + 0.7 * F.one_hot(second, 3).double()
    for loss in (CrossEntropy(label_smoothing=0.1), FocalLoss(gamma=2.0, label_smoothing=0.1)):
        mixed = 0.3 * loss(logits, first) + 0.7 * loss(logits, second)
        torch.testing.assert_close(loss(logits, rows), mixed)


# ---------------------------------------------------------------------------------------------------
# training metrics under mixing


def test_training_metrics_score_the_dominant_class_of_each_mix() -> None:
    model = EmotionClassifier("resnet18", ["a", "b", "c"], input_size=32, loss=CrossEntropy())
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0], [0, 0, 3.0]])
    model.forward = lambda images: logits  # the network's output, fixed
    rows = torch.tensor([[0.7, 0.3, 0], [0.2, 0, 0.8], [0, 0.4, 0.6], [0.5, 0.5, 0], [0.1, 0.6, 0.3]])
    loss = model.training_step((torch.zeros(5, 3, 32, 32), rows, torch.arange(5)), 0)
    computed = model.metrics["train_metrics"].compute()
    # predictions 0, 1, 2, 0, 2 against the dominant classes 0, 2, 2, 0, 1 (a tie goes to the lower index)
    assert computed["acc"] == pytest.approx(0.6)
    assert computed["confusion_matrix"].tolist() == [[2, 0, 0], [0, 0, 1], [0, 1, 1]]
    torch.testing.assert_close(loss, model.loss(logits, rows))  # the loss is the soft-target loss
    torch.testing.assert_close(model.mean_losses["train_loss"].compute(), loss)


# ---------------------------------------------------------------------------------------------------
# RandAugment and TrivialAugment


@pytest.mark.parametrize(
    ("option", "policy"),
    [("randaugment", v2.RandAugment), ("trivialaugment", v2.TrivialAugmentWide)],
)
def test_policy_augmentations_compose_and_change_images(compose_train, option: str, policy) -> None:
    cfg = compose_train([f"augmentation={option}", "data.image_size=32"])
    transform = instantiate(cfg.data.augmentation)
    assert [type(t) for t in transform.transforms] == [v2.RandomResizedCrop, v2.RandomHorizontalFlip, policy]
    assert tuple(transform.transforms[0].size) == (32, 32)
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    outputs = [transform(image) for _ in range(6)]
    assert all(out.shape == (3, 32, 32) and out.dtype == torch.uint8 for out in outputs)
    assert all(not torch.equal(out, image) for out in outputs)
    changed_by_policy = sum(not torch.equal(transform.transforms[-1](image), image) for _ in range(8))
    assert changed_by_policy >= 4  # the policy alone changes most images (identity and mild ops aside)


# ---------------------------------------------------------------------------------------------------
# weight averaging, with mixing, through the real config and Lightning


class Recorder(pl.Callback):
    """The trained weights after each optimizer step, the weights each validation ran with, and the
    targets the training and validation steps received."""

    def __init__(self) -> None:
        self.trained: list[dict[str, torch.Tensor]] = []
        self.validated: list[dict[str, torch.Tensor]] = []
        self.targets: dict[str, set] = {"train": set(), "val": set()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.targets["train"].add((batch[1].dtype, batch[1].dim()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.trained.append(float_state(pl_module.state_dict()))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.targets["val"].add((batch[1].dtype, batch[1].dim()))
        if batch_idx == 0:
            self.validated.append(float_state(pl_module.state_dict()))


def float_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The floating-point entries (weights, batch-norm statistics), copied."""
    return {name: value.detach().clone() for name, value in state.items() if value.is_floating_point()}


def hand_ema(states: list[dict[str, torch.Tensor]], decay: float) -> dict[str, torch.Tensor]:
    """The exponential moving average of `states`: the first as is, then decay * avg + (1 - decay) * new."""
    average = dict(states[0])
    for state in states[1:]:
        average = {name: decay * average[name] + (1 - decay) * state[name] for name in average}
    return average


def assert_states_close(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    actual = float_state(actual)
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], msg=name)


DECAY = 0.5  # the average of 3 steps differs clearly from the last weights
STEPS_PER_EPOCH = 3
TINY = "toolkit_tiny"


class TinyNet(nn.Module):
    """A convolution, batch norm and a linear head `fc`: a backbone whose runs take a second."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 1000)  # replaced by a head for our classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(images)).relu().mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def tiny_backbone():
    """TinyNet registered as a backbone for this module's runs (model.backbone=toolkit_tiny)."""
    register_backbone(TINY, "fc")(lambda pretrained, *size: TinyNet())
    yield TINY
    BACKBONES.pop(TINY, None)


@pytest.fixture(scope="module")
def toolkit_cfg(tmp_path_factory, make_tree, quick_run_overrides, tiny_backbone):
    """compose(overrides) of a 2-epoch run of 3 steps per epoch with averaging=ema and
    mixing=mixup_cutmix on a tiny tree and network (module-scoped: conftest's compose_train is per
    test)."""
    base = tmp_path_factory.mktemp("toolkit")
    root = make_tree(base / "images", {"anger": 8, "happy": 8, "sad": 8})
    overrides = [
        *quick_run_overrides,
        "data=folder",
        f"model.backbone={tiny_backbone}",
        f"data.root={root}",
        f"data.cache_dir={base / 'cache'}",
        "data.batch_size=4",
        "trainer.max_epochs=2",
        f"++trainer.limit_train_batches={STEPS_PER_EPOCH}",
        "++trainer.enable_progress_bar=false",
        "scheduler=none",  # a resumed leg then has the same learning rates without the epoch count
        "mixing=mixup_cutmix",
        "averaging=ema",
        f"callbacks.weight_averaging.decay={DECAY}",
        "test=false",
        "keep_training_state=true",  # the resume test continues from last.ckpt's EMA state
    ]

    def _compose(*extra: str):
        with initialize_config_module(config_module="emotionvision.conf", version_base="1.3"):
            return compose(config_name="train", overrides=[*overrides, *extra])

    return base, _compose


def fit(cfg, *callbacks: pl.Callback, ckpt_path: str | None = None):
    """What emotionvision-train does before its test (cli/train.py: train), plus `callbacks`."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model, trainer = instantiate_run(cfg)
    trainer.callbacks.extend(callbacks)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model, trainer


@pytest.fixture(scope="module")
def ema_run(toolkit_cfg):
    base, compose_cfg = toolkit_cfg
    output = base / "whole"
    recorder = Recorder()
    model, trainer = fit(compose_cfg(f"paths.output_dir={output}"), recorder)
    return output, model, trainer, recorder


def test_ema_is_validated_checkpointed_and_loaded(ema_run) -> None:
    output, model, trainer, recorder = ema_run
    assert any(type(callback) is EMAAveraging for callback in trainer.callbacks)
    assert len(recorder.trained) == 2 * STEPS_PER_EPOCH
    averages = [hand_ema(recorder.trained[:steps], DECAY) for steps in (3, 6)]
    # validation ran with the average of the steps so far, training with the trained weights
    for validated, average in zip(recorder.validated, averages, strict=True):
        assert_states_close(validated, average)
    assert not torch.equal(averages[1]["model.fc.weight"], recorder.trained[-1]["model.fc.weight"])

    checkpoints = output / "checkpoints"
    last = read_checkpoint(checkpoints / "last.ckpt")
    assert_states_close(last["state_dict"], averages[1])
    assert_states_close(last["current_model_state"], recorder.trained[-1])  # what resume continues from
    (best_path,) = checkpoints.glob("best-*.ckpt")
    best = read_checkpoint(best_path)
    assert "current_model_state" not in best  # weights only
    assert_states_close(best["state_dict"], averages[best["epoch"]])
    assert_states_close(load_classifier(best_path).state_dict(), averages[best["epoch"]])
    assert_states_close(model.state_dict(), averages[1])  # after fit (and so trainer.test without a best)


def test_export_writes_the_averaged_weights(ema_run, tmp_path: Path) -> None:
    from emotionvision.exporting import export

    output, model, _, recorder = ema_run
    path, _ = export(output / "checkpoints" / "last.ckpt", "torch_export", tmp_path / "m.pt2", check=False)
    images = torch.rand(2, 3, 32, 32)
    exported = torch.export.load(path).module()(images)
    with torch.inference_mode():
        averaged = model.eval().probabilities(images)  # the model holds the final average
        trained = EmotionClassifier(**model.hparams)
        trained.load_state_dict(recorder.trained[-1], strict=False)
        trained_probabilities = trained.eval().probabilities(images)
    torch.testing.assert_close(exported, averaged)
    assert not torch.allclose(exported, trained_probabilities, atol=1e-4)


def test_mixing_reaches_training_only(ema_run) -> None:
    targets = ema_run[3].targets
    assert targets == {"train": {(torch.float32, 2)}, "val": {(torch.int64, 1)}}
    metrics = ema_run[2].callback_metrics
    assert 0 <= float(metrics["train/acc"]) <= 1 and torch.isfinite(metrics["train/loss"])


def test_a_resumed_ema_run_continues_exactly(ema_run, toolkit_cfg) -> None:
    base, compose_cfg = toolkit_cfg
    output = base / "resumed"
    fit(compose_cfg(f"paths.output_dir={output}", "trainer.max_epochs=1"))  # as if stopped after epoch 0
    last = output / "checkpoints" / "last.ckpt"
    fit(compose_cfg(f"paths.output_dir={output}"), ckpt_path=str(last))  # what resume= then runs
    resumed, whole = read_checkpoint(last), read_checkpoint(ema_run[0] / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == whole["global_step"] == 2 * STEPS_PER_EPOCH
    for key in ("state_dict", "current_model_state"):
        for name, value in whole[key].items():
            torch.testing.assert_close(resumed[key][name], value, rtol=0, atol=1e-6, msg=f"{key} {name}")
    assert resumed["averaging_state"]["n_averaged"] == whole["averaging_state"]["n_averaged"] == 6


# ---------------------------------------------------------------------------------------------------
# augmentation of whole batches on their device (batch_augmentation=standard, kornia)


class BatchImages(pl.Callback):
    """The images and dataset indices each training and validation step received."""

    def __init__(self) -> None:
        self.batches: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"train": [], "val": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches["train"].append((batch[0].clone(), batch[2].clone()))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.batches["val"].append((batch[0].clone(), batch[2].clone()))


def test_batch_augmentation_draws_each_training_image_its_own_way(toolkit_cfg) -> None:
    pytest.importorskip("kornia", reason="batch_augmentation=standard needs the kornia extra")
    base, compose_cfg = toolkit_cfg
    output = f"paths.output_dir={base / 'batch_augmented'}"
    seen = BatchImages()
    _, trainer = fit(compose_cfg(output, "batch_augmentation=standard", "data.mixing=null"), seen)
    datamodule = trainer.datamodule
    assert datamodule.mixing is None
    for stage in ("train", "val"):
        for images, indices in seen.batches[stage]:
            served = torch.stack([datamodule.datasets[stage][index][0] for index in indices.tolist()])
            changed = (images - served).abs().flatten(1).amax(1) > 1e-3
            assert changed.all() if stage == "train" else not changed.any(), (stage, changed)
    # one image eight times: eight crops, flips, rotations and jitters, not one draw for the batch
    copies = served[:1].repeat(8, 1, 1, 1)
    augmented = datamodule.batch_augmentation(copies)
    assert augmented.shape == copies.shape and augmented.min() >= 0 and augmented.max() <= 1
    assert len({tuple(image.flatten()[:50].tolist()) for image in augmented}) == 8


def test_the_augmentation_benchmark_times_both_paths() -> None:
    """benchmarks/augmentation_speed.py, at a tiny size: both rates and their ratio, and how to rerun."""
    pytest.importorskip("kornia", reason="batch_augmentation=standard needs the kornia extra")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "augmentation_speed.py"
    command = [sys.executable, str(script), "--size", "16", "--batch-size", "4", "--batches", "1"]
    done = subprocess.run([*command, "--rounds", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rates = re.findall(r"(image by image|batch \(cpu\)): +(\d+) images/s +\(rounds: \d+, \d+\)", done.stdout)
    assert [name for name, _ in rates] == ["image by image", "batch (cpu)"]
    assert all(int(rate) > 0 for _, rate in rates)
    assert re.search(r"batch / image by image: \d+\.\dx", done.stdout) and "reproduce:" in done.stdout


def test_batch_augmentation_without_kornia_says_how_to_install(compose_train, monkeypatch) -> None:
    node = compose_train(["batch_augmentation=standard"]).data.batch_augmentation
    monkeypatch.setitem(sys.modules, "kornia", None)  # as where the kornia extra is not installed
    monkeypatch.setitem(sys.modules, "kornia.augmentation", None)
    hint = r'\(kornia\.augmentation\.ImageSequential\) needs kornia: pip install "emotionvision\[kornia\]"'
    with pytest.raises(UsageError, match=hint):
        check_batch_augmentation(node)
    check_batch_augmentation(compose_train([]).data.batch_augmentation)  # none: nothing to import
