"""Events as Orbita stores them: one normalised record per Segment message."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A validated message, normalised: what the ingest service resolves and stores.

    `properties` holds a track/page/screen message's properties, or an identify/group
    message's traits; `name` is the track event name or the page/screen name.
    """

    message_id: str
    type: str
    name: str | None
    user_id: str | None
    anonymous_id: str | None
    properties: Mapping[str, Any]
    context: Mapping[str, Any]
    timestamp: datetime
    received_at: datetime
    # alias: the id being merged into user_id; group: the group id.
    previous_id: str | None = None
    group_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event read back from the event store."""

    message_id: str
    customer_id: int
    type: str
    name: str | None
    user_id: str | None
    anonymous_id: str | None
    properties: Mapping[str, Any]
    context: Mapping[str, Any]
    timestamp: datetime
    received_at: datetime
