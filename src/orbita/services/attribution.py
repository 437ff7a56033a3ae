"""Conversions attributed: each goal event of a journey credited to the messages that led to
it, with its revenue; stored per message, step, journey, variant and holdout arm.

    attribute_window(workspace=…, journeys=strategy.journeys, start=…, end=…)
    attribute_due(workspace=…, journeys=…, now=…)     the worker pass: every 5 minutes
    attribution_summary(workspace=…, journey="abandoned_cart")

A goal event (the journey's `goal`, with its `where`) at time t is credited to the
journey's messages sent to the customer within the goal's `within` before t: the last one
(`attribution: last_touch`, the default), the first (`first_touch`), or all of them in
equal shares (`linear`). A holdout run sends nothing: a goal event within `within` after
its entry is credited to the run's holdout arm, so the arms compare like with like.
Revenue is the event's `revenue`, else `total`, else `value` property (0 without one).

In bulk: the goal events of a window come from the event store in one query per journey
and batch of customers, go into a temporary table of the state store, and one join each
finds the messages and holdout runs they fall after. Idempotent: a goal event is credited
to a touch once, however often a window is computed again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    MetaData,
    String,
    Table,
    and_,
    func,
    select,
    true,
    union,
)
from sqlalchemy.dialects import postgresql, sqlite

from orbita.core.errors import InvalidInputError
from orbita.engine.journeys.predicates import compile_where
from orbita.model.journeys import Goal, Journey
from orbita.services.workspace import Workspace, read_value, write_value
from orbita.store.state import AwareDateTime, attributions, journey_runs, outbox

REVENUE_PROPERTIES = ("revenue", "total", "value")
CUSTOMERS_PER_QUERY = 5_000

_scratch = MetaData()
# The window's goal events, in the state store for the joins (one connection's own table).
_goal_events = Table(
    "attribution_goal_events",
    _scratch,
    Column("message_id", String(255), primary_key=True),
    Column("customer_id", BigInteger, nullable=False),
    Column("at", AwareDateTime(), nullable=False),
    Column("window_start", AwareDateTime(), nullable=False),
    Column("revenue", Float, nullable=False),
    prefixes=["TEMPORARY"],
)


@dataclass(frozen=True, slots=True)
class AttributionReport:
    goal_events: int = 0  # goal events of the window (after each goal's `where`)
    attributed: int = 0  # goal events credited to a message or a holdout arm
    stored: int = 0  # attribution rows written now (the rest were stored before)


@dataclass(frozen=True, slots=True)
class AttributedTotals:
    """One step, variant and arm of a journey: conversions (shares of goal events, as the
    model weighs them) and the revenue they brought."""

    node: str | None
    variant: str | None
    arm: str
    conversions: float
    revenue: float
    goal_events: int


def revenue_of(properties: Mapping[str, Any]) -> float:
    for name in REVENUE_PROPERTIES:
        value = properties.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


def attribute_window(
    *,
    workspace: Workspace,
    journeys: Mapping[str, Journey],
    start: datetime | None,
    end: datetime,
) -> AttributionReport:
    """Attribute the goal events in (start, end] of every journey with a goal."""
    if end.tzinfo is None or (start is not None and start.tzinfo is None):
        raise InvalidInputError([], summary="attribute_window needs aware datetimes")
    total = AttributionReport()
    for name, journey in journeys.items():
        if journey.goal is not None:
            found = _attribute_journey(workspace, name, journey.goal, start=start, end=end)
            total = AttributionReport(
                goal_events=total.goal_events + found.goal_events,
                attributed=total.attributed + found.attributed,
                stored=total.stored + found.stored,
            )
    return total


# Where the worker's attribution got to (a workspace value), how often it runs, and how far
# back each run looks again for goal events that arrived late (a phone's queue, an import).
ATTRIBUTION_KEY = "attribution"
ATTRIBUTE_EVERY = timedelta(minutes=5)
LATE_EVENTS = timedelta(hours=1)


def attribute_due(
    *,
    workspace: Workspace,
    journeys: Mapping[str, Journey],
    now: datetime,
    every: timedelta = ATTRIBUTE_EVERY,
) -> AttributionReport | None:
    """The worker pass's attribution: the window since the last one, when `every` has
    passed (None when it has not, or no journey has a goal)."""
    if not any(journey.goal is not None for journey in journeys.values()):
        return None
    value = read_value(workspace=workspace, key=ATTRIBUTION_KEY)
    last = datetime.fromisoformat(value["until"]) if value else None
    if last is not None and now - last < every:
        return None
    start = last - LATE_EVENTS if last is not None else None
    report = attribute_window(workspace=workspace, journeys=journeys, start=start, end=now)
    write_value(workspace=workspace, key=ATTRIBUTION_KEY, value={"until": now.isoformat()}, now=now)
    return report


def _touched_customers(
    connection: Connection, journey: str, *, since: datetime | None, end: datetime
) -> list[int]:
    """Customers with a message of the journey, or a holdout run, in the reach of the window."""
    sends = select(outbox.c.customer_id).where(
        outbox.c.journey == journey,
        outbox.c.status == "sent",
        outbox.c.kind == "send",
        outbox.c.sent_at <= end,
        *([outbox.c.sent_at > since] if since is not None else []),
    )
    holdouts = select(journey_runs.c.customer_id).where(
        journey_runs.c.journey == journey,
        journey_runs.c.holdout == true(),
        journey_runs.c.entered_at <= end,
        *([journey_runs.c.entered_at > since] if since is not None else []),
    )
    return sorted(int(row[0]) for row in connection.execute(union(sends, holdouts)))


def _attribute_journey(
    workspace: Workspace, journey: str, goal: Goal, *, start: datetime | None, end: datetime
) -> AttributionReport:
    within: timedelta = goal.within
    since = start - within if start is not None else None
    with workspace.state.connect() as connection:
        customers = _touched_customers(connection, journey, since=since, end=end)
    matches = compile_where(goal.where)
    report = AttributionReport()
    for offset in range(0, len(customers), CUSTOMERS_PER_QUERY):
        chunk = customers[offset : offset + CUSTOMERS_PER_QUERY]
        table = workspace.events.events_of(
            customer_ids=chunk, name=goal.event, kind=goal.message_type, start=start, end=end
        )
        events = []
        for row in table.to_pylist():
            text = row["properties"]
            properties = orjson.loads(text) if isinstance(text, str) and text else {}
            if not isinstance(properties, dict) or not matches(properties, row["timestamp"]):
                continue
            events.append(
                {
                    "message_id": row["message_id"],
                    "customer_id": int(row["customer_id"]),
                    "at": row["timestamp"],
                    "window_start": row["timestamp"] - within,
                    "revenue": revenue_of(properties),
                }
            )
        if events:
            found = _credit(workspace, journey, goal, events)
            report = AttributionReport(
                goal_events=report.goal_events + len(events),
                attributed=report.attributed + found.attributed,
                stored=report.stored + found.stored,
            )
    return report


def _credit(
    workspace: Workspace, journey: str, goal: Goal, events: Sequence[Mapping[str, Any]]
) -> AttributionReport:
    g = _goal_events
    with workspace.state.begin() as connection:
        _goal_events.drop(connection, checkfirst=True)
        _goal_events.create(connection)
        try:
            # A goal event repeated in a page of the store (merged identities) counts once.
            unique = list({event["message_id"]: event for event in events}.values())
            connection.execute(g.insert(), unique)
            sends = connection.execute(
                select(
                    g.c.message_id,
                    g.c.customer_id,
                    g.c.at,
                    g.c.revenue,
                    outbox.c.outbox_id,
                    outbox.c.idempotency_key,
                    outbox.c.node,
                    outbox.c.template,
                    outbox.c.variant,
                    outbox.c.run_id,
                    outbox.c.sent_at,
                )
                .select_from(
                    g.join(
                        outbox,
                        and_(
                            outbox.c.customer_id == g.c.customer_id,
                            outbox.c.journey == journey,
                            outbox.c.status == "sent",
                            outbox.c.kind == "send",
                            outbox.c.sent_at >= g.c.window_start,
                            outbox.c.sent_at < g.c.at,
                        ),
                    )
                )
                .order_by(g.c.message_id, outbox.c.sent_at, outbox.c.outbox_id)
            ).all()
            holdouts = connection.execute(
                select(
                    g.c.message_id,
                    g.c.customer_id,
                    g.c.at,
                    g.c.revenue,
                    journey_runs.c.run_id,
                    journey_runs.c.entered_at,
                )
                .select_from(
                    g.join(
                        journey_runs,
                        and_(
                            journey_runs.c.customer_id == g.c.customer_id,
                            journey_runs.c.journey == journey,
                            journey_runs.c.holdout == true(),
                            journey_runs.c.entered_at >= g.c.window_start,
                            journey_runs.c.entered_at <= g.c.at,
                        ),
                    )
                )
                .order_by(g.c.message_id, journey_runs.c.entered_at)
            ).all()
        finally:
            _goal_events.drop(connection)
        rows = _rows(journey, goal, sends, holdouts)
        stored = _insert(connection, rows)
    return AttributionReport(
        attributed=len({row["goal_message_id"] for row in rows}), stored=stored
    )


def _rows(
    journey: str, goal: Goal, sends: Sequence[Any], holdouts: Sequence[Any]
) -> list[dict[str, Any]]:
    touches: dict[str, list[Any]] = defaultdict(list)
    for row in sends:
        touches[row.message_id].append(row)
    rows: list[dict[str, Any]] = []
    for message_id, found in touches.items():
        if goal.attribution == "last_touch":
            chosen = [found[-1]]
        elif goal.attribution == "first_touch":
            chosen = [found[0]]
        else:
            chosen = found
        weight = 1.0 / len(chosen)
        for touch in chosen:
            rows.append(
                {
                    "goal_message_id": message_id,
                    "touch_key": touch.idempotency_key,
                    "model": goal.attribution,
                    "journey": journey,
                    "run_id": touch.run_id,
                    "outbox_id": touch.outbox_id,
                    "node": touch.node,
                    "template": touch.template,
                    "variant": touch.variant,
                    "arm": "treatment",
                    "customer_id": touch.customer_id,
                    "goal_event": goal.event,
                    "touched_at": touch.sent_at,
                    "converted_at": touch.at,
                    "weight": weight,
                    "revenue": touch.revenue * weight,
                }
            )
    latest_run: dict[str, Any] = {}
    for row in holdouts:
        if row.message_id not in touches:
            latest_run[row.message_id] = row  # ordered by entry: the latest run wins
    for message_id, run in latest_run.items():
        rows.append(
            {
                "goal_message_id": message_id,
                "touch_key": run.run_id,
                "model": goal.attribution,
                "journey": journey,
                "run_id": run.run_id,
                "outbox_id": None,
                "node": None,
                "template": None,
                "variant": None,
                "arm": "holdout",
                "customer_id": run.customer_id,
                "goal_event": goal.event,
                "touched_at": run.entered_at,
                "converted_at": run.at,
                "weight": 1.0,
                "revenue": run.revenue,
            }
        )
    return rows


def _insert(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    if not rows:
        return 0
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(attributions).on_conflict_do_nothing(
        index_elements=["goal_message_id", "touch_key"]
    )
    before = _count(connection)
    connection.execute(statement, list(rows))
    return _count(connection) - before


def _count(connection: Connection) -> int:
    return int(connection.execute(select(func.count()).select_from(attributions)).scalar_one())


def attribution_summary(*, workspace: Workspace, journey: str) -> list[AttributedTotals]:
    """Attributed conversions and revenue per step, variant and arm of a journey."""
    query = (
        select(
            attributions.c.node,
            attributions.c.variant,
            attributions.c.arm,
            func.sum(attributions.c.weight),
            func.sum(attributions.c.revenue),
            func.count(attributions.c.goal_message_id.distinct()),
        )
        .where(attributions.c.journey == journey)
        .group_by(attributions.c.node, attributions.c.variant, attributions.c.arm)
        .order_by(attributions.c.arm, attributions.c.node, attributions.c.variant)
    )
    with workspace.state.connect() as connection:
        return [
            AttributedTotals(
                node=node,
                variant=variant,
                arm=arm,
                conversions=round(float(conversions), 6),
                revenue=round(float(revenue), 2),
                goal_events=int(count),
            )
            for node, variant, arm, conversions, revenue, count in connection.execute(query)
        ]
