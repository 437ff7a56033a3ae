"""Customer profiles: identities, reachability and traits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Traits that also live in their own profile fields (Segment's reserved traits plus ours).
PROFILE_TRAITS: Mapping[str, str] = {
    "email": "email",
    "phone": "phone",
    "telegram_chat_id": "telegram_chat_id",
    "telegramChatId": "telegram_chat_id",
    "timezone": "timezone",
    "locale": "locale",
}


@dataclass(frozen=True, slots=True)
class CustomerProfile:
    customer_id: int
    user_id: str | None
    anonymous_ids: tuple[str, ...]
    email: str | None
    phone: str | None
    telegram_chat_id: str | None
    timezone: str | None
    locale: str | None
    traits: Mapping[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None
