"""A webhook channel with its signing secret read, and the signature it puts on a body."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from orbita.channels.secrets import read_secret
from orbita.model.channels import WebhookChannel

SIGNATURE_HEADER = "X-Orbita-Signature"


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    channel: WebhookChannel
    secret: str | None

    @classmethod
    def resolve(cls, channel: WebhookChannel, *, env: Mapping[str, str]) -> WebhookConfig:
        return cls(channel, read_secret(env, channel.secret_env, channel="webhook"))

    def __repr__(self) -> str:
        return f"WebhookConfig({self.channel.url})"


def signature(secret: str, *, timestamp: int, body: bytes) -> str:
    """`t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (the receiver recomputes it and
    refuses old time stamps, so a captured request cannot be replayed later)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, header: str, *, body: bytes) -> bool:
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = signature(secret, timestamp=timestamp, body=body)
    return hmac.compare_digest(expected, header)
