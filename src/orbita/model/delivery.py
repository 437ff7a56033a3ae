"""What the sender hands a channel, what a channel answers, and the shape every channel has.

Services and channels sit side by side in the layers and never import each other: the
sender works with any `ChannelClient`, and the edge (CLI, worker) opens the clients of the
strategy's channels (`orbita.channels.open_channels`) and passes them in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

DeliveryStatus = Literal["delivered", "transient", "terminal"]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One rendered message to one address, ready for its channel.

    `key` is the outbox idempotency key: the SMTP Message-ID and the VERP return path are
    derived from it, HTTP providers get it as `Idempotency-Key`. `at` is when the sender
    sends it (the Date header, the webhook signature's time stamp)."""

    key: str
    channel: str
    to: str
    at: datetime
    subject: str | None = None
    preheader: str | None = None
    sender: str | None = None
    reply_to: str | None = None
    html: str | None = None
    text: str | None = None
    url: str | None = None
    # One-click unsubscribe link (marketing messages only; RFC 8058 for email).
    unsubscribe_url: str | None = None
    # Webhooks: the JSON body and method; any channel: data for the provider (push `data`).
    body: Mapping[str, Any] | None = None
    method: str = "POST"
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """A channel's answer: delivered (the provider took the message), a transient failure
    (a retry may work: timeouts, 429, 5xx) or a terminal one (a retry cannot: bad address,
    rejected content). Expected failures are values, not exceptions."""

    status: DeliveryStatus
    detail: str = ""
    provider_id: str | None = None
    # Seconds the provider asked us to wait (HTTP Retry-After, Telegram's retry_after).
    retry_after: float | None = None
    # Delivered as far as we know: the message was committed (the SMTP final dot written)
    # but the provider's answer never came. It is not sent again.
    unconfirmed: bool = False

    @classmethod
    def delivered(cls, detail: str = "", *, provider_id: str | None = None) -> DeliveryResult:
        return cls("delivered", detail, provider_id)

    @classmethod
    def transient(cls, detail: str, *, retry_after: float | None = None) -> DeliveryResult:
        return cls("transient", detail, retry_after=retry_after)

    @classmethod
    def terminal(cls, detail: str) -> DeliveryResult:
        return cls("terminal", detail)


# Called by a channel at its point of no return (SMTP: before the final dot); it records
# that point durably and answers whether this sender still owns the message. False: abort.
CommitPoint = Callable[[], bool]


class ChannelClient(Protocol):
    """The one shape of every channel plugin."""

    async def send(
        self, message: OutgoingMessage, *, commit: CommitPoint | None = None
    ) -> DeliveryResult:
        """Send one message; never raises for a failure the provider reports.

        A channel whose protocol has a point of no return (SMTP) calls `commit` right
        before it; HTTP channels do not (providers deduplicate by the Idempotency-Key)."""
        ...

    async def close(self) -> None:
        """Close connections (idempotent)."""
        ...
