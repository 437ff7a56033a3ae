"""Purchase histories from a workspace's events: the (x, t_x, T, m) the models fit on, the
calibration / holdout check, and historical value per customer.

A purchase is a `track` event of one name (default `Order Completed`, as the generators and
Segment's e-commerce spec write it) with its value in one property (default `revenue`).
Time is counted in whole UTC days, as `lifetimes` does for daily data: several orders on
one day are one purchase occasion (their values added), x is the number of purchase days
after the first, t_x the day of the last one and T the day of the cut-off, both counted
from the first purchase day. The monetary value of a customer is the mean value of their
repeat purchase days (the first is left out, as Gamma-Gamma's fit expects).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import ibis
import numpy as np
import pyarrow as pa

from orbita.analytics.ltv.clv import PurchaseModel, fit_purchases
from orbita.analytics.ltv.fitting import Floats, Ints
from orbita.core.errors import UserError
from orbita.engine.segments.json_access import json_access
from orbita.engine.segments.tables import DIALECTS, Dialect, segment_tables
from orbita.store.events.base import EventStore

Expr = Any  # Ibis expressions are untyped for mypy
DAY_US = 86_400_000_000
FREQUENCY_BUCKETS = 8  # calibration buckets 0..6 and "7+"


@dataclass(frozen=True, slots=True)
class PurchaseEvent:
    """Which events are purchases and which property holds their value."""

    event: str = "Order Completed"
    value_property: str = "revenue"


@dataclass(frozen=True, slots=True)
class PurchaseDays:
    """Per customer and purchase day (UTC day number since the epoch): orders and value."""

    customer_id: Ints
    day: Ints
    orders: Ints
    value: Floats


@dataclass(frozen=True, slots=True)
class Histories:
    """One row per customer with a purchase before the cut-off, ordered by customer_id."""

    customer_id: Ints
    first_day: Ints  # UTC day number of the first purchase
    x: Floats  # purchase days after the first
    t_x: Floats  # days from the first purchase day to the last
    T: Floats  # days from the first purchase day to the cut-off
    monetary: Floats  # mean value of the repeat purchase days (0 without any)
    orders: Ints  # every order, the first included
    revenue: Floats  # historical value: every order's value, the first included
    cutoff: datetime

    @property
    def customers(self) -> int:
        return int(self.customer_id.size)


def _dialect(store: EventStore) -> Dialect:
    if store.backend not in DIALECTS:
        raise UserError(f"LTV cannot run on the {store.backend} event store yet")
    dialect: Dialect = store.backend  # checked just above
    return dialect


def purchase_days(
    store: EventStore,
    *,
    purchase: PurchaseEvent,
    end: datetime,
    start: datetime | None = None,
) -> PurchaseDays:
    """Purchases in [start, end), summed per customer and UTC day, in one query."""
    if end.tzinfo is None or (start is not None and start.tzinfo is None):
        raise UserError("cutoff: needs a time zone")
    dialect = _dialect(store)
    events = segment_tables(dialect).events
    conditions = [
        events.type == "track",
        events.name == purchase.event,
        events.timestamp < ibis.literal(end.astimezone(UTC), type="timestamp('UTC')"),
    ]
    if start is not None:
        conditions.append(
            events.timestamp >= ibis.literal(start.astimezone(UTC), type="timestamp('UTC')")
        )
    orders = events.filter(*conditions)
    value = json_access(dialect).number(orders.properties, purchase.value_property)
    orders = orders.select("customer_id", day=orders.timestamp.truncate("D"), value=value)
    per_day = orders.group_by(["customer_id", "day"]).aggregate(
        orders=orders.count(), value=orders.value.sum().fill_null(0.0)
    )
    table: pa.Table = store.ibis().to_pyarrow(per_day.order_by(["customer_id", "day"]))
    days = table.column("day").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return PurchaseDays(
        customer_id=table.column("customer_id").to_numpy().astype(np.int64),
        day=days.to_numpy() // DAY_US,
        orders=table.column("orders").to_numpy().astype(np.int64),
        value=table.column("value").to_numpy(zero_copy_only=False).astype(np.float64),
    )


def day_number(moment: datetime) -> int:
    return int((moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(days=1))


def histories(days: PurchaseDays, *, cutoff: datetime) -> Histories:
    """The per-customer summary of purchase days before `cutoff` (rows ordered by customer
    and day, as `purchase_days` returns them)."""
    cutoff_day = day_number(cutoff)
    keep = days.day < cutoff_day + (1 if cutoff > _midnight(cutoff) else 0)
    customer, day, orders, value = (
        days.customer_id[keep],
        days.day[keep],
        days.orders[keep],
        days.value[keep],
    )
    if customer.size == 0:
        empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0)
        return Histories(
            empty_i, empty_i, empty_f, empty_f, empty_f, empty_f, empty_i, empty_f, cutoff
        )
    starts = np.flatnonzero(np.r_[True, customer[1:] != customer[:-1]])
    ends = np.r_[starts[1:], customer.size]
    first_day = day[starts]
    n_days = ends - starts
    x = (n_days - 1).astype(np.float64)
    t_x = (day[ends - 1] - first_day).astype(np.float64)
    T = (cutoff_day - first_day).astype(np.float64)
    revenue = np.add.reduceat(value, starts)
    monetary = np.where(x > 0, (revenue - value[starts]) / np.maximum(x, 1), 0.0)
    return Histories(
        customer_id=customer[starts],
        first_day=first_day,
        x=x,
        t_x=t_x,
        T=np.maximum(T, t_x),
        monetary=monetary,
        orders=np.add.reduceat(orders, starts),
        revenue=revenue,
        cutoff=cutoff,
    )


def _midnight(moment: datetime) -> datetime:
    utc = moment.astimezone(UTC)
    return utc.replace(hour=0, minute=0, second=0, microsecond=0)


def latest_purchase(store: EventStore, *, purchase: PurchaseEvent) -> datetime | None:
    events = segment_tables(_dialect(store)).events
    found = store.ibis().to_pyarrow(
        events.filter(events.type == "track", events.name == purchase.event).timestamp.max()
    )
    value = found.as_py()
    return value if isinstance(value, datetime) else None


@dataclass(frozen=True, slots=True)
class CalibrationBucket:
    repeat_purchases: str  # "0" .. "6", "7+": purchase days after the first, before the cut-off
    customers: int
    actual: float  # mean repeat purchase days in the holdout
    predicted: float  # mean of E[Y(holdout) | x, t_x, T]


@dataclass(frozen=True, slots=True)
class Calibration:
    cutoff: datetime
    end: datetime
    holdout_days: int
    model: PurchaseModel
    customers: int
    buckets: tuple[CalibrationBucket, ...]
    actual_total: float
    predicted_total: float


def calibration(
    store: EventStore,
    *,
    cutoff: datetime,
    end: datetime | None = None,
    purchase: PurchaseEvent | None = None,
    model: str = "bg_nbd",
) -> Calibration:
    """Fit the purchase model (BG/NBD by default) on the purchases before `cutoff`, then
    compare, per number of repeat purchases in that calibration period, the purchase days
    predicted for the holdout [cutoff, end) with those that happened (Fader, Hardie & Lee
    2005, fig. 4)."""
    purchase = purchase or PurchaseEvent()
    if cutoff.tzinfo is None:
        raise UserError("cutoff: needs a time zone")
    end = end or latest_purchase(store, purchase=purchase)
    if end is None:
        raise UserError(f"cutoff: no {purchase.event!r} events in this workspace")
    cutoff_day, end_day = day_number(cutoff), day_number(end) + 1
    if cutoff > _midnight(cutoff):
        raise UserError("cutoff: give a date (the calibration period ends at midnight UTC)")
    if end_day <= cutoff_day:
        raise UserError(f"cutoff: must be before the last purchase ({end.date().isoformat()})")
    days = purchase_days(store, purchase=purchase, end=_midnight(end) + timedelta(days=1))
    fitted = histories(days, cutoff=cutoff)
    if fitted.customers == 0:
        raise UserError(f"cutoff: no {purchase.event!r} events before {cutoff.date()}")
    purchases = fit_purchases(model, fitted.x, fitted.t_x, fitted.T).model
    holdout = end_day - cutoff_day
    in_holdout = (days.day >= cutoff_day) & np.isin(days.customer_id, fitted.customer_id)
    actual = np.zeros(fitted.customers)
    rows = np.searchsorted(fitted.customer_id, days.customer_id[in_holdout])
    np.add.at(actual, rows, 1.0)
    predicted = purchases.conditional_expected_purchases(holdout, fitted.x, fitted.t_x, fitted.T)
    bucket = np.minimum(fitted.x, FREQUENCY_BUCKETS - 1).astype(np.int64)
    buckets = []
    for k in range(FREQUENCY_BUCKETS):
        members = bucket == k
        n = int(members.sum())
        label = f"{k}+" if k == FREQUENCY_BUCKETS - 1 else str(k)
        buckets.append(
            CalibrationBucket(
                repeat_purchases=label,
                customers=n,
                actual=float(actual[members].mean()) if n else 0.0,
                predicted=float(predicted[members].mean()) if n else 0.0,
            )
        )
    return Calibration(
        cutoff=cutoff,
        end=end,
        holdout_days=int(holdout),
        model=purchases,
        customers=fitted.customers,
        buckets=tuple(buckets),
        actual_total=float(actual.sum()),
        predicted_total=float(predicted.sum()),
    )
