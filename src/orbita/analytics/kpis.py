"""KPIs: the named metrics a CRM team steers by, per period and dimension, as tidy rows
(metric, grain, period, dimension, key, value) ready to plot.

Every figure is computed in a database: the event store's through portable Ibis
expressions (DuckDB and PostgreSQL), the state store's through SQLAlchemy Core. Periods are
UTC (see periods.py); `start` is inclusive, `end` exclusive.

Messages (the delivery events `Email Sent`, `Email Delivered`, `Email Opened`,
`Email Clicked`, `Unsubscribed`, `Email Bounced`, whose properties name the journey, step,
variant, channel and template), by all / journey / step / variant / channel / template:
    messages_sent, messages_delivered   events in the period
    delivery_rate       delivered / sent (events)
    bounce_rate         bounced / sent (events)
    open_rate           customers with a human open (`bot: true` excluded) / customers delivered
    click_rate          customers who clicked / customers delivered
    click_to_open_rate  customers who clicked / customers who opened
    unsubscribe_rate    customers who unsubscribed / customers delivered
  Each customer counts once per group and period (unique rates, as ESPs report them);
  step and variant keys are qualified by the journey (`win_back/steps[1]`, `win_back/b`).

Journeys (state store: runs, conversions, attributions), by journey / arm / variant, of the
runs that entered in the period:
    conversion_rate         runs that reached the goal / runs entered
                            (by `all`: buyers / active customers of the period, the store's)
    revenue_per_recipient   attributed revenue / runs entered
  `journey` is the treatment arm; `arm` keys are `journey/treatment` and `journey/holdout`.

Purchases (the purchase event, `Order Completed` by default, and its revenue property):
    orders, revenue, buyers                     in the period
    average_order_value     revenue / orders
    purchase_frequency      orders / buyers
    active_customers        customers with an event of their own in the period (Orbita's
                            message and segment events do not count)
    repeat_purchase_rate    customers with two or more purchases / customers with one or
                            more, over all history up to the period's end (cumulative)
    ltv_historical          revenue / customers who bought, all history to the period's end
    churn_rate              of the customers active at the period's start (a purchase in the
                            `churn_days` before it), those whose activity lapsed during the
                            period (`churn_days` passed since their last purchase), even if
                            they bought again before its end (churned and came back)
Segments (state store: the size recorded at each refresh), by segment / stage:
    segment_size, stage_size    the size at the last refresh before the period's end
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import ibis
from sqlalchemy import Engine, and_, func, select

from orbita.analytics.periods import (
    Expr,
    Grain,
    Source,
    as_date,
    next_period,
    period_expr,
    periods,
    ratio,
    source_of,
    state_period,
    timestamp,
    utc,
)
from orbita.core.errors import UserError
from orbita.engine.segments.json_access import json_access
from orbita.model.goals import KPI_NAMES
from orbita.model.segments import EventCondition, Segment, walk
from orbita.model.strategy import Strategy
from orbita.store.events.base import EventStore
from orbita.store.state import attributions, journey_conversions, journey_runs, outbox
from orbita.store.state import segment_refreshes as refreshes

SENT = "Email Sent"
DELIVERED = "Email Delivered"
OPENED = "Email Opened"
CLICKED = "Email Clicked"
UNSUBSCRIBED = "Unsubscribed"
BOUNCED = "Email Bounced"
MESSAGE_EVENTS = (SENT, DELIVERED, OPENED, CLICKED, UNSUBSCRIBED, BOUNCED)
# Events Orbita writes about a customer, which are not the customer doing something.
OWN_EVENTS = (*MESSAGE_EVENTS, "Segment Entered", "Segment Exited")
PURCHASE_EVENT = "Order Completed"
REVENUE_PROPERTY = "revenue"
DEFAULT_CHURN_DAYS = 90
STAGE_PREFIX = "stage:"

Dimension = str
MESSAGE_DIMENSIONS = ("all", "journey", "step", "variant", "channel", "template")
JOURNEY_DIMENSIONS = ("journey", "arm", "variant")
DIMENSIONS = ("all", "journey", "step", "variant", "channel", "template", "arm", "segment", "stage")


@dataclass(frozen=True, slots=True)
class Kpi:
    name: str
    description: str
    unit: str  # count | rate | money | customers
    dimensions: tuple[Dimension, ...]
    higher_is_better: bool = True


CATALOGUE: dict[str, Kpi] = {
    kpi.name: kpi
    for kpi in (
        Kpi("messages_sent", "messages sent", "count", MESSAGE_DIMENSIONS),
        Kpi("messages_delivered", "messages delivered", "count", MESSAGE_DIMENSIONS),
        Kpi("delivery_rate", "delivered / sent", "rate", MESSAGE_DIMENSIONS),
        Kpi("open_rate", "human opens / delivered", "rate", MESSAGE_DIMENSIONS),
        Kpi("click_rate", "clicks / delivered", "rate", MESSAGE_DIMENSIONS),
        Kpi("click_to_open_rate", "clicks / opens", "rate", MESSAGE_DIMENSIONS),
        Kpi("unsubscribe_rate", "unsubscribes / delivered", "rate", MESSAGE_DIMENSIONS, False),
        Kpi("bounce_rate", "bounces / sent", "rate", MESSAGE_DIMENSIONS, False),
        Kpi(
            "conversion_rate",
            "goal reached / runs entered (all: buyers / active customers)",
            "rate",
            ("all", *JOURNEY_DIMENSIONS),
        ),
        Kpi(
            "revenue_per_recipient",
            "attributed revenue / runs entered",
            "money",
            JOURNEY_DIMENSIONS,
        ),
        Kpi("orders", "purchases", "count", ("all",)),
        Kpi("revenue", "revenue of purchases", "money", ("all",)),
        Kpi("buyers", "customers who purchased", "customers", ("all",)),
        Kpi("average_order_value", "revenue / orders", "money", ("all",)),
        Kpi("purchase_frequency", "orders / buyers", "count", ("all",)),
        Kpi("active_customers", "customers with an event of their own", "customers", ("all",)),
        Kpi("repeat_purchase_rate", "repeat buyers / buyers, to date", "rate", ("all",)),
        Kpi("ltv_historical", "revenue / buyers, to date", "money", ("all",)),
        Kpi("churn_rate", "active at the start, lapsed by the end", "rate", ("all",), False),
        Kpi("segment_size", "members at the last refresh", "customers", ("segment",)),
        Kpi("stage_size", "customers in the stage at the last refresh", "customers", ("stage",)),
    )
}
assert set(CATALOGUE) == set(KPI_NAMES), "model.goals.KPI_NAMES and the catalogue must agree"


@dataclass(frozen=True, slots=True)
class KpiRow:
    """One value: `metric` over the `grain` period starting `period`, for `key` of
    `dimension` (the key is "" for the dimension `all`). `value` is None when its
    denominator is zero."""

    metric: str
    grain: str
    period: date
    dimension: str
    key: str
    value: float | None
    numerator: float | None = None
    denominator: float | None = None


@dataclass(frozen=True, slots=True)
class KpiOptions:
    purchase_event: str = PURCHASE_EVENT
    revenue_property: str = REVENUE_PROPERTY
    churn_days: int = DEFAULT_CHURN_DAYS


def options_for(strategy: Strategy | None, *, churn_days: int | None = None) -> KpiOptions:
    """Options from the strategy: churn after the lifecycle's lapse window, if it has one."""
    days = churn_days if churn_days is not None else lapse_days(strategy)
    if days <= 0:
        raise UserError(f"churn_days: {days} is not a number of days above zero")
    return KpiOptions(churn_days=days)


def lapse_days(strategy: Strategy | None, *, purchase_event: str = PURCHASE_EVENT) -> int:
    """Days without a purchase after which the strategy's lifecycle calls a customer lapsed:
    the window of a stage's "no purchase within N days" condition (stages named lapsed,
    churned or lost first), else DEFAULT_CHURN_DAYS."""
    if strategy is None or not strategy.stages:
        return DEFAULT_CHURN_DAYS
    stages = strategy.stage_segments()
    preferred = [n for n in stages if any(w in n for w in ("lapsed", "churn", "lost"))]
    for name in [*preferred, *(n for n in stages if n not in preferred)]:
        days = _absence_days(stages[name], strategy.segments, purchase_event)
        if days is not None:
            return days
    return DEFAULT_CHURN_DAYS


def _absence_days(segment: Segment, segments: Mapping[str, Segment], event: str) -> int | None:
    for node in walk(segment.condition):
        if (
            isinstance(node, EventCondition)
            and node.event == event
            and node.aggregate.function == "count"
            and node.aggregate.compare.op == "=="
            and node.aggregate.compare.value == 0
            and node.window.newer_than is not None
            and node.window.older_than is None
        ):
            return max(1, round(node.window.newer_than / timedelta(days=1)))
    return None


def check_metrics(names: Iterable[str], *, field: str = "metric") -> list[str]:
    wanted = list(names)
    for name in wanted:
        if name not in CATALOGUE:
            raise UserError(f"{field}: unknown KPI {name!r} (known: {', '.join(CATALOGUE)})")
    return wanted


def check_dimensions(names: Iterable[str], *, field: str = "dimension") -> list[str]:
    wanted = list(names)
    for name in wanted:
        if name not in DIMENSIONS:
            raise UserError(f"{field}: unknown dimension {name!r} (use {', '.join(DIMENSIONS)})")
    return wanted


def compute_kpis(
    *,
    events: EventStore,
    state: Engine,
    start: datetime,
    end: datetime,
    grain: Grain = "month",
    metrics: Sequence[str] | None = None,
    dimensions: Sequence[str] | None = None,
    options: KpiOptions | None = None,
) -> list[KpiRow]:
    """Each wanted metric by each wanted dimension it supports (default: every metric by
    `all` or, for those without `all`, by their own dimensions), in [start, end)."""
    start, end = utc(start, field="start"), utc(end, field="end")
    if end <= start:
        raise UserError("end: must come after start")
    wanted = check_metrics(metrics if metrics is not None else CATALOGUE)
    dims = check_dimensions(dimensions) if dimensions is not None else None
    job = _Job(
        source=source_of(events),
        state=state,
        start=start,
        end=end,
        grain=grain,
        options=options or KpiOptions(),
    )
    rows: list[KpiRow] = []
    for family, names in _FAMILIES.items():
        chosen = [name for name in names if name in wanted]
        for dimension in _dimensions_of(chosen, dims):
            rows += family(job, chosen, dimension)
    order = {name: index for index, name in enumerate(CATALOGUE)}
    return sorted(rows, key=lambda r: (order[r.metric], r.dimension, r.key, r.period))


def kpi_value(
    *,
    events: EventStore,
    state: Engine,
    metric: str,
    start: datetime,
    end: datetime,
    dimension: str = "all",
    key: str = "",
    options: KpiOptions | None = None,
) -> KpiRow | None:
    """One metric over the whole of [start, end) for one key (None: no such row)."""
    found = compute_kpis(
        events=events,
        state=state,
        start=start,
        end=end,
        grain="total",
        metrics=[metric],
        dimensions=[dimension],
        options=options,
    )
    return next((row for row in found if row.key == key), None)


def _dimensions_of(chosen: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    if not chosen:
        return []
    supported = list(dict.fromkeys(d for name in chosen for d in CATALOGUE[name].dimensions))
    if wanted is None:
        return ["all"] if "all" in supported else supported
    return [d for d in wanted if d in supported]


@dataclass(frozen=True, slots=True)
class _Job:
    source: Source
    state: Engine
    start: datetime
    end: datetime
    grain: Grain
    options: KpiOptions

    @property
    def events(self) -> Expr:
        return self.source.tables.events

    def in_range(self, events: Expr) -> Expr:
        return events.filter(
            events.timestamp >= timestamp(self.start), events.timestamp < timestamp(self.end)
        )

    def period(self, column: Expr) -> Expr:
        return period_expr(column, self.grain, start=self.start)

    def periods(self) -> list[date]:
        return periods(self.start, self.end, self.grain)

    def purchases(self) -> Expr:
        events = self.events
        return events.filter(events.type == "track", events.name == self.options.purchase_event)

    def revenue(self, events: Expr) -> Expr:
        access = json_access(self.source.dialect)
        return access.number(events.properties, self.options.revenue_property).fill_null(0.0)


def _row(
    job: _Job, metric: str, period: Any, dimension: str, key: Any, num: Any, den: Any = None
) -> KpiRow:
    numerator = None if num is None else float(num)
    denominator = None if den is None else float(den)
    value = numerator if den is None else ratio(numerator, denominator)
    return KpiRow(
        metric=metric,
        grain=job.grain,
        period=as_date(period),
        dimension=dimension,
        key="" if key is None else str(key),
        value=value,
        numerator=numerator,
        denominator=denominator,
    )


# --- messages ----------------------------------------------------------------------------


def _message_kpis(job: _Job, chosen: Sequence[str], dimension: str) -> list[KpiRow]:
    events = job.in_range(job.events)
    events = events.filter(events.type == "track", events.name.isin(MESSAGE_EVENTS))
    access = json_access(job.source.dialect)
    props = events.properties

    def prop(name: str) -> Expr:
        return access.text(props, name).fill_null("")

    keys: dict[str, Expr] = {
        "all": ibis.literal(""),
        "journey": prop("journey"),
        "step": prop("journey").concat("/", prop("step")),
        "variant": prop("journey").concat("/", prop("variant")),
        "channel": prop("channel"),
        "template": prop("template"),
    }
    # A bot's open (an image proxy, a link scanner) is not a reader's.
    human = ~access.boolean(props, "bot").fill_null(False)
    tagged = events.select(
        "customer_id",
        "name",
        period=job.period(events.timestamp),
        key=keys[dimension],
        human=human,
    )
    if dimension in ("variant",):
        tagged = tagged.filter(~tagged.key.endswith("/"))
    counted = tagged.filter(tagged.human | (tagged.name != OPENED))
    grouped = counted.group_by("period", "key", "name").aggregate(
        events=counted.count(), customers=counted.customer_id.nunique()
    )
    table: dict[tuple[date, str], dict[str, tuple[int, int]]] = defaultdict(dict)
    for row in job.source.rows(grouped):
        table[(as_date(row["period"]), row["key"])][row["name"]] = (row["events"], row["customers"])
    if dimension == "all":  # every period gets its row, as purchases do, even with no message
        for period in job.periods():
            table.setdefault((period, ""), {})
    rows: list[KpiRow] = []
    for (period, key), names in sorted(table.items()):
        events_of = {name: n for name, (n, _) in names.items()}
        customers_of = {name: n for name, (_, n) in names.items()}
        figures = {
            "messages_sent": (events_of.get(SENT, 0), None),
            "messages_delivered": (events_of.get(DELIVERED, 0), None),
            "delivery_rate": (events_of.get(DELIVERED, 0), events_of.get(SENT, 0)),
            "bounce_rate": (events_of.get(BOUNCED, 0), events_of.get(SENT, 0)),
            "open_rate": (customers_of.get(OPENED, 0), customers_of.get(DELIVERED, 0)),
            "click_rate": (customers_of.get(CLICKED, 0), customers_of.get(DELIVERED, 0)),
            "click_to_open_rate": (customers_of.get(CLICKED, 0), customers_of.get(OPENED, 0)),
            "unsubscribe_rate": (customers_of.get(UNSUBSCRIBED, 0), customers_of.get(DELIVERED, 0)),
        }
        for metric in chosen:
            num, den = figures[metric]
            rows.append(_row(job, metric, period, dimension, key, num, den))
    return rows


# --- purchases -----------------------------------------------------------------------------


def _purchase_kpis(job: _Job, chosen: Sequence[str], dimension: str) -> list[KpiRow]:
    orders = job.in_range(job.purchases())
    per_period = orders.group_by(period=job.period(orders.timestamp)).aggregate(
        orders=orders.count(),
        revenue=job.revenue(orders).sum(),
        buyers=orders.customer_id.nunique(),
    )
    found = {as_date(r["period"]): r for r in job.source.rows(per_period)}
    active: dict[date, int] = {}
    if {"active_customers", "conversion_rate"} & set(chosen):
        events = job.in_range(job.events)
        own = events.filter(events.type == "track", ~events.name.isin(OWN_EVENTS))
        expr = own.group_by(period=job.period(own.timestamp)).aggregate(
            customers=own.customer_id.nunique()
        )
        active = {as_date(r["period"]): int(r["customers"]) for r in job.source.rows(expr)}
    rows: list[KpiRow] = []
    for period in job.periods():
        got = found.get(period, {"orders": 0, "revenue": 0.0, "buyers": 0})
        n, money, buyers = int(got["orders"]), float(got["revenue"] or 0.0), int(got["buyers"])
        figures: dict[str, tuple[float, float | None]] = {
            "orders": (n, None),
            "revenue": (money, None),
            "buyers": (buyers, None),
            "average_order_value": (money, n),
            "purchase_frequency": (n, buyers),
            "active_customers": (active.get(period, 0), None),
            "conversion_rate": (buyers, active.get(period, 0)),
        }
        for metric in chosen:
            num, den = figures[metric]
            rows.append(_row(job, metric, period, dimension, "", num, den))
    return rows


def _to_date_kpis(job: _Job, chosen: Sequence[str], dimension: str) -> list[KpiRow]:
    """Cumulative: first and second purchases and revenue counted by period over all
    history before `end`, summed up to each period's end."""
    orders = job.purchases()
    orders = orders.filter(orders.timestamp < timestamp(job.end))
    # Reading revenue out of every purchase's JSON is most of the scan: only for LTV.
    with_revenue = "ltv_historical" in chosen
    ranked = orders.select(
        "customer_id",
        "timestamp",
        **({"revenue": job.revenue(orders)} if with_revenue else {}),
        rank=ibis.row_number().over(
            group_by=orders.customer_id, order_by=[orders.timestamp, orders.message_id]
        ),
    )

    def totals(table: Expr) -> dict[str, Expr]:
        found = {
            "firsts": _count_of(table["rank"] == 0),  # row_number counts from 0 in Ibis
            "seconds": _count_of(table["rank"] == 1),
        }
        return found | ({"revenue": table.revenue.sum()} if with_revenue else {})

    by_period = ranked.group_by(period=job.period(ranked.timestamp)).aggregate(**totals(ranked))
    if job.grain == "total":
        # Every purchase before `start` belongs to the running totals before the one period.
        marked = ranked.mutate(before=ranked.timestamp < timestamp(job.start))
        by_period = marked.group_by("before").aggregate(**totals(marked))
        found = job.source.rows(by_period)
        keyed = {
            (job.start.date() - timedelta(days=1) if r["before"] else job.start.date()): r
            for r in found
        }
    else:
        keyed = {as_date(r["period"]): r for r in job.source.rows(by_period)}
    firsts = seconds = 0
    money = 0.0
    pending = sorted(keyed.items())
    rows: list[KpiRow] = []
    for period in job.periods():
        while pending and pending[0][0] <= period:
            got = pending.pop(0)[1]
            firsts += int(got["firsts"] or 0)
            seconds += int(got["seconds"] or 0)
            money += float(got.get("revenue") or 0.0)
        figures = {
            "repeat_purchase_rate": (seconds, firsts),
            "ltv_historical": (money, firsts),
        }
        for metric in chosen:
            num, den = figures[metric]
            rows.append(_row(job, metric, period, dimension, "", num, den))
    return rows


def _churn_kpis(job: _Job, chosen: Sequence[str], dimension: str) -> list[KpiRow]:
    """Purchases become spells of activity (islands): a purchase keeps a customer active for
    `churn_days` after it, and purchases closer than that join one spell (s, e], s the first
    purchase and e the last plus the window. Active at instant a: s < a <= e; churned
    during [a, b): s < a <= e < b. Both are counts of spells bucketed by the periods of s and
    e, so no customer-by-period grid is built."""
    span = timedelta(days=job.options.churn_days)
    orders = job.purchases()
    orders = orders.filter(orders.timestamp < timestamp(job.end))
    by_customer = ibis.window(group_by=orders.customer_id, order_by=orders.timestamp)
    previous = orders.timestamp.lag().over(by_customer)
    window = ibis.interval(seconds=_seconds(span))
    gaps = orders.select(
        "customer_id",
        "timestamp",
        new=ibis.ifelse(
            previous.isnull()
            | (orders.timestamp > previous + ibis.interval(seconds=_seconds(span))),
            1,
            0,
        ),
    )
    spells = gaps.select(
        "customer_id",
        "timestamp",
        spell=gaps.new.sum().over(
            ibis.window(group_by=gaps.customer_id, order_by=gaps.timestamp, rows=(None, 0))
        ),
    )
    bounds = spells.group_by("customer_id", "spell").aggregate(
        first=spells.timestamp.min(), last=spells.timestamp.max()
    )
    bounds = bounds.select(
        s=bounds["first"],
        e=bounds["last"] + window,
    )
    marks = bounds.select(
        ps=_bucket(job, bounds.s),
        pe=_bucket(job, bounds.e),
        churned=bounds.e < timestamp(job.end),
    )
    # One pass: spells counted by (period begun, period over); a few hundred cells at most.
    cells = marks.group_by("ps", "pe").aggregate(
        n=marks.count(), churned=_count_of(marks.churned & (marks.ps < marks.pe))
    )
    started: dict[date, int] = defaultdict(int)
    ended: dict[date, tuple[int, int]] = {}
    for cell in job.source.rows(cells):
        began, lapsed = as_date(cell["ps"]), as_date(cell["pe"])
        started[began] += int(cell["n"])
        n, churned = ended.get(lapsed, (0, 0))
        ended[lapsed] = (n + int(cell["n"]), churned + int(cell["churned"] or 0))
    rows: list[KpiRow] = []
    for period in job.periods():
        # Spells begun before the period's start, less those already over by then.
        begun = sum(n for p, n in started.items() if p < period)
        over = sum(n for p, (n, _) in ended.items() if p < period)
        churned = ended.get(period, (0, 0))[1]
        rows.append(_row(job, "churn_rate", period, dimension, "", churned, begun - over))
    return rows


def _bucket(job: _Job, column: Expr) -> Expr:
    """The period of a spell bound; for the total, before / within / after the range."""
    if job.grain != "total":
        return column.truncate({"day": "D", "week": "W", "month": "M"}[job.grain])
    before = job.start - timedelta(days=1)
    after = job.end + timedelta(days=1)
    return ibis.ifelse(
        column < timestamp(job.start),
        timestamp(before),
        ibis.ifelse(column < timestamp(job.end), timestamp(job.start), timestamp(after)),
    )


def _count_of(condition: Expr) -> Expr:
    # PostgreSQL casts no boolean to a number: count the rows where it holds.
    return ibis.ifelse(condition, 1, 0).sum()


def _seconds(span: timedelta) -> int:
    return int(span.total_seconds())


# --- journeys (state store) --------------------------------------------------------------


def _journey_kpis(job: _Job, chosen: Sequence[str], dimension: str) -> list[KpiRow]:
    if dimension == "all":
        return _purchase_kpis(job, [m for m in chosen if m == "conversion_rate"], "all")
    runs = journey_runs.c
    dialect = job.state.dialect.name
    period = state_period(runs.entered_at, job.grain, dialect=dialect, start=job.start)
    in_range = and_(runs.entered_at >= job.start, runs.entered_at < job.end)
    holdout_arm = runs.holdout
    revenue = (
        select(attributions.c.run_id, func.sum(attributions.c.revenue).label("revenue"))
        .group_by(attributions.c.run_id)
        .subquery()
    )
    base = runs.journey
    variants = None
    if dimension == "variant":
        variants = (
            select(outbox.c.run_id, func.min(outbox.c.variant).label("variant"))
            .where(outbox.c.kind == "send", outbox.c.variant.is_not(None))
            .group_by(outbox.c.run_id)
            .subquery()
        )
    columns = [base.label("journey"), holdout_arm.label("holdout"), period.label("period")]
    joined = journey_runs.outerjoin(
        journey_conversions, journey_conversions.c.run_id == runs.run_id
    ).outerjoin(revenue, revenue.c.run_id == runs.run_id)
    if variants is not None:
        joined = joined.join(variants, variants.c.run_id == runs.run_id)
        columns.append(variants.c.variant.label("variant"))
    query = (
        select(
            *columns,
            func.count().label("entered"),
            func.count(journey_conversions.c.run_id).label("converted"),
            func.coalesce(func.sum(revenue.c.revenue), 0.0).label("revenue"),
        )
        .select_from(joined)
        .where(in_range)
        .group_by(*columns)
    )
    with job.state.connect() as connection:
        found = connection.execute(query).mappings().all()
    rows: list[KpiRow] = []
    for row in found:
        arm_name = "holdout" if row["holdout"] else "treatment"
        if dimension == "journey":
            if row["holdout"]:
                continue
            key = row["journey"]
        elif dimension == "arm":
            key = f"{row['journey']}/{arm_name}"
        else:
            if row["holdout"]:
                continue
            key = f"{row['journey']}/{row['variant']}"
        figures = {
            "conversion_rate": (row["converted"], row["entered"]),
            "revenue_per_recipient": (row["revenue"], row["entered"]),
        }
        for metric in chosen:
            num, den = figures[metric]
            rows.append(_row(job, metric, row["period"], dimension, key, num, den))
    return rows


# --- segments (state store) ----------------------------------------------------------------


def _segment_kpis(job: _Job, chosen: Sequence[str], dimension: str) -> list[KpiRow]:
    """The size recorded by the last refresh before each period's end (a refresh writes a
    row only when membership changed, so the size carries forward). The refresh record is
    one row per change of a segment: small enough to walk here."""
    metric = "stage_size" if dimension == "stage" else "segment_size"
    if metric not in chosen:
        return []
    is_stage = refreshes.c.segment.startswith(STAGE_PREFIX)
    query = (
        select(refreshes.c.segment, refreshes.c.as_of, refreshes.c.size)
        .where(refreshes.c.as_of < job.end, is_stage if dimension == "stage" else ~is_stage)
        .order_by(refreshes.c.segment, refreshes.c.as_of, refreshes.c.refresh_id)
    )
    with job.state.connect() as connection:
        history: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
        for name, as_of, size in connection.execute(query):
            history[name].append((as_of.astimezone(UTC), int(size)))
    rows: list[KpiRow] = []
    for name, sizes in sorted(history.items()):
        key = name.removeprefix(STAGE_PREFIX)
        for period in job.periods():
            until = job.end if job.grain == "total" else _period_end(period, job)
            known = [size for at, size in sizes if at < until]
            if known:
                rows.append(_row(job, metric, period, dimension, key, known[-1]))
    return rows


def _period_end(period: date, job: _Job) -> datetime:
    following = next_period(period, job.grain)
    return min(datetime(following.year, following.month, following.day, tzinfo=UTC), job.end)


_FAMILIES: dict[Any, tuple[str, ...]] = {
    _message_kpis: (
        "messages_sent",
        "messages_delivered",
        "delivery_rate",
        "open_rate",
        "click_rate",
        "click_to_open_rate",
        "unsubscribe_rate",
        "bounce_rate",
    ),
    _journey_kpis: ("conversion_rate", "revenue_per_recipient"),
    _purchase_kpis: (
        "orders",
        "revenue",
        "buyers",
        "average_order_value",
        "purchase_frequency",
        "active_customers",
    ),
    _to_date_kpis: ("repeat_purchase_rate", "ltv_historical"),
    _churn_kpis: ("churn_rate",),
    _segment_kpis: ("segment_size", "stage_size"),
}
assert sorted(n for names in _FAMILIES.values() for n in names) == sorted(CATALOGUE)


SUMMARY_METRICS = (
    "active_customers",
    "buyers",
    "orders",
    "revenue",
    "average_order_value",
    "repeat_purchase_rate",
    "churn_rate",
    "messages_sent",
    "delivery_rate",
    "open_rate",
    "click_rate",
    "unsubscribe_rate",
)


def kpi_summary(
    *,
    events: EventStore,
    state: Engine,
    start: datetime,
    end: datetime,
    options: KpiOptions | None = None,
) -> list[KpiRow]:
    """The headline KPIs over the whole of [start, end), one row each, in SUMMARY_METRICS
    order (a closing summary, as the demo prints it; `shown` formats the values)."""
    rows = compute_kpis(
        events=events,
        state=state,
        start=start,
        end=end,
        grain="total",
        metrics=SUMMARY_METRICS,
        dimensions=["all"],
        options=options,
    )
    return sorted(rows, key=lambda row: SUMMARY_METRICS.index(row.metric))


def shown(metric: str, value: float | None) -> str:
    """A KPI's value as a person reads it: rates in %, money with cents, counts whole."""
    if value is None:
        return "-"
    unit = CATALOGUE[metric].unit
    if unit == "rate":
        return f"{value:.1%}"
    if unit == "money":
        return f"{value:,.2f}"
    if metric == "purchase_frequency":
        return f"{value:.2f}"
    return f"{value:,.0f}"
