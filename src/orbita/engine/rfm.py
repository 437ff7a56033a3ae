"""RFM scores and cells as one portable Ibis expression over the unbound `events` table.

Over the orders in the window (`as_of - window`, `as_of`], per customer: recency is the time
of the last order, frequency the number of orders, monetary the sum of the revenue
property. Each becomes a quintile score 1..5 with NTILE(5) — 5 is the most recent, the most
frequent, the biggest spender. Equal values are ordered by customer_id, so every engine
gives every customer the same score (a tie cannot straddle a quintile boundary at random).
Customers without orders in the window get no scores and no cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import ibis

from orbita.engine.segments.compile import feature_table
from orbita.engine.segments.features import FeaturePlan, feature_key
from orbita.engine.segments.json_access import json_access
from orbita.engine.segments.tables import SegmentTables, segment_tables
from orbita.model.rfm import RfmConfig, Scores
from orbita.model.segments import Aggregate, EventCondition, Window

Expr = Any


def rfm_orders(config: RfmConfig) -> EventCondition:
    """The orders RFM scores, as an event condition: a feature plan (features.py) that adds
    it with `add_latest` holds each customer's recency, frequency and monetary value."""
    return EventCondition(
        event=config.event,
        window=Window(newer_than=config.window),
        aggregate=Aggregate(function="sum", property=config.revenue_property),
    )


def rfm_from_features(config: RfmConfig, *, plan: FeaturePlan) -> Expr:
    """`rfm_expr` over the plan's feature table instead of the events: the same scores."""
    column = plan.column(rfm_orders(config))
    if column is None or column.value is None or feature_key(rfm_orders(config)) not in plan.latest:
        raise ValueError("the feature plan lacks the RFM orders: add them with add_latest")
    table = feature_table(plan, column.table)
    index = column.matched.removeprefix("n")
    ordered = table.filter(table[column.matched] > 0)
    per_customer = ordered.select(
        "customer_id",
        last_at=ordered[f"t{index}"],
        frequency=ordered[column.matched],
        monetary=ordered[column.value].fill_null(0.0),
    )
    return rfm_scores(per_customer, config)


def rfm_expr(config: RfmConfig, *, as_of: datetime, tables: SegmentTables | None = None) -> Expr:
    """(customer_id, r, f, m, cell) for every customer with an order in the window."""
    if as_of.tzinfo is None:
        raise ValueError("as_of must be an aware datetime")
    tables = tables or segment_tables()
    events = tables.events
    end = as_of.astimezone(UTC)
    start = end - config.window
    orders = events.filter(
        events.type == "track",
        events.name == config.event,
        events.timestamp > ibis.literal(start, type="timestamp('UTC')"),
        events.timestamp <= ibis.literal(end, type="timestamp('UTC')"),
    )
    revenue = json_access(tables.dialect).number(orders.properties, config.revenue_property)
    per_customer = orders.group_by("customer_id").aggregate(
        last_at=orders.timestamp.max(),
        frequency=orders.count(),
        monetary=revenue.sum().fill_null(0.0),
    )
    return rfm_scores(per_customer, config)


def rfm_scores(per_customer: Expr, config: RfmConfig) -> Expr:
    """(customer_id, r, f, m, cell) from (customer_id, last_at, frequency, monetary)."""

    def score(column: str) -> Expr:
        order = [per_customer[column], per_customer.customer_id]
        return (ibis.ntile(5).over(order_by=order) + 1).cast("int8")

    scored = per_customer.select(
        "customer_id", r=score("last_at"), f=score("frequency"), m=score("monetary")
    )
    coded = scored.mutate(
        code=scored.r.cast("int32") * 100 + scored.f.cast("int32") * 10 + scored.m.cast("int32")
    )
    return coded.select("customer_id", "r", "f", "m", cell=cell_case(coded.code, config.table()))


def cell_case(code: Expr, table: Mapping[Scores, str]) -> Expr:
    """The cell of each score code (r * 100 + f * 10 + m): one CASE, an IN list per cell."""
    codes: dict[str, list[int]] = {}
    for (r, f, m), cell in sorted(table.items()):
        codes.setdefault(cell, []).append(r * 100 + f * 10 + m)
    branches = [(code.isin(values), cell) for cell, values in codes.items()]
    return ibis.cases(*branches, else_=ibis.null("string"))
