"""Errors in a user's config or data: the entry points report them as one line, without a traceback."""

from __future__ import annotations


class UsageError(ValueError):
    """A mistake the user can fix (a bad option, an unusable data tree); the message names the fix."""
