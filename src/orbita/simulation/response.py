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
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from orbita.simulation.records import Bools, Floats, Int64s, LatentStates


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


@dataclass(frozen=True, slots=True)
class Responses:
    """Many customers' responses to one campaign sent at one moment (arrays, one per field).

    Times are ms since the epoch (UTC), -1 where the thing did not happen.
    """

    opened: Bools
    clicked: Bools
    unsubscribed: Bools
    converted: Bools
    incremental: Bools
    opened_at: Int64s
    clicked_at: Int64s
    converted_at: Int64s
    value: Floats
    baseline_probability: Floats
    treated_probability: Floats


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
    The same as `sample_responses` for this one customer.
    """
    rate = state.goal_rates.get(CAMPAIGNS[store][campaign].goal_event, 0.0)
    batch = sample_responses(
        store=store,
        campaign=campaign,
        seed=seed,
        now=now,
        user_ids=[state.user_id],
        active=np.array([state.active]),
        goal_rate=np.array([rate], dtype=np.float64),
        engagement=np.array([state.engagement], dtype=np.float64),
        order_value=np.array([state.order_value], dtype=np.float64),
        channel=channel,
        treated=treated,
    )
    return Response(
        treated=treated,
        opened=bool(batch.opened[0]),
        clicked=bool(batch.clicked[0]),
        unsubscribed=bool(batch.unsubscribed[0]),
        converted=bool(batch.converted[0]),
        incremental=bool(batch.incremental[0]),
        opened_at=_moment(int(batch.opened_at[0])),
        clicked_at=_moment(int(batch.clicked_at[0])),
        converted_at=_moment(int(batch.converted_at[0])),
        value=float(batch.value[0]),
        baseline_probability=float(batch.baseline_probability[0]),
        treated_probability=float(batch.treated_probability[0]),
    )


def sample_responses(
    *,
    store: str,
    campaign: str,
    seed: int,
    now: datetime,
    user_ids: Sequence[str],
    active: Bools,
    goal_rate: Floats,
    engagement: Floats,
    order_value: Floats,
    channel: str = "email",
    treated: bool | Bools = True,
) -> Responses:
    """Vectorised `sample_response`: one campaign at one moment to many customers.

    Each customer's random numbers come from a hash of (seed, store, campaign, now, userId)
    — a counter-based generator — so a customer's response does not depend on who else is
    in the batch, and one call per customer gives the same answers.
    """
    if now.tzinfo is None:
        raise ValueError("now must be time zone-aware")
    spec = CAMPAIGNS[store][campaign]
    now_ms = round(now.timestamp() * 1000)
    u = _uniforms(
        seed=seed,
        stream=(list(CAMPAIGNS).index(store) << 16) | list(CAMPAIGNS[store]).index(campaign),
        moment=now_ms // 1000,
        user_ids=user_ids,
        count=16,
    )
    u_open, u_click, u_unsub, u_base, u_extra, u_when = (u[:, i] for i in range(6))
    # Log-normal delays (hours) from Box-Muller normals; Gamma(4, 1/4) as four exponentials.
    normal = np.sqrt(-2 * np.log(u[:, 6:9])) * np.cos(2 * np.pi * u[:, 9:12])
    delays = np.exp(np.array([math.log(2.0), math.log(0.1), 0.9]) + 0.8 * normal)
    value_draw = -0.25 * np.log(u[:, 12:16]).sum(axis=1)

    rate = np.where(active, goal_rate, 0.0)
    base = 1.0 - np.exp(-rate * spec.window_days)
    factor = CHANNEL_OPEN_FACTOR.get(channel, 1.0)
    p_open = np.minimum(0.98, spec.open_rate * factor * engagement)
    p_click = np.minimum(0.95, spec.click_rate * engagement)
    # Extra conversions among those who would not convert anyway, only through an open.
    need = np.where(base < 1.0, spec.uplift / np.maximum(1.0 - base, 1e-12), 0.0)
    via_click = np.minimum(1.0, spec.clicked_share_of_uplift * need / (p_open * p_click))
    via_open = np.minimum(1.0, np.maximum(0.0, need / p_open - via_click * p_click) / (1 - p_click))
    reach = p_open * (via_click * p_click + via_open * (1 - p_click))
    treated_p = base + (1.0 - base) * reach

    opened = np.asarray(treated, dtype=np.bool_) & (u_open < p_open)
    clicked = opened & (u_click < p_click)
    unsubscribed = opened & ~clicked & (u_unsub < spec.unsubscribe_rate / p_open)
    anyway = u_base < base
    extra = ~anyway & opened & (u_extra < np.where(clicked, via_click, via_open))
    converted = anyway | extra

    hour = 3_600_000
    opened_at = np.where(opened, now_ms + (delays[:, 0] * hour).astype(np.int64), -1)
    clicked_at = np.where(clicked, opened_at + (delays[:, 1] * hour).astype(np.int64), -1)
    window_end = now_ms + int(spec.window_days * 86_400_000)
    after = np.where(clicked, clicked_at, opened_at)
    extra_at = np.minimum(after + (delays[:, 2] * hour).astype(np.int64), window_end)
    # Without the message: the first event of a Poisson process, given it falls in the window.
    safe = np.where(rate > 0, rate, 1.0)
    days = np.minimum(-np.log(1.0 - u_when * base) / safe, spec.window_days)
    anyway_at = now_ms + (days * 86_400_000).astype(np.int64)
    converted_at = np.where(extra, extra_at, np.where(anyway & (rate > 0), anyway_at, -1))
    converted_at = np.where(converted & (converted_at < 0), now_ms, converted_at)
    value = np.where(converted, np.round(order_value * value_draw, 2), 0.0)
    return Responses(
        opened=opened,
        clicked=clicked,
        unsubscribed=unsubscribed,
        converted=converted,
        incremental=extra,
        opened_at=opened_at.astype(np.int64),
        clicked_at=clicked_at.astype(np.int64),
        converted_at=converted_at.astype(np.int64),
        value=value,
        baseline_probability=base,
        treated_probability=treated_p,
    )


_MASK = (1 << 64) - 1


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser: a bijective scramble of 64-bit integers."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uniforms(
    *, seed: int, stream: int, moment: int, user_ids: Sequence[str], count: int
) -> Floats:
    """`count` uniforms in (0, 1) per user, from a hash of everything that names the draw."""
    users = np.array(
        [
            int.from_bytes(hashlib.blake2b(u.encode(), digest_size=8).digest(), "little")
            for u in user_ids
        ],
        dtype=np.uint64,
    )
    with np.errstate(over="ignore"):
        key = np.full(len(users), seed & _MASK, dtype=np.uint64)
        for part in (stream, moment & _MASK):
            key = _mix(key ^ np.uint64(part & _MASK))
        key = _mix(key ^ users)
        steps = np.arange(1, count + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        bits = _mix(key[:, None] + steps[None, :])
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


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


def _moment(ms: int) -> datetime | None:
    return None if ms < 0 else datetime.fromtimestamp(ms / 1000, tz=UTC)
