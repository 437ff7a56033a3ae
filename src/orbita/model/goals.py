"""Goals: the KPIs the strategy aims at, with a target and a date.

goals:
  - {kpi: repeat_purchase_rate, target: 0.35, by: 2027-06-30}
  - {kpi: revenue_per_customer, target: 120, by: 2027-12-31, journey: win_back}
"""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict, Field


class Goal(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kpi: str = Field(min_length=1)
    target: float
    by: date
    description: str = ""
    # The journey the goal belongs to (None: the whole strategy).
    journey: str | None = None
