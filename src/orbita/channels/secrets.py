"""Secrets come from environment variables named in the strategy, and are never logged."""

from __future__ import annotations

from collections.abc import Mapping

from orbita.core.errors import UserError


def read_secret(env: Mapping[str, str], name: str | None, *, channel: str) -> str | None:
    """The value of the variable `name` (None when no variable is named); a named variable
    that is not set is a mistake in the deployment, reported without any value."""
    if name is None:
        return None
    value = env.get(name)
    if not value:
        raise UserError(f"channel {channel}: the environment variable {name} is not set")
    return value
