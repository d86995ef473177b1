"""The registered backbones and timm models through the config (model=<name>): one real training step
each, the linear probe's frozen parameters, input-size checks, ONNX export and model.init_from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import BaseFinetuning

from emotionvision.errors import UsageError, usage_error
from emotionvision.exporting import export
from emotionvision.models import BACKBONES, EmotionClassifier, build_backbone
from emotionvision.models.backbones import head_names, resize_vit_embeddings, vit_b_16
from emotionvision.models.onnx import INSTALL_HINT as ONNX_HINT

CLASSES = ["anger", "happy", "sad"]
SIZE = 32  # ViT-B/16: 2 x 2 patches; Swin-T: the smallest multiple of 32
HAS_TIMM = importlib.util.find_spec("timm") is not None
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
needs_timm = pytest.mark.skipif(
    not HAS_TIMM, reason='needs the timm extra: pip install "emotionvision[timm]"'
)
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason=f"needs the export extra: {ONNX_HINT}")
# every registered backbone but Inception-V3 (299 px: tests/test_train_e2e.py trains it), and a timm
# model (timm's tiny test_vit, built for 32 px: a fixed-input-size architecture; model=timm's default
# convnext_nano is built by tests/test_config.py)
MODELS = [
    *[pytest.param([f"model={name}"], id=name) for name in sorted(BACKBONES) if name != "inception_v3"],
    pytest.param(["model=timm", "model.name=test_vit"], id="timm-test_vit", marks=needs_timm),
]


def build(compose_train, overrides: list[str], classes: list[str] = CLASSES) -> EmotionClassifier:
    """The model the train config composes with `overrides`, for `classes` at SIZE px (as
    instantiate_run builds it)."""
    cfg = compose_train([f"data.image_size={SIZE}", *overrides])
    return instantiate(cfg.model, _convert_="all", class_names=classes, input_size=SIZE)


def train_step(model: EmotionClassifier, seed: int = 0) -> torch.Tensor:
    """One optimizer step (the config's AdamW) on a random batch; the loss."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(4, 3, SIZE, SIZE, generator=generator)
    targets = torch.tensor([0, 1, 2, 0])
    model.loss.set_class_weights(torch.ones(len(CLASSES)))  # as setup sets them for weighted_ce
    optimizer = model.configure_optimizers()["optimizer"]
    model.train()
    loss = model.training_step((images, targets, torch.arange(4)), 0)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()


def save_checkpoint(model: EmotionClassifier, path: Path) -> Path:
    """As Lightning saves it: state_dict + hyper_parameters."""
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


@pytest.mark.parametrize("overrides", MODELS)
def test_training_step_and_linear_probe(compose_train, overrides: list[str]) -> None:
    """One real training step changes the weights, body and heads; finetune=linear_probe's callback
    then leaves only the heads trainable (a ViT's class token and a Swin block's bias table too are
    frozen: they are parameters of modules with children)."""
    torch.manual_seed(0)
    model = build(compose_train, overrides)
    heads = head_names(model.hparams.backbone, model.model)
    before = {key: value.clone() for key, value in model.model.state_dict().items()}
    loss = train_step(model)
    assert torch.isfinite(loss)
    changed = {key for key, value in model.model.state_dict().items() if not torch.equal(value, before[key])}
    assert any(key.rpartition(".")[0] in heads for key in changed), "no head weight changed"
    assert any(key.rpartition(".")[0] not in heads for key in changed), "no backbone weight changed"

    cfg = compose_train([*overrides, "finetune=linear_probe"])
    instantiate(cfg.callbacks.finetune).freeze_before_training(model)
    trainable = {key for key, value in model.model.named_parameters() if value.requires_grad}
    assert trainable == {f"{head}.{kind}" for head in heads for kind in ("weight", "bias")}
    BaseFinetuning.make_trainable(model.backbone)  # what finetune=gradual does when it unfreezes
    assert all(value.requires_grad for value in model.model.parameters())


@pytest.mark.parametrize(
    ("backbone", "size", "fix"),
    [
        ("vit_b_16", 40, "data.image_size=32 or 48"),
        ("swin_t", 48, "data.image_size=32 or 64"),
        ("vit_b_16", 16, r"data.image_size=32 \(or more\)"),
    ],
)
def test_bad_input_size_names_the_fix(backbone: str, size: int, fix: str) -> None:
    with pytest.raises(UsageError, match=rf"^{backbone} needs .*got {size}: set {fix}\.$"):
        build_backbone(backbone, 3, input_size=size)


def test_vit_position_embedding_is_interpolated_to_the_input_size() -> None:
    """Weights of another input size (here 48 px: 3 x 3 patches + the class token) load into a 32 px
    ViT: the class token's embedding is kept, the patch grid's interpolated."""
    model = vit_b_16(False, SIZE)
    state = model.state_dict()
    state["encoder.pos_embedding"] = torch.rand(1, 3 * 3 + 1, 768, generator=torch.Generator().manual_seed(0))
    model.load_state_dict(resize_vit_embeddings(model, state))
    assert model.encoder.pos_embedding.shape == (1, 2 * 2 + 1, 768)
    torch.testing.assert_close(model.encoder.pos_embedding[:, 0], state["encoder.pos_embedding"][:, 0])


@needs_timm
def test_timm_needs_a_known_name(compose_train) -> None:
    """One-line UsageErrors saying how to find the names (Hydra's instantiate wraps them; the commands
    print them alone)."""
    for name, start in [
        ("convnext_nanoo", "Unknown timm model 'convnext_nanoo' "),
        ("null", "model=timm needs"),
    ]:
        with pytest.raises(Exception) as raised:
            build(compose_train, ["model=timm", f"model.name={name}"])
        error = str(usage_error(raised.value))
        assert error.startswith(start) and "timm.list_models" in error and "\n" not in error


@needs_onnx
@needs_timm
def test_onnx_export_round_trip(compose_train, tmp_path: Path) -> None:
    """A trained checkpoint of a timm model exports: load_classifier rebuilds it from the name its
    hyperparameters record, and the ONNX file matches PyTorch. (timm's tiny test_efficientnet keeps
    the exporter's ~5 s short; each torchvision backbone exports too, in 10-30 s on 2 cores.)"""
    torch.manual_seed(0)
    model = build(compose_train, ["model=timm", "model.name=test_efficientnet"])
    train_step(model)
    checkpoint = save_checkpoint(model, tmp_path / "model.ckpt")
    path, difference = export(checkpoint, "onnx")
    assert path.is_file() and difference is not None and difference < 1e-4


def test_init_from_between_two_checkpoints(compose_train, tmp_path: Path) -> None:
    """EfficientNet-B0 trained on angry/happy/sad starts an anger/fear/happy model: the body is the
    checkpoint's, head rows carry over for the shared (renamed) classes."""
    torch.manual_seed(0)
    source = build(compose_train, ["model=efficientnet_b0"], ["angry", "happy", "sad"])
    train_step(source)
    checkpoint = save_checkpoint(source, tmp_path / "source.ckpt")
    overrides = [
        "model=efficientnet_b0",
        f"model.init_from={checkpoint}",
        "model.init_class_map={angry: anger}",
    ]
    target = build(compose_train, overrides, ["anger", "fear", "happy"])
    state, expected = target.model.state_dict(), source.model.state_dict()
    body = [key for key in expected if not key.startswith("classifier.1.")]
    assert all(torch.equal(state[key], expected[key]) for key in body)
    head = state["classifier.1.weight"]
    torch.testing.assert_close(head[0], expected["classifier.1.weight"][0])  # angry -> anger
    torch.testing.assert_close(head[2], expected["classifier.1.weight"][1])  # happy
    assert not any(torch.allclose(head[1], row) for row in expected["classifier.1.weight"])  # fear: new
