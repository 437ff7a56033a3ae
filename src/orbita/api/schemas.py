"""Response models (so OpenAPI documents them) and request-body schemas for OpenAPI.

Request bodies are not pydantic parameters (see bodies.py); their schemas come from the same
message models that validate them, so the documentation cannot drift from the checks.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orbita.model.customers import CustomerProfile
from orbita.model.events import StoredEvent
from orbita.model.messages import Alias, Batch, Group, Identify, Page, Screen, Track

_MESSAGES: tuple[type[BaseModel], ...] = (Identify, Track, Page, Screen, Group, Alias)


def message_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema of a message model as a request body (Segment's camelCase names)."""
    schema = model.model_json_schema(by_alias=True)
    if model is Batch:
        schema["properties"]["batch"]["items"] = {
            "oneOf": [m.model_json_schema(by_alias=True) for m in _MESSAGES],
            "discriminator": {"propertyName": "type"},
        }
        return schema
    # The endpoint (`/v1/track`) sets `type`; a body may leave it out.
    schema["required"] = [name for name in schema.get("required", []) if name != "type"]
    schema["properties"]["writeKey"] = {
        "type": "string",
        "description": "The write key, when it is not sent with HTTP Basic authentication.",
    }
    return schema


class IngestAccepted(BaseModel):
    """What Segment answers; its clients look only at the 200."""

    success: bool = True


class Event(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    message_id: str
    customer_id: int
    type: str
    name: str | None
    user_id: str | None
    anonymous_id: str | None
    properties: dict[str, Any]
    context: dict[str, Any]
    timestamp: datetime = Field(description="When it happened, corrected for clock skew.")
    received_at: datetime

    @classmethod
    def of(cls, event: StoredEvent) -> Event:
        return cls.model_validate(event)


class Profile(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    customer_id: int
    user_id: str | None
    anonymous_ids: list[str]
    email: str | None
    phone: str | None
    telegram_chat_id: str | None
    timezone: str | None
    locale: str | None
    traits: dict[str, Any]
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, profile: CustomerProfile) -> Profile:
        return cls.model_validate(profile)


class Customer(BaseModel):
    profile: Profile
    events_count: int = Field(description="All of the customer's events.")
    latest_events: list[Event] = Field(description="The newest events, newest first.")


class EventPage(BaseModel):
    events: list[Event] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


class Erasure(BaseModel):
    """What a GDPR erasure removed (counts only: no personal data is returned)."""

    # Fields the service adds later pass through undocumented rather than being dropped.
    model_config = ConfigDict(extra="allow")

    user_id: str
    customer_id: int
    events: int = Field(description="Events removed.")
    identities: int = Field(description="Identities (user and anonymous ids) removed.")
    profiles: int = Field(description="Profiles removed.")
    memberships: int = Field(description="Segment memberships and lifecycle stage history rows.")
    journey_rows: int = Field(description="Journey runs, steps, conversions and outbox messages.")
    delivery_rows: int = Field(
        description="Delivery decisions and consents (a suppressed address stays suppressed)."
    )


class Health(BaseModel):
    status: str
