"""Errors in a user's config or data: a `UsageError` names the option or file and the fix; the commands
print it as one line (emotionvision/cli/usage.py)."""

from __future__ import annotations

import difflib
import inspect
import sys
from pathlib import Path

from hydra.utils import get_object
from omegaconf import DictConfig

from emotionvision.atomic import disk_full_error, is_disk_full


class UsageError(ValueError):
    """A mistake the user can fix (a bad option, an unusable data tree); the message names the fix."""


def usage_exit(error: UsageError) -> SystemExit:
    """The exit of a usage error found while Hydra composes the config (in a resolver, before any task
    runs): `<program>: error: <message>` on stderr, status 1."""
    return SystemExit(f"{Path(sys.argv[0]).name}: error: {error}")


def usage_error(error: BaseException | None) -> UsageError | None:
    """The UsageError `error` is, or was raised from (Hydra's instantiate wraps errors); else None.
    A full disk or quota (emotionvision/atomic.py) is one too: its message names the file and the free
    space."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UsageError):
            return error
        if is_disk_full(error):
            return UsageError(str(disk_full_error(error)))
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def check_arguments(node: DictConfig, key: str) -> None:
    """UsageError naming each key of the `_target_` config `node` (found at `key`) that its target does
    not take, with the closest argument it does take: `trainer.max_epoch` -> `trainer.max_epochs`."""
    try:
        parameters = inspect.signature(get_object(node._target_)).parameters
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [arg for arg in node if arg not in parameters and not (arg[0] == "_" and arg[-1] == "_")]
    if unknown:
        raise UsageError(
            " ".join(_not_an_argument(arg, key, node._target_, list(parameters)) for arg in unknown)
        )


def _not_an_argument(arg: str, key: str, target: str, arguments: list[str]) -> str:
    close = difflib.get_close_matches(arg, arguments, n=1)
    fix = f"did you mean {key}.{close[0]}?" if close else f"remove it (see the arguments of {target})."
    return f"{key}.{arg} is not a {target.rsplit('.', 1)[-1]} argument; {fix}"
