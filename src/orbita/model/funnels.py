"""Funnels: ordered steps (events with `where` filters, written as in segments) that a
customer completes within a conversion window.

funnels:
  marketing:
    within: 365d
    order: loose            # or strict (see orbita.analytics.funnels for both)
    by: stage               # optional breakdown: stage, segment:a,b or trait:country
    steps:
      - {name: reach, event: "Email Delivered"}
      - {name: engage, event: "Email Clicked"}
      - {name: first_purchase, event: "Order Completed"}
      - {name: repeat, event: "Order Completed"}
      - {name: loyal, event: "Order Completed"}
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from orbita.model.durations import Duration
from orbita.model.segments import MessageType
from orbita.model.triggers import ByEventName, Where

FunnelOrder = Literal["loose", "strict"]
# `stage`, `segment:NAME[,NAME…]` (first listed segment a customer is in) or `trait:NAME`.
_BREAKDOWN = re.compile(r"^(stage|segment:[^,\s]+(,[^,\s]+)*|trait:\S+)$")
BREAKDOWN_HINT = "write stage, segment:NAME[,NAME…] or trait:NAME"


def check_breakdown(value: str) -> str:
    if not _BREAKDOWN.match(value):
        raise ValueError(f"{value!r} is not a breakdown: {BREAKDOWN_HINT}")
    return value


class FunnelStep(ByEventName):
    """One step: an event, optionally with property filters. Short form: the event name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="", description="Label of the step (default: the event name).")
    event: str = Field(min_length=1)
    message_type: MessageType = "track"
    where: Where = ()

    @property
    def label(self) -> str:
        return self.name or self.event


class Funnel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    steps: tuple[FunnelStep, ...] = Field(min_length=2)
    within: Duration = timedelta(days=30)
    order: FunnelOrder = "loose"
    by: str | None = None

    @field_validator("by")
    @classmethod
    def _known_breakdown(cls, value: str | None) -> str | None:
        return None if value is None else check_breakdown(value)

    @field_validator("within")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("the conversion window must be longer than zero")
        return value
