"""Segment-compatible tracking messages (identify, track, page, screen, group, alias, batch).

The same models validate the HTTP API and bulk imports, so both accept exactly the same input.
Field names follow Segment's camelCase wire format; unknown top-level fields are ignored as
Segment ignores them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

JsonObject = dict[str, Any]


def _as_id(value: object) -> object:
    # SDKs send numeric ids now and then; Segment stores them as strings.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    return value


def _aware(value: datetime | None) -> datetime | None:
    # Segment asks for ISO 8601 with a zone; a timestamp without one is read as UTC.
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


Id = Annotated[str, Field(min_length=1, max_length=255)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    message_id: Id | None = Field(default=None, alias="messageId")
    user_id: Id | None = Field(default=None, alias="userId")
    anonymous_id: Id | None = Field(default=None, alias="anonymousId")
    timestamp: datetime | None = None
    original_timestamp: datetime | None = Field(default=None, alias="originalTimestamp")
    sent_at: datetime | None = Field(default=None, alias="sentAt")
    context: JsonObject = Field(default_factory=dict)
    integrations: JsonObject = Field(default_factory=dict)

    @field_validator("message_id", "user_id", "anonymous_id", mode="before")
    @classmethod
    def _ids(cls, value: object) -> object:
        return _as_id(value)

    @field_validator("timestamp", "original_timestamp", "sent_at")
    @classmethod
    def _zones(cls, value: datetime | None) -> datetime | None:
        return _aware(value)

    @model_validator(mode="after")
    def _someone(self) -> _Message:
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("userId or anonymousId is required")
        return self

    def event_time(self, *, received_at: datetime, batch_sent_at: datetime | None = None) -> datetime:
        """When it happened, corrected for the sender's clock skew as Segment documents it.

        timestamp = receivedAt - (sentAt - originalTimestamp): the device clock's error cancels
        out. Without sentAt the timestamp is taken as given; without either, it is receivedAt.
        """
        happened = self.timestamp or self.original_timestamp
        sent_at = self.sent_at or batch_sent_at
        if happened is None:
            return received_at
        if sent_at is not None:
            return received_at - (sent_at - happened)
        return happened


class Identify(_Message):
    type: Literal["identify"]
    traits: JsonObject = Field(default_factory=dict)


class Track(_Message):
    type: Literal["track"]
    event: Annotated[str, Field(min_length=1, max_length=200)]
    properties: JsonObject = Field(default_factory=dict)


class Page(_Message):
    type: Literal["page"]
    name: str | None = None
    category: str | None = None
    properties: JsonObject = Field(default_factory=dict)


class Screen(_Message):
    type: Literal["screen"]
    name: str | None = None
    category: str | None = None
    properties: JsonObject = Field(default_factory=dict)


class Group(_Message):
    type: Literal["group"]
    group_id: Id = Field(alias="groupId")
    traits: JsonObject = Field(default_factory=dict)

    @field_validator("group_id", mode="before")
    @classmethod
    def _group(cls, value: object) -> object:
        return _as_id(value)


class Alias(_Message):
    type: Literal["alias"]
    previous_id: Id = Field(alias="previousId")

    @field_validator("previous_id", mode="before")
    @classmethod
    def _previous(cls, value: object) -> object:
        return _as_id(value)

    @model_validator(mode="after")
    def _needs_user(self) -> Alias:
        if self.user_id is None:
            raise ValueError("alias needs userId (the new id) and previousId (the old one)")
        return self


Message = Annotated[
    Identify | Track | Page | Screen | Group | Alias,
    Field(discriminator="type"),
]
MESSAGE = TypeAdapter[Message](Message)


class Batch(BaseModel):
    """`POST /v1/batch`: messages plus fields that apply to all of them."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    batch: list[JsonObject]
    context: JsonObject = Field(default_factory=dict)
    integrations: JsonObject = Field(default_factory=dict)
    sent_at: datetime | None = Field(default=None, alias="sentAt")
    write_key: str | None = Field(default=None, alias="writeKey")

    @field_validator("sent_at")
    @classmethod
    def _zone(cls, value: datetime | None) -> datetime | None:
        return _aware(value)


