"""Hydra composition of `train` for every option of every config group, and what it instantiates."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra import compose
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from omegaconf import OmegaConf, open_dict

from emotionvision.callbacks.averaging import EMAAveraging
from emotionvision.cli.train import instantiate_run
from emotionvision.data import EmotionDataModule
from emotionvision.models import EmotionClassifier

CONF = Path(str(importlib.resources.files("emotionvision.conf")))  # what Hydra reads
SPECIAL_GROUPS = {"hydra"}  # Hydra's own settings: checked separately
GROUP_OPTIONS = sorted(
    (group.name, option.stem)
    for group in CONF.iterdir()
    if group.is_dir() and group.name not in SPECIAL_GROUPS and not group.name.startswith(("_", "."))
    for option in group.glob("*.yaml")
)
ISSUE_LINE = (
    "data=six_emotions data.root=PATH model=resnet18 augmentation=standard seed=3 data.batch_size=16 "
    "trainer.max_epochs=30 optimizer.lr=3e-4 ++trainer.limit_train_batches=5"
)


@pytest.fixture(scope="module")
def trees(tmp_path_factory, make_tree, make_subject_tree) -> dict[str, Path]:
    """A plain class-per-folder tree (also marked as a finished demo set), one with train/ and
    test/ folders, one whose file names encode subjects (a finished demo_subjects set) and a CSV
    listing the plain tree's images (path,label), shared by the tests of this module; plus a shared
    decode cache."""
    base = tmp_path_factory.mktemp("config_trees")
    plain = make_tree(base / "plain", {"anger": 6, "happy": 6, "sad": 6})
    # the marker of a finished demo set (generate_demo_dataset's defaults): data=demo draws nothing
    (plain / ".complete").write_text('{"images_per_class": 80, "image_size": 96, "seed": 0}\n')
    make_tree(base / "predefined" / "train", {"angry": 8, "happy": 8}, seed=1)
    make_tree(base / "predefined" / "test", {"angry": 3, "happy": 3}, seed=2)
    subjects = make_subject_tree(base / "subjects", subjects=6, per_subject=1)
    (subjects / ".complete").write_text(
        '{"images_per_class": 80, "image_size": 96, "seed": 0, "subjects": 12}\n'
    )
    manifest = base / "images.csv"
    rows = [f"{path},{path.parent.name}" for path in sorted(plain.glob("*/*.png"))]
    manifest.write_text("\n".join(["path,label", *rows]) + "\n")
    return {
        "plain": plain,
        "predefined": base / "predefined",
        "subjects": subjects,
        "manifest": manifest,
        "cache": base / "cache",
    }


def test_every_group_has_options() -> None:
    groups = {group for group, _ in GROUP_OPTIONS}
    assert {"data", "model", "augmentation", "scheduler", "trainer", "logger", "callbacks"} <= groups
    assert ("model", "inception_v3") in GROUP_OPTIONS and ("data", "fer2013") in GROUP_OPTIONS


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_option_composes_and_instantiates(
    group: str, option: str, compose_train, trees, tmp_path: Path
) -> None:
    special_roots = {
        ("data", "fer2013"): trees["predefined"],
        ("data", "demo_subjects"): trees["subjects"],
        ("data", "manifest"): trees["manifest"],
    }
    root = special_roots.get((group, option), trees["plain"])
    image_size = 299 if option == "inception_v3" else 32  # its auxiliary head needs 299 px
    output_dir = tmp_path / "run"
    overrides = [
        f"{group}={option}",
        f"paths.output_dir={output_dir}",
        f"data.root={root}",
        f"data.cache_dir={trees['cache']}",
        f"data.image_size={image_size}",
        "data.num_workers=0",
        "data.batch_size=4",
    ]
    cfg = compose_train(overrides, return_hydra_config=True)
    assert cfg.hydra.runtime.choices[group] == option
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # every value resolves

    if cfg.trainer.accelerator == "gpu" and not torch.cuda.is_available():
        pytest.skip("trainer=gpu composed and resolved; instantiating its Trainer needs a GPU")
    datamodule, model, trainer = instantiate_run(cfg)
    assert isinstance(datamodule, EmotionDataModule)
    assert datamodule.manifest_path == output_dir / "split.csv"
    assert datamodule.cache_dir == trees["cache"]
    if group == "data":
        datamodule.setup()
        images, _, _ = next(iter(datamodule.train_dataloader()))
        assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
        assert (output_dir / "split.csv").is_file()
        if option == "fer2013":
            assert {row[2] for row in datamodule.manifest if "/test/" in row[0]} == {"test"}
    if group == "augmentation":
        augmented = datamodule.augmentation(torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8))
        assert augmented.shape == (3, 32, 32) and augmented.dtype == torch.uint8
    if group == "batch_augmentation":  # whole float batches on their device (tests/test_toolkit.py)
        assert (datamodule.batch_augmentation is None) == (option == "none")
        if datamodule.batch_augmentation is not None:
            assert datamodule.batch_augmentation(torch.rand(4, 3, 32, 32)).shape == (4, 3, 32, 32)
    if group == "mixing":  # a batch transform built for the data's classes (tests/test_toolkit.py)
        assert (datamodule.mixing is None) == (option == "none")
        if datamodule.mixing is not None:
            _, rows = datamodule.mixing(torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
            assert rows.shape == (4, len(datamodule.class_names))
    if group == "averaging":
        assert any(isinstance(c, EMAAveraging) for c in trainer.callbacks) == (option == "ema")

    assert isinstance(model, EmotionClassifier)
    assert model.hparams.backbone == cfg.model.backbone
    assert type(model.loss).__name__ == cfg.loss._target_.rsplit(".", 1)[1]
    assert model.loss.class_weighted == cfg.loss.class_weighted
    optimizers = model.configure_optimizers()
    group_0 = optimizers["optimizer"].param_groups[0]  # a warmup lowers "lr" at once: check initial_lr
    assert group_0.get("initial_lr", group_0["lr"]) == pytest.approx(cfg.optimizer.lr)
    assert ("lr_scheduler" in optimizers) == bool(cfg.scheduler)

    for callback in trainer.callbacks:
        assert isinstance(callback, pl.Callback)
        if isinstance(callback, ModelCheckpoint) and "model_checkpoint" in cfg.callbacks:  # not Lightning's
            assert Path(callback.dirpath) == output_dir / "checkpoints"
        if (
            isinstance(callback, ModelCheckpoint)
            and "last_checkpoint" in cfg.callbacks
            and callback.monitor is None
        ):
            assert callback.filename == "last" and callback.save_top_k == 1
        elif isinstance(callback, ModelCheckpoint | EarlyStopping) and "model_checkpoint" in cfg.callbacks:
            assert (callback.monitor, callback.mode) == (cfg.monitor.metric, cfg.monitor.mode) or (
                option == "overfit_batch" and isinstance(callback, EarlyStopping)  # stops on train/acc
            )
    for logger in trainer.loggers:
        assert Path(logger.save_dir) == output_dir
        if group == "logger":
            logger.log_metrics({"probe": 1.0}, step=0)
            logger.save()
            assert any(Path(logger.log_dir).iterdir()), f"{type(logger).__name__} wrote nothing"

    assert isinstance(trainer, pl.Trainer)
    assert Path(trainer.default_root_dir) == output_dir
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_issue_override_line_lands_in_the_right_keys(compose_train, trees, tmp_path: Path) -> None:
    root = trees["plain"]
    overrides = [*ISSUE_LINE.replace("PATH", str(root)).split(), f"paths.output_dir={tmp_path}"]
    cfg = compose_train(overrides, return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    assert (choices.data, choices.model, choices.augmentation) == ("six_emotions", "resnet18", "standard")
    assert cfg.data.root == str(root)
    assert cfg.seed == 3
    assert cfg.data.batch_size == 16
    assert cfg.trainer.max_epochs == 30
    assert cfg.scheduler.max_epochs == 30  # the cosine schedule follows trainer.max_epochs
    assert cfg.optimizer.lr == pytest.approx(3e-4) and isinstance(cfg.optimizer.lr, float)
    assert cfg.trainer.limit_train_batches == 5
    assert cfg.data.image_size == 224 == cfg.augmentation.transforms[0].size  # six_emotions' size
    with open_dict(cfg):
        del cfg["hydra"]
    trainer = instantiate(cfg.trainer)
    assert trainer.limit_train_batches == 5 and trainer.max_epochs == 30
    datamodule = instantiate(cfg.data)
    assert datamodule.root == root and datamodule.batch_size == 16
    assert type(datamodule.augmentation).__name__ == "Compose"
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)


def test_dataset_roots_follow_environment_variables(compose_train, monkeypatch) -> None:
    monkeypatch.delenv("EMOTIONVISION_SIX_EMOTIONS", raising=False)
    monkeypatch.delenv("EMOTIONVISION_FER2013", raising=False)
    assert compose_train(["data=six_emotions"]).data.root == "../shared/datasets/six_emotions"
    assert compose_train(["data=fer2013"]).data.root == "../shared/datasets/fer2013"
    monkeypatch.setenv("EMOTIONVISION_SIX_EMOTIONS", "/elsewhere/six")
    monkeypatch.setenv("EMOTIONVISION_FER2013", "/elsewhere/fer")
    assert compose_train(["data=six_emotions"]).data.root == "/elsewhere/six"
    assert compose_train(["data=fer2013"]).data.root == "/elsewhere/fer"


def test_paths_follow_emotionvision_root(compose_train, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EMOTIONVISION_ROOT", raising=False)
    paths = compose_train([]).paths
    assert (paths.log_dir, paths.cache_dir) == ("./logs", "./data/cache")
    monkeypatch.setenv("EMOTIONVISION_ROOT", str(tmp_path))
    cfg = compose_train([], return_hydra_config=True)
    assert cfg.paths.cache_dir == f"{tmp_path}/data/cache"
    assert cfg.data.root == f"{tmp_path}/data/demo"
    assert cfg.hydra.run.dir.startswith(f"{tmp_path}/logs/train/runs/")
    assert cfg.hydra.sweep.dir.startswith(f"{tmp_path}/logs/train/multiruns/")
    assert cfg.hydra.job.chdir is False


def test_unknown_model_lists_the_choices(compose_train) -> None:
    with pytest.raises(MissingConfigException, match=r"model/resnet19") as error:
        compose_train(["model=resnet19"])
    assert "Available options in 'model':\n\tconvnext_tiny\n\tefficientnet_b0" in str(error.value)


def schedule(compose_train, option: str, epochs: int = 5) -> tuple[torch.optim.Optimizer, object]:
    cfg = compose_train([f"scheduler={option}", f"trainer.max_epochs={epochs}", "optimizer.lr=0.1"])
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    return optimizer, instantiate(cfg.scheduler)(optimizer) if cfg.scheduler else None


def test_cosine_schedule_warms_up_then_decays_to_zero(compose_train) -> None:
    optimizer, scheduler = schedule(compose_train, "cosine", epochs=5)
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.01)  # warmup starts at a tenth
    assert rates[1] == pytest.approx(0.1)
    assert rates[1] > rates[2] > rates[3] > rates[4] > 0
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # zero at max_epochs


def test_plateau_schedule_halves_on_a_flat_metric(compose_train) -> None:
    optimizer, scheduler = schedule(compose_train, "plateau")
    for score in (0.5, 0.6, 0.6, 0.6, 0.6):
        optimizer.step()
        scheduler.step(score)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # patience 3: not yet
    optimizer.step()
    scheduler.step(0.6)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_no_schedule_keeps_the_rate(compose_train) -> None:
    optimizer, scheduler = schedule(compose_train, "none")
    assert scheduler is None
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_the_image_size_has_one_key(compose_train, trees, tmp_path: Path) -> None:
    """data.image_size sets the size (each data set its own, an experiment its choice); the model has
    no size key and is built for, and records, the data's size."""
    sizes = {
        (): 64,  # the demo
        ("data=demo_subjects",): 64,
        ("data=six_emotions",): 224,
        ("experiment=fer2013_pretrain",): 48,
        ("experiment=inception_v3",): 299,
        ("data=six_emotions", "model=inception_v3", "data.image_size=320"): 320,
    }
    for overrides, size in sizes.items():
        cfg = compose_train(list(overrides))
        assert cfg.data.image_size == size and "input_size" not in cfg.model, overrides
    cfg = compose_train(
        [
            "data=folder",
            f"data.root={trees['plain']}",
            f"data.cache_dir={trees['cache']}",
            f"paths.output_dir={tmp_path}",
            "data.image_size=40",
            "data.num_workers=0",
            "augmentation=standard",
        ]
    )
    assert cfg.augmentation.transforms[0].size == 40
    datamodule, model, _ = instantiate_run(cfg)
    assert datamodule.image_size == model.hparams.input_size == 40  # what the checkpoint records


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", r"Value 'abc' of type 'str' could not be converted to Integer\s+full_key: seed"),
        ("test=maybe", r"Value 'maybe' is not a valid bool.*\s+full_key: test"),
        ("monitor.mode=maximum", r"Invalid value 'maximum', expected one of \[max, min\]"),
        ("tags=5", r"full_key: tags"),
        ("model.aux_weight=big", r"Value 'big' of type 'str' could not be converted to Float"),
        ("model.pretrained=maybe", r"Value 'maybe' is not a valid bool.*\s+full_key: model\.pretrained"),
        ("model.input_size=48", r"Key 'input_size' not in 'ModelConfig'"),  # the size is data.image_size
    ],
)
def test_a_wrong_type_fails_at_compose(compose_train, override: str, message: str) -> None:
    with pytest.raises(ConfigCompositionException) as error:
        compose_train([override])
    assert override.split("=")[0] in str(error.value)
    assert re.search(message, str(error.value.__cause__)), error.value.__cause__


@pytest.mark.parametrize("mode", ["max", "min"])
def test_monitor_mode_reaches_the_callbacks_and_the_search_as_text(compose_train, mode: str) -> None:
    cfg = compose_train([f"monitor.mode={mode}", "hparams_search=optuna"], return_hydra_config=True)
    early_stopping = instantiate(cfg.callbacks.early_stopping)
    assert early_stopping.mode == mode and repr(cfg.callbacks.early_stopping.mode) == repr(mode)
    assert cfg.hydra.sweeper.direction == f"{mode}imize"


def test_only_whole_config_groups_patch_the_whole_config() -> None:
    """experiment/, sanity/ and hparams_search/ patch the whole config; every other group fills its node."""
    patching = {
        path.relative_to(CONF).as_posix()
        for path in CONF.glob("*/*.yaml")
        if path.read_text().startswith("# @package _global_")
        and path.parent.name not in {"experiment", "sanity", "hparams_search"}
    }
    assert patching == set()


def test_preprocess_and_finetune_fill_the_nodes_they_configure(compose_train) -> None:
    cfg = compose_train(["preprocess=face", "finetune=gradual", "callbacks=none", "data=six_emotions"])
    assert cfg.data.face_crop.detector == "mtcnn" and cfg.model.face_crop.detector == "mtcnn"
    assert cfg.callbacks.finetune.unfreeze_backbone_at_epoch == 3 and "report" in cfg.callbacks
    assert not {"preprocess", "finetune", "sanity"} & set(cfg)  # no top-level node of their own
    plain = compose_train(["preprocess=none", "finetune=full"])
    assert plain.data.face_crop is None and "finetune" not in plain.callbacks


def test_the_pixel_limit_is_set_once(compose_train) -> None:
    """images.max_pixels (PIL's limit by default) is the limit of training, evaluation and prediction."""
    assert compose_train([]).data.max_image_pixels == 89478485
    assert compose_train(["images.max_pixels=1000"]).data.max_image_pixels == 1000
    assert compose(config_name="eval", overrides=["images.max_pixels=1000"]).data.max_image_pixels == 1000
    assert compose(config_name="predict", overrides=["images.max_pixels=null"]).max_image_pixels is None
    assert compose(config_name="crosseval").data.max_image_pixels == 89478485
