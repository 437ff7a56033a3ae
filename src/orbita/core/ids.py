"""Identifiers: message keys for deduplication, keys for workspaces."""

from __future__ import annotations

import secrets
import uuid


def new_message_id() -> str:
    return str(uuid.uuid4())


def new_api_key(prefix: str) -> str:
    """A random key such as `wk_…` (write) or `ak_…` (admin)."""
    return f"{prefix}_{secrets.token_urlsafe(24)}"
