"""Broadcasts: one message to a whole audience at a set time (the seasonal sale, the monthly
product letter), the other half of a CRM calendar beside the journeys.

    broadcasts:
      winter_sale:
        audience: {segment: subscribers, exclude: [bought_last_week]}   # or a name, or
                                                      # an inline condition: {trait: …}
        template: winter_sale                         # or variants (and template as their base):
        variants:
          A: {weight: 50}                             # the template's base parts
          B: {variant: B, weight: 50}                 # its variant B (another subject line)
          C: other_template                           # a whole other template
        schedule: {at: "2026-12-01 09:00", local_time: true}   # 09:00 in each customer's zone
        # schedule: {cron: "0 9 * * 1"}               # every Monday: each occurrence its own
        throttle: 2000                                # messages per minute (or "100/s", "5000/h")
        holdout: 5%                                   # receive nothing, measured the same way
        goal: {event: "Order Completed", within: 3d}  # or just the event's name (3 days)
        ab_test: {sample: 20%, wait: 4h, metric: conversion, default: A}

Without `schedule` a broadcast goes when it is sent (`orbita broadcasts send`). With
`ab_test`, the sample gets the variants (split by weight), the rest waits `wait`, then gets
the winner, if the experiment statistics call one, else `default`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from orbita.core.zones import check_time_zone
from orbita.model.durations import Duration, Percentage, parse_percentage
from orbita.model.segments import Segment
from orbita.model.triggers import ByEventName, EventPattern, check_cron

DEFAULT_GOAL_WINDOW = timedelta(days=3)
HOLDOUT_ARM = "holdout"
METRICS = ("conversion", "open", "click", "revenue")
Metric = Literal["conversion", "open", "click", "revenue"]

# --- audience ------------------------------------------------------------------------------

_AUDIENCE_KEYS = frozenset({"segment", "condition", "exclude"})


class Audience(BaseModel):
    """Who gets it: the members of a segment (or of a condition written in place), less the
    members of the `exclude` segments, at send time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    segment: str | None = Field(default=None, min_length=1)
    condition: Segment | None = None
    exclude: tuple[Annotated[str, Field(min_length=1)], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"segment": data}
        if isinstance(data, Mapping) and not set(data) <= _AUDIENCE_KEYS:
            return {"condition": data}  # an inline condition: {trait: …}, {all: […]}
        if isinstance(data, Mapping) and isinstance(data.get("exclude"), str):
            return {**data, "exclude": [data["exclude"]]}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> Audience:
        if (self.segment is None) == (self.condition is None):
            raise ValueError("an audience is a segment or a condition: give one of them")
        return self


AUDIENCE_INPUT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "description": "a segment's name"},
        {"type": "object", "description": "{segment: name, exclude: [names]} or a condition"},
    ]
}

# --- variants ------------------------------------------------------------------------------


def _weight(value: object) -> object:
    """A relative weight: 50, 1.5, or a percentage such as 50%."""
    if isinstance(value, str):
        return parse_percentage(value) * 100
    return value


class Variant(BaseModel):
    """One arm: a template (the broadcast's own when not named) and one of its variants
    (None: its base parts), sent to a share of the sample given by `weight`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: str | None = Field(default=None, min_length=1)
    variant: str | None = Field(default=None, min_length=1)
    weight: Annotated[float, BeforeValidator(_weight), Field(gt=0)] = 1.0

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        return {"template": data} if isinstance(data, str) else data


VARIANT_INPUT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "description": "a template's name"},
        {"type": "object", "description": "{template, variant, weight}"},
    ]
}

# --- schedule ------------------------------------------------------------------------------


class AtSchedule(BaseModel):
    """Once, at `at`: a wall-clock time in `timezone` (the workspace's when absent), or with
    `local_time` in each customer's own zone, so the send rolls across the zones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["at"] = "at"
    at: datetime
    local_time: bool = False
    timezone: str | None = None

    @model_validator(mode="after")
    def _wall_clock(self) -> AtSchedule:
        if self.local_time and self.at.tzinfo is not None:
            raise ValueError(
                "local_time takes a wall-clock time without an offset, such as 2026-12-01 09:00"
            )
        if self.local_time and self.timezone is not None:
            raise ValueError("local_time sends in each customer's zone: give no timezone")
        if self.timezone is not None:
            check_time_zone(self.timezone)
        return self


class CronSchedule(BaseModel):
    """Recurring (a weekly newsletter): each time the cron expression names, in `timezone`
    (the workspace's when absent) or, with `local_time`, in each customer's zone."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["cron"] = "cron"
    cron: Annotated[str, BeforeValidator(check_cron)]
    local_time: bool = False
    timezone: str | None = None

    @model_validator(mode="after")
    def _zone(self) -> CronSchedule:
        if self.local_time and self.timezone is not None:
            raise ValueError("local_time sends in each customer's zone: give no timezone")
        if self.timezone is not None:
            check_time_zone(self.timezone)
        return self


SCHEDULE_HINT = 'a schedule is {at: "2026-12-01 09:00"} or {cron: "0 9 * * 1"}'


def _tag_schedule(data: Any) -> Any:
    if isinstance(data, str | datetime):
        return {"type": "at", "at": data}
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a schedule, got {data!r}: {SCHEDULE_HINT}")
    if "type" in data:
        return data
    if "at" in data and "cron" in data:
        raise ValueError("a schedule has at or cron, not both")
    if "at" in data:
        return {"type": "at", **data}
    if "cron" in data:
        return {"type": "cron", **data}
    raise ValueError(
        f"not a schedule (got {', '.join(map(str, data)) or 'nothing'}): {SCHEDULE_HINT}"
    )


Schedule = Annotated[
    Annotated[AtSchedule, Tag("at")] | Annotated[CronSchedule, Tag("cron")],
    Discriminator("type"),
    BeforeValidator(_tag_schedule),
]

SCHEDULE_INPUT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "description": "a time: 2026-12-01 09:00"},
        {"type": "object", "description": "{at, local_time, timezone} or {cron, local_time}"},
    ]
}

# --- throttle, goal, A/B test --------------------------------------------------------------

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER_MINUTE = {"s": 60.0, "sec": 60.0, "second": 60.0, "h": 1 / 60, "hour": 1 / 60}


def _per_minute(value: object) -> object:
    """`2000` (a minute), `"100/s"`, `"5000/h"` -> messages per minute."""
    if isinstance(value, str):
        match = _RATE.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a rate: write messages per minute, or 100/s")
        return float(match.group(1)) * _PER_MINUTE.get(match.group(2), 1.0)
    return value


Throttle = Annotated[
    float,
    BeforeValidator(_per_minute),
    Field(gt=0),
    PlainSerializer(lambda value: value, return_type=float),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": _RATE.pattern},
            ]
        }
    ),
]


class BroadcastGoal(ByEventName, EventPattern):
    """The event that counts as a conversion when it comes `within` the time after the
    message (or, for the holdout, after the moment it would have gone)."""

    within: Duration = DEFAULT_GOAL_WINDOW


class AbTest(BaseModel):
    """Send the variants to `sample` of the audience, wait, then the winner by `metric` to
    the rest — the `default` variant when the difference is not significant."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sample: Percentage
    wait: Duration
    metric: Metric = "conversion"
    default: str | None = Field(default=None, min_length=1)

    @field_validator("sample")
    @classmethod
    def _some(cls, value: float) -> float:
        if not 0 < value < 1:
            raise ValueError("the sample is a share of the audience between 0% and 100%")
        return value


class Broadcast(BaseModel):
    """One broadcast of the strategy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    audience: Annotated[Audience, WithJsonSchema(AUDIENCE_INPUT_SCHEMA)]
    channel: str | None = Field(default=None, min_length=1)
    template: str | None = Field(default=None, min_length=1)
    variants: dict[str, Annotated[Variant, WithJsonSchema(VARIANT_INPUT_SCHEMA)]] = Field(
        default_factory=dict
    )
    schedule: Annotated[Schedule | None, WithJsonSchema(SCHEDULE_INPUT_SCHEMA)] = None
    throttle: Throttle | None = None
    holdout: Percentage = 0.0
    goal: BroadcastGoal | None = None
    ab_test: AbTest | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Broadcast:
        if self.template is None and not self.variants:
            raise ValueError("a broadcast needs a template, or variants")
        for name, variant in self.variants.items():
            if variant.template is None and self.template is None:
                raise ValueError(f"variant {name!r} names no template, and the broadcast has none")
        if HOLDOUT_ARM in self.variants:
            raise ValueError(f"{HOLDOUT_ARM!r} is the control arm's name: call the variant else")
        if self.holdout >= 1:
            raise ValueError("a holdout of 100% sends nothing")
        if self.ab_test is not None:
            if len(self.variants) < 2:
                raise ValueError("ab_test needs at least two variants")
            default = self.ab_test.default
            if default is not None and default not in self.variants:
                known = ", ".join(self.variants)
                raise ValueError(f"ab_test default {default!r} is not a variant ({known})")
            if self.ab_test.metric in ("conversion", "revenue") and self.goal is None:
                raise ValueError(f"ab_test metric {self.ab_test.metric} needs a goal event")
        return self

    def arms(self) -> dict[str, Variant]:
        """The variants, each with its template filled in; one arm named after the template
        when the broadcast has no variants."""
        if not self.variants:
            assert self.template is not None
            return {self.template: Variant(template=self.template)}
        return {
            name: variant.model_copy(update={"template": variant.template or self.template})
            for name, variant in self.variants.items()
        }

    def default_arm(self) -> str:
        """The arm the rest gets when a test calls no winner: `default`, else the first."""
        if self.ab_test is not None and self.ab_test.default is not None:
            return self.ab_test.default
        return next(iter(self.arms()))

    def templates(self) -> list[str]:
        return list(dict.fromkeys(v.template for v in self.arms().values() if v.template))


__all__ = [
    "HOLDOUT_ARM",
    "METRICS",
    "AbTest",
    "AtSchedule",
    "Audience",
    "Broadcast",
    "BroadcastGoal",
    "CronSchedule",
    "Metric",
    "Schedule",
    "Variant",
]
