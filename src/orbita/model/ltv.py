"""How a strategy asks for LTV traits: which events are purchases, the horizon of the
predicted value, and the tiers customers are sorted into by it.

    ltv:
      model: bg_nbd                # or pareto_nbd
      purchase_event: Order Completed
      value_property: revenue
      horizon_months: 12
      monthly_discount: 0.01
      tiers: {high: 0.8, medium: 0.5, low: 0}   # each tier from this quantile of CLV up

The LTV step writes, per customer with a purchase, the traits `predicted_clv_<h>m`,
`expected_purchases_<h>m`, `p_alive`, `churn_probability` (1 - p_alive), `historical_ltv`
and `ltv_tier`, which segments, branches and templates read like any other trait:
`{trait: ltv_tier, eq: high}`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LtvConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Literal["bg_nbd", "pareto_nbd"] = Field(
        "bg_nbd", description="The purchase model: BG/NBD or Pareto/NBD"
    )
    purchase_event: str = Field("Order Completed", min_length=1)
    value_property: str = Field("revenue", min_length=1)
    horizon_months: int = Field(12, ge=1, le=120)
    monthly_discount: float = Field(0.01, ge=0, lt=1)
    tiers: dict[str, float] = Field(
        default_factory=lambda: {"high": 0.8, "medium": 0.5, "low": 0.0},
        description="Tier name -> the quantile of predicted CLV the tier starts at",
    )

    @field_validator("tiers")
    @classmethod
    def _tiers_cover_everyone(cls, tiers: dict[str, float]) -> dict[str, float]:
        if not tiers:
            raise ValueError("name at least one tier, e.g. {high: 0.8, low: 0}")
        for name, start in tiers.items():
            if not 0 <= start < 1:
                raise ValueError(f"{name}: a tier starts at a quantile in [0, 1), got {start}")
        if min(tiers.values()) != 0:
            raise ValueError("one tier must start at 0, so that every customer has a tier")
        if len(set(tiers.values())) != len(tiers):
            raise ValueError("two tiers start at the same quantile")
        return dict(sorted(tiers.items(), key=lambda item: -item[1]))

    def trait_names(self) -> dict[str, str]:
        h = self.horizon_months
        return {
            "clv": f"predicted_clv_{h}m",
            "purchases": f"expected_purchases_{h}m",
            "p_alive": "p_alive",
            "churn": "churn_probability",
            "historical": "historical_ltv",
            "tier": "ltv_tier",
        }
