"""Which `_target_`s a config read back from disk may instantiate.

A run directory is data, not code: `resume=RUN` trains with the config saved in RUN/.hydra/config.yaml,
and a run directory received from someone else can carry both a config and a payload (a pickle) for it.
Hydra instantiates any importable callable a `_target_` names, and its own blocklist (os.system,
subprocess, ...) leaves loaders such as `torch.load(f=..., weights_only=False)`, which run a pickle's
code. So a config from disk passes `check_targets` first (`trusted_config` reads, resolves and checks
one): every `_target_` in it must name a class or function defined in a trusted package
(`TRUSTED_PACKAGES`, plus the `trusted_targets` setting of the command line, never of the file), and
no loader, writer or runner (`UNSAFE_NAME`) is a target, wherever it is defined. Configs composed from
the installed conf/ and the command line are the user's own and are not checked.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra._internal.utils import _locate  # what hydra.utils.instantiate resolves a _target_ with
from omegaconf import DictConfig, OmegaConf

from emotionvision.errors import UsageError

# the packages whose classes and functions a config from disk may instantiate
TRUSTED_PACKAGES = (
    "emotionvision",
    "torch.nn",
    "torch.optim",
    "torchvision",
    "lightning",
    "torchmetrics",
    "timm",
    "kornia.augmentation",
)
# modules of trusted packages that instantiate whatever class a string names (jsonargparse's class_path)
UNTRUSTED_MODULES = ("lightning.pytorch.cli", "lightning.fabric.cli")
# functions that load, save, write, extract, download or run files, code or processes, or instantiate
# what a string names: never a target of a config from disk, in any package (torch.load,
# LightningModule.load_from_checkpoint, timm's load_checkpoint, torchvision.io.write_file,
# extract_archive, builtins.exec, os.system, ...)
UNSAFE_NAME = re.compile(
    r"load|save|write|pickle|extract|exec|eval|compile|import|instantiate|locate|system|popen|spawn|open|"
    r"remove|unlink|rmtree",
    re.IGNORECASE,
)
TARGET = "_target_"


def trusted_config(path: Path, source: str, extra: Sequence[str] = ()) -> DictConfig:
    """The config saved at `path`, its interpolations resolved (what is checked is what is
    instantiated), after `check_targets`; UsageError (one line, naming `source`) otherwise."""
    saved = OmegaConf.load(path)
    try:
        resolved = OmegaConf.to_container(saved, resolve=True)
    except Exception as error:  # an interpolation that does not resolve: OmegaConf's errors vary
        reason = str(error).splitlines()[0] if str(error) else repr(error)
        raise UsageError(f"{source}: {path} does not resolve ({reason}).") from None
    # an escaped interpolation resolves to one (\${...} to ${...}), which the config made of the
    # values would resolve again, after the check: refused
    again = next(
        (key for key, value in find_values(resolved) if isinstance(value, str) and "${" in value), None
    )
    if again is not None:
        raise UsageError(
            f"{source}: {path} has {again} resolve to another interpolation, which would be resolved "
            "after the check of its targets; a config emotionvision-train saved has none."
        )
    check_targets(resolved, f"{source}: {path}", extra)
    return OmegaConf.create(resolved)


def check_targets(config: DictConfig | dict | list, where: str, extra: Sequence[str] = ()) -> None:
    """UsageError (one line) naming the first `_target_` of `config` that is not a class or function of
    a trusted package (`TRUSTED_PACKAGES` and `extra`), or is a loader, writer or runner."""
    packages = trusted_packages(extra)
    container = OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else config
    for key, target in find_targets(container):
        reason = untrusted_reason(target, packages)
        if reason is not None:
            raise UsageError(
                f"{where} names _target_ {target} at {key}, which a config read back from disk may not "
                f"instantiate: {reason}. A run directory from elsewhere can carry code, so its config only "
                f"instantiates classes and functions of {', '.join(packages)} (trusted_targets=[PACKAGE] "
                "adds one you trust), never a loader, writer or runner."
            )


def trusted_packages(extra: Sequence[str] = ()) -> tuple[str, ...]:
    """`TRUSTED_PACKAGES` and the dotted module names `extra` (the `trusted_targets` setting)."""
    added = [str(name).strip() for name in extra or ()]
    bad = [name for name in added if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", name)]
    if bad:
        raise UsageError(
            f"trusted_targets={bad}: give dotted module names, e.g. trusted_targets=[mypackage]."
        )
    return (*TRUSTED_PACKAGES, *(name for name in added if name not in TRUSTED_PACKAGES))


def find_values(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf value in a plain container of dicts and lists."""
    if isinstance(node, dict):
        for name, value in node.items():
            yield from find_values(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from find_values(value, f"{key}[{index}]")
    else:
        yield key, node


def find_targets(node: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every `_target_` in a plain container of dicts and lists."""
    if isinstance(node, dict):
        if TARGET in node:
            yield key or "the top level", node[TARGET]
        for name, value in node.items():
            yield from find_targets(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from find_targets(value, f"{key}[{index}]")


def untrusted_reason(target: Any, packages: Sequence[str]) -> str | None:
    """Why `target` may not be instantiated from a config read back from disk; None where it may."""
    if not isinstance(target, str):
        return f"a _target_ names a class or function by a string, not a {type(target).__name__}"
    if not _within(target, packages):
        return "it is outside the trusted packages"
    try:
        found = _locate(target)  # imports modules of trusted packages only
    except Exception as error:  # ImportError, AttributeError, ...: Hydra would fail on it too
        return f"it cannot be imported ({type(error).__name__})"
    if not (inspect.isclass(found) or inspect.isroutine(found)):
        return f"it is a {type(found).__name__}, not a class or function"
    module = getattr(found, "__module__", None)
    where = f"{module}.{getattr(found, '__qualname__', '')}"
    if not isinstance(module, str) or not _within(module, packages):
        return f"it is {where}, defined outside the trusted packages"
    if _within(module, UNTRUSTED_MODULES):
        return f"it is {where}, which instantiates any class a string names"
    name = getattr(found, "__qualname__", "") or target
    if not inspect.isclass(found) and UNSAFE_NAME.search(name):
        return f"it is {where}, a function that loads, writes or runs files or code"
    return None


def _within(name: str, packages: Sequence[str]) -> bool:
    return any(name == package or name.startswith(f"{package}.") for package in packages)
