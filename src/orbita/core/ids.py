"""Identifiers: message keys for deduplication, keys for workspaces."""

from __future__ import annotations

import hashlib
import secrets
import uuid


def message_key(message_id: str) -> uuid.UUID:
    """A fixed-width key for a Segment messageId: deduplication indexes stay small and fast."""
    return uuid.UUID(bytes=hashlib.blake2b(message_id.encode(), digest_size=16).digest())


def new_message_id() -> str:
    return str(uuid.uuid4())


def new_api_key(prefix: str) -> str:
    """A random key such as `wk_…` (write) or `ak_…` (admin)."""
    return f"{prefix}_{secrets.token_urlsafe(24)}"
