"""Cohorts: customers grouped by when (or how) they were acquired, followed over the periods
after it — retention and revenue as a triangle of tidy rows.

- A customer is acquired by their first `acquisition` event (default: the first purchase);
  the cohort is its period (`by: period`, default), a trait of the customer
  (`by: trait:acquisition_channel`) or a property of that first event
  (`by: property:source`). Customers acquired in [start, end) are followed.
- Period p of a customer is the p-th period (day, week or month, UTC) after the one they were
  acquired in; period 0 is the acquisition period itself.
- At period p a customer is retained when they did an `activity` event (default: a
  purchase) in it; revenue is the sum of that event's revenue property there.
- Only periods that have begun by `end` are observed: `customers` at p counts the cohort's
  customers acquired at least p periods before the last one (for cohorts by period that is
  the whole cohort, or nobody), and rates divide by it.

Rows: cohort, period (p), customers (observed at p), active, retention, revenue,
revenue_per_customer, cumulative_revenue_per_customer. Computed in the event store: one
ranked scan for the acquisitions, one grouped join for the activity.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import ibis

from orbita.analytics.kpis import PURCHASE_EVENT, REVENUE_PROPERTY
from orbita.analytics.periods import Expr, Grain, Source, as_date, source_of, timestamp, utc
from orbita.core.errors import UserError
from orbita.engine.segments.json_access import json_access
from orbita.engine.segments.tables import PROFILE_TEXT
from orbita.store.events.base import EventStore

CohortGrain = Literal["day", "week", "month"]
COHORT_GRAINS: tuple[CohortGrain, ...] = ("day", "week", "month")
NONE = "(none)"
# A Monday at midnight: day and week numbers count from it.
_EPOCH = datetime(2000, 1, 3, tzinfo=UTC)
_SECONDS = {"day": 86_400, "week": 604_800}


@dataclass(frozen=True, slots=True)
class CohortRow:
    cohort: str
    period: int
    customers: int
    active: int
    retention: float | None
    revenue: float
    revenue_per_customer: float | None
    cumulative_revenue_per_customer: float | None


def check_cohort_by(value: str) -> str:
    if value == "period" or (
        value.startswith(("trait:", "property:")) and value.split(":", 1)[1].strip()
    ):
        return value
    raise UserError(f"by: {value!r} is not a cohort (use period, trait:NAME or property:NAME)")


def compute_cohorts(
    *,
    events: EventStore,
    start: datetime,
    end: datetime,
    grain: Grain = "month",
    by: str = "period",
    acquisition: str = PURCHASE_EVENT,
    activity: str = PURCHASE_EVENT,
    revenue_property: str = REVENUE_PROPERTY,
) -> list[CohortRow]:
    start, end = utc(start, field="start"), utc(end, field="end")
    if end <= start:
        raise UserError("end: must come after start")
    if grain not in COHORT_GRAINS:
        raise UserError(f"period: cohorts need day, week or month, not {grain!r}")
    check_cohort_by(by)
    source = source_of(events)
    events_table = source.tables.events

    acquired = events_table.filter(
        events_table.type == "track",
        events_table.name == acquisition,
        events_table.timestamp < timestamp(end),
    )
    first = acquired.mutate(
        rank=ibis.row_number().over(
            group_by=acquired.customer_id,
            order_by=[acquired.timestamp, acquired.message_id],
        )
    )
    first = first.filter(first["rank"] == 0)
    first = first.filter(first.timestamp >= timestamp(start))
    people = _people(source, first, by, grain)
    sizes = people.group_by("label", "acquired_in").aggregate(customers=people.count())

    done = events_table.filter(
        events_table.type == "track",
        events_table.name == activity,
        events_table.timestamp >= timestamp(start),
        events_table.timestamp < timestamp(end),
    )
    access = json_access(source.dialect)
    acts = done.select(
        "customer_id",
        active_in=_number_of(done.timestamp, grain),
        revenue=access.number(done.properties, revenue_property).fill_null(0.0),
    )
    joined = acts.join(people, "customer_id")
    joined = joined.mutate(period=joined.active_in - joined.acquired_in)
    joined = joined.filter(joined.period >= 0)
    activity_rows = joined.group_by("label", "period").aggregate(
        active=joined.customer_id.nunique(), revenue=joined.revenue.sum()
    )

    last_number = _number_here(end - _TICK, grain)
    by_start: dict[str, dict[int, int]] = defaultdict(dict)
    for row in source.rows(sizes):
        by_start[_text(row["label"])][int(row["acquired_in"])] = int(row["customers"])
    found: dict[tuple[str, int], tuple[int, float]] = {}
    for row in source.rows(activity_rows):
        found[(_text(row["label"]), int(row["period"]))] = (
            int(row["active"]),
            float(row["revenue"] or 0.0),
        )
    rows: list[CohortRow] = []
    for cohort in sorted(by_start):
        starts = by_start[cohort]
        cumulative = 0.0
        for period in range(last_number - min(starts) + 1):
            observed = sum(n for began, n in starts.items() if began + period <= last_number)
            active, revenue = found.get((cohort, period), (0, 0.0))
            per_customer = revenue / observed if observed else None
            cumulative += per_customer or 0.0
            rows.append(
                CohortRow(
                    cohort=cohort,
                    period=period,
                    customers=observed,
                    active=active,
                    retention=active / observed if observed else None,
                    revenue=revenue,
                    revenue_per_customer=per_customer,
                    cumulative_revenue_per_customer=cumulative if observed else None,
                )
            )
    return rows


_TICK = datetime.resolution


def _number_of(column: Expr, grain: str) -> Expr:
    """The absolute number of the period holding a timestamp (months since year 0, days or
    weeks since _EPOCH): period p of a customer is a difference of two of these."""
    if grain == "month":
        return (column.year() * 12 + column.month() - 1).cast("int64")
    unit = "W" if grain == "week" else "D"
    seconds = column.truncate(unit).epoch_seconds() - int(_EPOCH.timestamp())
    return (seconds / _SECONDS[grain]).round().cast("int64")


def _people(source: Source, first: Expr, by: str, grain: str) -> Expr:
    """customer_id, acquired_in (period number) and label (the cohort) per customer."""
    acquired_in = _number_of(first.timestamp, grain)
    if by == "period":
        unit = {"month": "M", "week": "W", "day": "D"}[grain]
        return first.select(
            "customer_id", acquired_in=acquired_in, label=first.timestamp.truncate(unit)
        )
    kind, name = by.split(":", 1)
    access = json_access(source.dialect)
    if kind == "property":
        doc = first.properties
        label = access.text(doc, name).coalesce(access.number(doc, name).cast("string"))
        return first.select("customer_id", acquired_in=acquired_in, label=label)
    customers = source.tables.customers
    if name in PROFILE_TEXT:
        value = customers[name]
    else:
        value = access.text(customers.traits, name).coalesce(
            access.number(customers.traits, name).cast("string")
        )
    traits = customers.select(trait_customer=customers.customer_id, label=value)
    mine = first.select("customer_id", acquired_in=acquired_in)
    joined = mine.left_join(traits, mine.customer_id == traits.trait_customer)
    return joined.select("customer_id", "acquired_in", "label")


def _number_here(moment: datetime, grain: str) -> int:
    """`_number_of` in Python, for the end of the range."""
    if grain == "month":
        return moment.year * 12 + moment.month - 1
    days = (moment.astimezone(UTC).date() - _EPOCH.date()).days
    return days // 7 if grain == "week" else days


def _text(value: object) -> str:
    if value is None:
        return NONE
    if isinstance(value, datetime):
        return as_date(value).isoformat()
    text = str(value)
    # A period label printed by the engine as a timestamp: keep its date.
    return text[:10] if len(text) >= 10 and text[4:5] == "-" and text[7:8] == "-" else text
