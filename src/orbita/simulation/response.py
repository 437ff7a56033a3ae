"""How customers respond to messages, with true effects that the generator knows.

A message is opened with the campaign's open rate (times the customer's engagement and the
channel's factor), clicked with its click rate given an open, and it raises the chance of
the campaign's goal event within its window by exactly `uplift` (absolute) over what the
customer would have done anyway. Treated and untreated draws share random numbers, so a
customer who converts without a message also converts with one; the extra conversions come
only from customers who opened, mostly from those who clicked. A holdout comparison of
`treated=True` and `treated=False` responses therefore estimates `uplift`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from orbita.simulation.records import LatentStates


@dataclass(frozen=True, slots=True)
class Campaign:
    kind: str
    goal_event: str
    window_days: float
    open_rate: float
    click_rate: float  # given an open
    uplift: float  # absolute rise of P(goal event within the window)
    unsubscribe_rate: float = 0.002
    # Of the extra conversions, the share that clicked first (the rest only opened).
    clicked_share_of_uplift: float = 0.7


def _c(kind: str, goal: str, window: float, opens: float, clicks: float, uplift: float) -> Campaign:
    return Campaign(kind, goal, window, opens, clicks, uplift)


_ORDER = "Order Completed"
_APPLY = "Application Submitted"
_SPEND = "Transaction Completed"
CAMPAIGNS: Mapping[str, Mapping[str, Campaign]] = {
    "clothing-store": {
        c.kind: c
        for c in (
            _c("welcome", _ORDER, 7, 0.50, 0.22, 0.05),
            _c("abandoned_cart", _ORDER, 3, 0.45, 0.30, 0.07),
            _c("browse_abandonment", _ORDER, 5, 0.35, 0.15, 0.025),
            _c("cross_sell", _ORDER, 14, 0.30, 0.12, 0.02),
            _c("repeat_purchase", _ORDER, 14, 0.30, 0.10, 0.025),
            _c("win_back", _ORDER, 14, 0.20, 0.08, 0.015),
            _c("vip", _ORDER, 14, 0.50, 0.25, 0.04),
        )
    },
    "bank": {
        c.kind: c
        for c in (
            _c("welcome", _APPLY, 7, 0.60, 0.25, 0.05),
            _c("activation_nudge", "Card Activated", 7, 0.50, 0.30, 0.08),
            _c("cross_sell_offer", _APPLY, 14, 0.35, 0.12, 0.02),
            _c("usage_boost", _SPEND, 7, 0.40, 0.10, 0.05),
            _c("win_back", _SPEND, 14, 0.25, 0.08, 0.03),
            _c("refusal_follow_up", _APPLY, 30, 0.45, 0.15, 0.03),
        )
    },
}
# Opens ("read" for SMS and chats) relative to email.
CHANNEL_OPEN_FACTOR: Mapping[str, float] = {"email": 1.0, "sms": 1.7, "telegram": 1.5, "push": 0.6}


def campaign_truth(store: str) -> dict[str, Any]:
    """The campaigns' true parameters as truth.json lists them."""
    return {
        "uplift_scale": "absolute change in P(goal event within window_days)",
        "channel_open_factor": dict(CHANNEL_OPEN_FACTOR),
        "kinds": {kind: asdict(c) for kind, c in CAMPAIGNS[store].items()},
    }


@dataclass(frozen=True, slots=True)
class CustomerState:
    """What the response model needs to know about one customer at one moment."""

    user_id: str
    active: bool  # False once they have dropped out (lapsed for good, unless won back)
    goal_rates: Mapping[str, float] = field(default_factory=dict)  # per day while active
    engagement: float = 1.0  # 1 is typical; scales open and click rates
    order_value: float = 0.0  # mean value of the goal event (order, transaction)


@dataclass(frozen=True, slots=True)
class Response:
    treated: bool
    opened: bool
    clicked: bool
    unsubscribed: bool
    converted: bool
    incremental: bool  # converted only because of the message
    opened_at: datetime | None
    clicked_at: datetime | None
    converted_at: datetime | None
    value: float  # of the conversion (order revenue, transaction amount); 0 without one
    baseline_probability: float  # P(convert within the window) without the message
    treated_probability: float  # ... with it


def sample_response(
    *,
    store: str,
    state: CustomerState,
    campaign: str,
    seed: int,
    now: datetime,
    channel: str = "email",
    treated: bool = True,
) -> Response:
    """Sample one customer's response to one message sent at `now` (pure, reproducible).

    `treated=False` gives what the same customer does without the message (a holdout).
    """
    if now.tzinfo is None:
        raise ValueError("now must be time zone-aware")
    spec = CAMPAIGNS[store][campaign]
    kinds = list(CAMPAIGNS[store])
    user = hashlib.blake2b(state.user_id.encode(), digest_size=8).digest()
    moment = int(now.timestamp()) & 0xFFFF_FFFF_FFFF
    rng = np.random.Generator(
        np.random.PCG64(
            np.random.SeedSequence(
                [
                    seed,
                    int.from_bytes(user[:4]),
                    int.from_bytes(user[4:]),
                    kinds.index(campaign),
                    moment,
                ]
            )
        )
    )
    u_open, u_click, u_unsub, u_base, u_extra, u_when = rng.random(6)
    open_delay, click_delay, convert_delay = rng.lognormal([math.log(2.0), math.log(0.1), 0.9], 0.8)
    value_draw = rng.gamma(4.0, 0.25)

    rate = state.goal_rates.get(spec.goal_event, 0.0) if state.active else 0.0
    base = 1.0 - math.exp(-rate * spec.window_days)
    p_open = min(0.98, spec.open_rate * CHANNEL_OPEN_FACTOR.get(channel, 1.0) * state.engagement)
    p_click = min(0.95, spec.click_rate * state.engagement)
    # Extra conversions among those who would not convert anyway, only through an open.
    need = spec.uplift / (1.0 - base) if base < 1.0 else 0.0
    via_click = min(1.0, spec.clicked_share_of_uplift * need / (p_open * p_click))
    via_open = min(1.0, max(0.0, need / p_open - via_click * p_click) / (1.0 - p_click))
    treated_p = base + (1.0 - base) * p_open * (via_click * p_click + via_open * (1 - p_click))

    opened = treated and u_open < p_open
    clicked = opened and u_click < p_click
    unsubscribed = opened and not clicked and u_unsub < spec.unsubscribe_rate / p_open
    converts_anyway = u_base < base
    extra = not converts_anyway and opened and u_extra < (via_click if clicked else via_open)
    converted = converts_anyway or extra

    window_end = now + timedelta(days=spec.window_days)
    opened_at = now + timedelta(hours=float(open_delay)) if opened else None
    clicked_at = opened_at + timedelta(hours=float(click_delay)) if clicked and opened_at else None
    converted_at: datetime | None = None
    if extra:
        after = clicked_at or opened_at or now
        converted_at = min(after + timedelta(hours=float(convert_delay)), window_end)
    elif converts_anyway and rate > 0:
        # The first event of a Poisson process, given that it falls inside the window.
        days = -math.log(1.0 - u_when * base) / rate
        converted_at = now + timedelta(days=min(days, spec.window_days))
    value = state.order_value * float(value_draw) if converted else 0.0
    return Response(
        treated=treated,
        opened=opened,
        clicked=clicked,
        unsubscribed=unsubscribed,
        converted=converted,
        incremental=extra,
        opened_at=_utc(opened_at),
        clicked_at=_utc(clicked_at),
        converted_at=_utc(converted_at),
        value=round(value, 2),
        baseline_probability=base,
        treated_probability=treated_p,
    )


def state_of(latent: LatentStates, row: int, *, now: datetime) -> CustomerState:
    """One customer's state at `now` from a chunk's latent states."""
    until = int(latent.active_until[row])
    return CustomerState(
        user_id=str(latent.user_id.python(row)),
        active=now.timestamp() * 1000 < until,
        goal_rates={event: float(rates[row]) for event, rates in latent.goal_rates.items()},
        engagement=float(latent.engagement[row]),
        order_value=float(latent.order_value[row]),
    )


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)
