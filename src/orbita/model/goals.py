"""Goals: the KPIs the strategy aims at, with a target and a date.

goals:
  - {kpi: repeat_purchase_rate, target: 0.35, by: 2027-06-30}
  - {kpi: revenue_per_recipient, target: 12, by: 2027-12-31, journey: win_back}
  - {kpi: segment_size, target: 2000, by: 2027-12-31, segment: vip, since: 2026-10-01}

`kpi` is one of KPI_NAMES (orbita.analytics.kpis defines each); progress is measured on the
straight line from the value at `since` (default: twelve weeks before today) to `target`.
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The named metrics a goal may aim at (computed by orbita.analytics.kpis).
KPI_NAMES = (
    "messages_sent",
    "messages_delivered",
    "delivery_rate",
    "open_rate",
    "click_rate",
    "click_to_open_rate",
    "unsubscribe_rate",
    "bounce_rate",
    "conversion_rate",
    "revenue_per_recipient",
    "orders",
    "revenue",
    "buyers",
    "average_order_value",
    "purchase_frequency",
    "repeat_purchase_rate",
    "active_customers",
    "churn_rate",
    "ltv_historical",
    "segment_size",
    "stage_size",
)


class Goal(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kpi: str = Field(min_length=1)
    target: float
    by: date
    description: str = ""
    # The journey the goal belongs to (None: the whole strategy).
    journey: str | None = None
    # The segment (segment_size) or stage (stage_size) whose size is aimed at.
    segment: str | None = None
    # Where the straight path to the target starts (None: twelve weeks before today).
    since: date | None = None

    @field_validator("kpi")
    @classmethod
    def _known_kpi(cls, value: str) -> str:
        if value not in KPI_NAMES:
            raise ValueError(f"unknown KPI {value!r}: use one of {', '.join(KPI_NAMES)}")
        return value

    @model_validator(mode="after")
    def _segment_when_needed(self) -> Goal:
        if self.kpi in ("segment_size", "stage_size") and self.segment is None:
            raise ValueError(f"{self.kpi} needs `segment:` (the segment or stage it measures)")
        if self.since is not None and self.since >= self.by:
            raise ValueError("since must come before by")
        return self
