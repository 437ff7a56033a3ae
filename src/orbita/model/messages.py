"""Segment-compatible tracking messages (identify, track, page, screen, group, alias, batch).

The same models validate the HTTP API and bulk imports, so both accept exactly the same input.
Field names follow Segment's camelCase wire format; unknown top-level fields are ignored as
Segment ignores them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from orbita.core.errors import FieldProblem, InvalidInputError, TooLargeError
from orbita.core.ids import new_message_id
from orbita.model.events import EventRecord

JsonObject = dict[str, Any]


def _aware(value: datetime | None) -> datetime | None:
    # Segment asks for ISO 8601 with a zone; a timestamp without one is read as UTC.
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


Id = Annotated[str, Field(min_length=1, max_length=255)]


# Validation runs in pydantic-core without a Python call per field (ingestion speed): numeric
# ids become strings natively (SDKs send them now and then; Segment stores strings), and time
# zones are settled where times are used (`event_time`).
_WIRE = ConfigDict(extra="ignore", populate_by_name=True, frozen=True, coerce_numbers_to_str=True)


class _Message(BaseModel):
    model_config = _WIRE

    message_id: Id | None = Field(default=None, alias="messageId")
    user_id: Id | None = Field(default=None, alias="userId")
    anonymous_id: Id | None = Field(default=None, alias="anonymousId")
    timestamp: datetime | None = None
    original_timestamp: datetime | None = Field(default=None, alias="originalTimestamp")
    sent_at: datetime | None = Field(default=None, alias="sentAt")
    context: JsonObject = Field(default_factory=dict)
    integrations: JsonObject = Field(default_factory=dict)

    @model_validator(mode="after")
    def _someone(self) -> _Message:
        if self.user_id is None and self.anonymous_id is None:
            raise ValueError("userId: userId or anonymousId is required")
        return self

    def event_time(
        self, *, received_at: datetime, batch_sent_at: datetime | None = None
    ) -> datetime:
        """When it happened, corrected for the sender's clock skew as Segment documents it.

        timestamp = receivedAt - (sentAt - originalTimestamp): the device clock's error cancels
        out. Without sentAt the timestamp is taken as given; without either, it is receivedAt.
        """
        happened = _aware(self.timestamp or self.original_timestamp)
        sent_at = _aware(self.sent_at or batch_sent_at)
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


class Alias(_Message):
    type: Literal["alias"]
    previous_id: Id = Field(alias="previousId")

    @model_validator(mode="after")
    def _needs_user(self) -> Alias:
        if self.user_id is None:
            raise ValueError("userId: alias needs userId (the new id) and previousId (the old one)")
        return self


Message = Annotated[
    Identify | Track | Page | Screen | Group | Alias,
    Field(discriminator="type"),
]
MESSAGE = TypeAdapter[Message](Message)


class Batch(BaseModel):
    """`POST /v1/batch`: messages plus fields that apply to all of them."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    batch: list[Any] = Field(max_length=100_000)
    context: JsonObject = Field(default_factory=dict)
    integrations: JsonObject = Field(default_factory=dict)
    sent_at: datetime | None = Field(default=None, alias="sentAt")
    write_key: str | None = Field(default=None, alias="writeKey")

    @field_validator("sent_at")
    @classmethod
    def _zone(cls, value: datetime | None) -> datetime | None:
        return _aware(value)


class _ValidBatch(BaseModel):
    """A batch whose every message is valid: the fast path validates it in one call."""

    model_config = _WIRE

    batch: list[Message] = Field(max_length=100_000)
    context: JsonObject = Field(default_factory=dict)
    sent_at: datetime | None = Field(default=None, alias="sentAt")


_VALID_BATCH = TypeAdapter(_ValidBatch)


_KIND_OF_ERROR = {
    "missing": "is required",
    "union_tag_not_found": "is required (one of identify, track, page, screen, group, alias)",
    "union_tag_invalid": "must be one of identify, track, page, screen, group, alias",
}


def problems_of(error: ValidationError, *, index: int | None = None) -> list[FieldProblem]:
    """Pydantic's errors as problems a user can act on: which item, which field, what is wrong."""
    problems = []
    for item in error.errors(include_url=False):
        location = [str(part) for part in item["loc"]]
        if location and location[0] in _TYPES:
            location = location[1:]  # the discriminator's branch name, not a field
        field = ".".join(location) or ("type" if "union_tag" in item["type"] else "")
        message = _KIND_OF_ERROR.get(item["type"], item["msg"])
        if item["type"] == "value_error":
            # model-level checks name their field as "field: message"
            message = str(item["msg"]).removeprefix("Value error, ")
            named, sep, rest = message.partition(": ")
            if sep and not field and " " not in named:
                field, message = named, rest
        problems.append(FieldProblem(field=field, message=message, index=index))
    return problems


_TYPES = frozenset({"identify", "track", "page", "screen", "group", "alias"})


def to_record(
    message: Identify | Track | Page | Screen | Group | Alias,
    *,
    received_at: datetime,
    batch_sent_at: datetime | None = None,
    batch_context: JsonObject | None = None,
) -> EventRecord:
    """Normalise a validated message into the record Orbita stores."""
    name: str | None = None
    properties: JsonObject = {}
    previous_id: str | None = None
    group_id: str | None = None
    match message:
        case Track():
            name, properties = message.event, message.properties
        case Page() | Screen():
            name, properties = message.name, message.properties
            if message.category is not None:
                properties = {"category": message.category, **properties}
        case Identify():
            properties = message.traits
        case Group():
            properties, group_id = message.traits, message.group_id
        case Alias():
            previous_id = message.previous_id
    context = {**batch_context, **message.context} if batch_context else message.context
    return EventRecord(
        message_id=message.message_id or new_message_id(),
        type=message.type,
        name=name,
        user_id=message.user_id,
        anonymous_id=message.anonymous_id,
        properties=properties,
        context=context,
        timestamp=message.event_time(received_at=received_at, batch_sent_at=batch_sent_at),
        received_at=received_at,
        previous_id=previous_id,
        group_id=group_id,
    )


def parse_message(
    raw: object,
    *,
    received_at: datetime,
    kind: str | None = None,
    index: int | None = None,
    batch_sent_at: datetime | None = None,
    batch_context: JsonObject | None = None,
    max_bytes: int | None = None,
) -> EventRecord:
    """Validate one message; `kind` comes from the endpoint (`/v1/track`) and sets `type`.

    Raises InvalidInputError (or TooLargeError) naming the item and field.
    """
    if not isinstance(raw, dict):
        raise InvalidInputError(
            [FieldProblem(field="", message="must be a JSON object", index=index)]
        )
    if max_bytes is not None and len(orjson.dumps(raw)) > max_bytes:
        raise TooLargeError(
            [
                FieldProblem(
                    field="", message=f"message is over {max_bytes // 1024} KB", index=index
                )
            ],
            summary="too large",
        )
    if kind is not None:
        if raw.get("type", kind) != kind:
            problem = FieldProblem(field="type", message=f"must be {kind!r} here", index=index)
            raise InvalidInputError([problem])
        raw = {**raw, "type": kind}
    try:
        message = MESSAGE.validate_python(raw)
    except ValidationError as error:
        raise InvalidInputError(problems_of(error, index=index)) from None
    return to_record(
        message,
        received_at=received_at,
        batch_sent_at=batch_sent_at,
        batch_context=batch_context,
    )


def parse_batch(
    raw: object, *, received_at: datetime, max_message_bytes: int | None = None
) -> list[EventRecord]:
    """Validate a `/v1/batch` body: every item or none (problems name every bad item)."""
    try:
        batch = Batch.model_validate(raw)
    except ValidationError as error:
        raise InvalidInputError(problems_of(error)) from None
    records: list[EventRecord] = []
    problems: list[FieldProblem] = []
    too_large = False
    for index, item in enumerate(batch.batch):
        try:
            records.append(
                parse_message(
                    item,
                    received_at=received_at,
                    index=index,
                    batch_sent_at=batch.sent_at,
                    batch_context=batch.context,
                    max_bytes=max_message_bytes,
                )
            )
        except InvalidInputError as error:
            too_large = too_large or isinstance(error, TooLargeError)
            problems.extend(error.problems)
    if problems:
        if too_large:
            raise TooLargeError(problems, summary="too large")
        raise InvalidInputError(problems, summary=f"{len(problems)} problem(s) in the batch")
    return records


def parse_batch_json(
    body: bytes, *, received_at: datetime, max_message_bytes: int | None = None
) -> list[EventRecord]:
    """`parse_batch` for a raw JSON body: the whole batch is validated in pydantic-core.

    Three times faster than validating message by message; when anything is wrong, the
    message-by-message path runs instead to name every bad item by index and field.
    """
    try:
        batch = _VALID_BATCH.validate_json(body)
    except ValidationError:
        return parse_batch(
            parse_json(body), received_at=received_at, max_message_bytes=max_message_bytes
        )
    if max_message_bytes is not None and len(body) > max_message_bytes:
        _check_message_sizes(body, limit=max_message_bytes)
    sent_at, context = batch.sent_at, batch.context
    return [
        to_record(message, received_at=received_at, batch_sent_at=sent_at, batch_context=context)
        for message in batch.batch
    ]


def parse_json(body: bytes) -> object:
    """A JSON body, or InvalidInputError saying why it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        problem = FieldProblem(field="", message=f"not valid JSON ({error})")
        raise InvalidInputError([problem], summary="invalid JSON") from None


def _check_message_sizes(body: bytes, *, limit: int) -> None:
    # Only a body over the limit can hold a message over it; then measure each message.
    items = orjson.loads(body).get("batch", [])
    problems = [
        FieldProblem(field="", message=f"message is over {limit // 1024} KB", index=index)
        for index, item in enumerate(items)
        if len(orjson.dumps(item)) > limit
    ]
    if problems:
        raise TooLargeError(problems, summary="too large")
