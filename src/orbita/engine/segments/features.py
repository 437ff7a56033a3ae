"""Per-customer event features: the aggregates of many event conditions in one scan.

A refresh evaluates every segment and stage of the strategy at one `as_of`. Most of their
event conditions read the same few event names with different windows, filters and
aggregates (`Order Completed` within 30d, 90d, 365d, between 120d and 30d, a sum of revenue
...). Instead of one scan of `events` per condition, `plan_features` gives each distinct
(event, window, where, aggregate) a pair of columns — the number of matching events and,
for sum / avg / min / max, the aggregate over them — in one table per event name, built by
one filtered GROUP BY customer_id with conditional aggregates (`count(*) FILTER (WHERE ...)`
on DuckDB and PostgreSQL, `countIf` on ClickHouse: Ibis prints each engine's form).

The compiler (`compile_segment(features=...)`) then reads such a condition as a filter of
that table; everything else (combinations, absence as an anti-join, references) compiles as
before, so a segment means the same with or without features. The tables are built from
unbound Ibis expressions (`FeaturePlan.expressions`) and named by the plan, so the caller
materialises them in whichever engine runs the segments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orbita.model.segments import (
    Comparison,
    Condition,
    EventCondition,
    Segment,
    SegmentRef,
    walk,
)

Expr = Any
# Aggregates a conditional aggregate expresses; first / last need an ordering (a window).
FEATURE_FUNCTIONS = frozenset({"count", "sum", "avg", "min", "max"})


@dataclass(frozen=True, slots=True)
class FeatureColumn:
    """Where one condition's aggregate lives: `matched` counts its events per customer,
    `value` holds sum / avg / min / max over them (None for a count)."""

    table: str
    matched: str
    value: str | None


@dataclass(slots=True)
class FeaturePlan:
    """Every event condition of a set of segments, grouped by (message type, event name)."""

    prefix: str = "segment_features"
    groups: dict[tuple[str, str], list[EventCondition]] = field(default_factory=dict)
    columns: dict[str, FeatureColumn] = field(default_factory=dict)
    # Conditions whose latest matching event time is kept too (`t<index>`): RFM's recency.
    latest: set[str] = field(default_factory=set)

    def add_latest(self, condition: EventCondition) -> FeatureColumn:
        """Add a condition (if new) with its latest matching event time as well."""
        self.add(condition)
        self.latest.add(feature_key(condition))
        return self.columns[feature_key(condition)]

    def add(self, condition: EventCondition) -> None:
        if condition.aggregate.function not in FEATURE_FUNCTIONS:
            return
        key = feature_key(condition)
        if key in self.columns:
            return
        group = (condition.message_type, condition.event)
        members = self.groups.setdefault(group, [])
        table = f"{self.prefix}_{list(self.groups).index(group)}"
        index = len(members)
        members.append(condition)
        has_value = condition.aggregate.function != "count"
        self.columns[key] = FeatureColumn(
            table=table, matched=f"n{index}", value=f"v{index}" if has_value else None
        )

    def column(self, condition: EventCondition) -> FeatureColumn | None:
        return self.columns.get(feature_key(condition))

    def table_names(self) -> list[str]:
        return [f"{self.prefix}_{index}" for index in range(len(self.groups))]


def feature_key(condition: EventCondition) -> str:
    """What decides a condition's per-customer aggregate: all but the comparison."""
    aggregate = condition.aggregate
    return condition.model_copy(
        update={"aggregate": aggregate.model_copy(update={"compare": _NEUTRAL})}
    ).model_dump_json()


def plan_features(
    conditions: Iterable[Condition],
    *,
    segments: Mapping[str, Segment],
    prefix: str = "segment_features",
) -> FeaturePlan:
    """The features of these conditions and of every segment they refer to."""
    plan = FeaturePlan(prefix=prefix)
    seen: set[str] = set()
    pending = list(conditions)
    while pending:
        for node in walk(pending.pop()):
            if isinstance(node, EventCondition):
                plan.add(node)
            elif isinstance(node, SegmentRef) and node.segment not in seen:
                seen.add(node.segment)
                referenced = segments.get(node.segment)
                if referenced is not None:
                    pending.append(referenced.condition)
    return plan


_NEUTRAL = Comparison(op=">=", value=1.0)
