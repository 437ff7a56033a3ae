"""A bounce or complaint about a message, however it arrived: a delivery status
notification (RFC 3464) at the bounce mailbox, an abuse report (ARF, RFC 5965), or a
provider's webhook. The channel parses it into this; the bounce service acts on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BounceKind = Literal["hard", "soft", "complaint"]


@dataclass(frozen=True, slots=True)
class Bounce:
    """`hard`: the address does not exist or refuses for good (5.x.x); `soft`: a temporary
    failure (4.x.x: a full mailbox, greylisting); `complaint`: the recipient reported the
    message as spam.

    `outbox_key` names the message (from the VERP return path or the original Message-ID)
    when it could be recovered; `recipient` is the address that failed, when the report
    names it. `report_id` identifies the report itself, so that processing the same report
    twice does nothing the second time."""

    kind: BounceKind
    report_id: str
    source: str  # dsn | arf | plain | webhook:<shape>
    recipient: str | None = None
    outbox_key: str | None = None
    status: str | None = None  # the enhanced status code (RFC 3463), such as 5.1.1
    diagnostic: str = ""
