"""What starts a journey, and the event patterns that steer a running one.

Short forms (what marketers write) and the tagged long form (what the API and DB store):

    {event: "Product Added", where: {price: {gte: 50}}}      -> EventTrigger
    {segment_entered: champions}  {segment_exited: vip}      -> SegmentTrigger
    {schedule: "0 9 * * 1", segment: lapsed_30d, timezone: customer}   -> ScheduleTrigger
    {date_trait: birthday, yearly: true, at: "10:00"}        -> DateTrigger (birthday)
    {date_trait: card_activated_at, after: 14d}              -> DateTrigger (N days after)
    {api: true}  (or the text `api`)                         -> ApiTrigger

An `EventPattern` (`exit_on`, `goal`, `wait_for`) is an event name, `where` filters written
as in segments, and `correlate`: properties whose values must equal the trigger event's
(`correlate: cart_id` ties a purchase to the cart that started the run).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import time, timedelta
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import CoreSchema

from orbita.core.zones import check_time_zone
from orbita.model.durations import Duration
from orbita.model.schema import JsonSchema, as_forms, closed_object, with_forms
from orbita.model.segments import WHERE_SCHEMA, MessageType, PropertyTest, _where_list

# --- event patterns ------------------------------------------------------------------------


def _names(value: object) -> object:
    """`cart_id` -> (cart_id,): one property or a list of them."""
    return (value,) if isinstance(value, str) else value


def _where(value: object) -> object:
    return _where_list(value)


_WhereInput = Annotated[dict[str, Any], WithJsonSchema(WHERE_SCHEMA)] | tuple[PropertyTest, ...]
Where = Annotated[
    tuple[PropertyTest, ...], BeforeValidator(_where, json_schema_input_type=_WhereInput)
]
_Name = Annotated[str, Field(min_length=1)]
Names = Annotated[
    tuple[_Name, ...], BeforeValidator(_names, json_schema_input_type=_Name | tuple[_Name, ...])
]


class ByEventName(BaseModel):
    """A model that may be written as an event's name alone: `Order Completed` for
    `{event: Order Completed}` (a funnel step, a broadcast's goal)."""

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        short = {"type": "string", "minLength": 1, "description": "The event's name"}
        return with_forms(core_schema, handler, lambda schema: as_forms(schema, short))

    @model_validator(mode="before")
    @classmethod
    def _event_name_alone(cls, data: Any) -> Any:
        return {"event": data} if isinstance(data, str) else data


class EventPattern(BaseModel):
    """An event by name and property filters, optionally tied to the trigger event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: str = Field(min_length=1)
    message_type: MessageType = "track"
    where: Where = ()
    correlate: Names = ()


# --- triggers ------------------------------------------------------------------------------


class EventTrigger(BaseModel):
    """A customer did something: enter on every matching event (entry rules permitting)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["event"] = "event"
    event: str = Field(min_length=1)
    message_type: MessageType = "track"
    where: Where = ()


# The events a segment refresh records when a customer enters or leaves a segment (with the
# segment's name in `properties.segment`): what segment triggers match.
SEGMENT_ENTERED_EVENT = "Segment Entered"
SEGMENT_EXITED_EVENT = "Segment Exited"


class SegmentTrigger(BaseModel):
    """A customer entered (or left) a segment; the refresh records it as an event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["segment"] = "segment"
    segment: str = Field(min_length=1)
    on: Literal["entered", "exited"] = "entered"

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        def describe(schema: JsonSchema) -> None:
            shorts = [
                closed_object(
                    {"type": schema["properties"]["type"], key: schema["properties"]["segment"]},
                    required=[key],
                )
                for key in ("segment_entered", "segment_exited")
            ]
            as_forms(schema, *shorts)

        return with_forms(core_schema, handler, describe)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "segment" not in data:
            result = {
                k: v for k, v in data.items() if k not in ("segment_entered", "segment_exited")
            }
            if "segment_entered" in data:
                return {**result, "segment": data["segment_entered"], "on": "entered"}
            if "segment_exited" in data:
                return {**result, "segment": data["segment_exited"], "on": "exited"}
        return data


_CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?$")
CRON_RANGES: tuple[tuple[int, int], ...] = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
CRON_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_CRON_SCHEMA: JsonSchema = {
    "type": "string",
    "pattern": r"^\s*[0-9*/,-]+(\s+[0-9*/,-]+){4}\s*$",
    "description": "cron: minute hour day-of-month month day-of-week",
    "examples": ["0 9 * * 1"],
}


def check_cron(expression: str) -> str:
    """Five fields (minute hour day-of-month month day-of-week) of `*`, numbers, ranges,
    lists and steps; names (MON, JAN) and `@daily` are not supported yet."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {expression!r} needs 5 fields: minute hour day month weekday, "
            'such as "0 9 * * 1" (Mondays at 09:00)'
        )
    for text, (low, high), name in zip(fields, CRON_RANGES, CRON_NAMES, strict=True):
        for part in text.split(","):
            if not _CRON_FIELD.match(part):
                raise ValueError(f"cron {expression!r}: bad {name} {part!r}")
            numbers = [int(n) for n in re.findall(r"\d+", part.split("/")[0])]
            if any(not low <= n <= high for n in numbers):
                raise ValueError(f"cron {expression!r}: {name} must be {low}..{high}")
            if len(numbers) == 2 and numbers[0] > numbers[1]:
                raise ValueError(f"cron {expression!r}: {name} range {part!r} runs backwards")
    return expression


class ScheduleTrigger(BaseModel):
    """At each cron time, every member of `segment` (everyone when absent) enters.

    `timezone`: `workspace` (the strategy's zone), `customer` (each customer's own zone,
    so "09:00" is nine in the morning wherever they live), or an IANA name.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: Literal["schedule"] = "schedule"
    cron: Annotated[str, BeforeValidator(check_cron), WithJsonSchema(_CRON_SCHEMA)] = Field(
        alias="schedule"
    )
    segment: str | None = None
    timezone: str = "workspace"

    @model_validator(mode="after")
    def _zone(self) -> ScheduleTrigger:
        if self.timezone not in ("workspace", "customer"):
            check_time_zone(self.timezone)
        return self


def _time_of_day(value: object) -> object:
    """`"09:30"` -> time(9, 30); YAML 1.1 reads an unquoted 09:30 as 570 (sexagesimal)."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f'write the time in quotes, such as "09:30" (got {value!r})')
    if isinstance(value, str):
        match = re.match(r"^\s*(\d{1,2}):(\d{2})(?::00)?\s*$", value)
        if match is None:
            raise ValueError(f'{value!r} is not a time of day: write it like "09:30"')
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour > 23 or minute > 59:
            raise ValueError(f"{value!r} is not a time of day: hours 0-23, minutes 0-59")
        return time(hour, minute)
    return value


TimeOfDay = Annotated[
    time,
    BeforeValidator(_time_of_day),
    PlainSerializer(lambda value: value.strftime("%H:%M"), return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*([01]?\d|2[0-3]):[0-5]\d(:00)?\s*$",
            "description": 'A time of day in quotes, such as "09:30"',
        }
    ),
]


class DateTrigger(BaseModel):
    """A date held in a trait: `after` it (14d after card activation) or, `yearly`, on each
    anniversary (birthdays), at `at` in the customer's time zone."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: Literal["date"] = "date"
    trait: str = Field(min_length=1, alias="date_trait")
    after: Duration = timedelta(0)
    yearly: bool = False
    at: TimeOfDay = time(9, 0)


class ApiTrigger(BaseModel):
    """`POST /v1/journeys/{name}/trigger` enters one customer with the call's properties."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["api"] = "api"

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        def describe(schema: JsonSchema) -> None:
            schema["properties"]["api"] = {"const": True}
            schema["minProperties"] = 1

        return with_forms(core_schema, handler, describe)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("api") is True:
            return {k: v for k, v in data.items() if k != "api"}
        return data


_TRIGGER_KEYS: tuple[tuple[str, str], ...] = (
    ("event", "event"),
    ("segment_entered", "segment"),
    ("segment_exited", "segment"),
    ("schedule", "schedule"),
    ("date_trait", "date"),
    ("api", "api"),
)
TRIGGER_HINT = "a trigger starts with one of " + ", ".join(key for key, _ in _TRIGGER_KEYS)


def _tag_trigger(data: Any) -> Any:
    if data == "api":
        return {"type": "api"}
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a trigger, got {data!r}: {TRIGGER_HINT}")
    if "type" in data:
        return data
    for key, tag in _TRIGGER_KEYS:
        if key in data:
            return {"type": tag, **data}
    raise ValueError(
        f"not a trigger (got {', '.join(map(str, data)) or 'nothing'}): {TRIGGER_HINT}"
    )


_Triggers: TypeAlias = EventTrigger | SegmentTrigger | ScheduleTrigger | DateTrigger | ApiTrigger
Trigger = Annotated[
    _Triggers,
    Discriminator("type"),
    BeforeValidator(_tag_trigger, json_schema_input_type=Literal["api"] | _Triggers),
]
