"""The strategy's send rules checked for a batch of messages at send time (see
`orbita.model.send_rules`): which messages a rule blocks, with the rule as the reason.

One evaluation per rule for the whole batch: the customers' profiles as the sender loaded
them, and the events their conditions read fetched once per event name for all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from orbita.engine.segments.compile import window_bounds
from orbita.engine.segments.reference import ReferenceData, evaluate
from orbita.model.segments import (
    ComputedTraitCondition,
    Condition,
    EventCondition,
    SegmentRef,
    SequenceCondition,
    Window,
    walk,
)
from orbita.model.strategy import Strategy
from orbita.store.events import EventStore


def blocked_by_rules(
    *,
    events: EventStore,
    strategy: Strategy,
    rows: Sequence[Mapping[str, Any]],
    profiles: Mapping[int, Mapping[str, Any]],
    now: datetime,
) -> dict[int, str]:
    """Outbox id -> reason, for the rows (outbox rows of one batch) a send rule blocks."""
    if not strategy.send_rules:
        return {}
    blocked: dict[int, str] = {}
    for index, rule in enumerate(strategy.send_rules):
        affected = []
        for row in rows:
            template = strategy.templates.get(row.get("template") or "")
            if row.get("kind") != "send" or template is None or row["outbox_id"] in blocked:
                continue
            if rule.blocks(str(row["template"]), template):
                affected.append(row)
        ids = sorted({int(row["customer_id"]) for row in affected})
        customers = [profiles[i] for i in ids if i in profiles]
        if not customers:
            continue
        data = ReferenceData(
            events=_events(events, strategy, rule.when, ids, now=now), customers=customers
        )
        members = evaluate(
            rule.when,
            as_of=now,
            data=data,
            segments=strategy.segments,
            computed_traits=strategy.computed_traits,
        )
        for row in affected:
            if int(row["customer_id"]) in members:
                blocked[int(row["outbox_id"])] = f"send rule: {rule.describe(index)}"
    return blocked


def _windows(strategy: Strategy, condition: Condition) -> Iterator[tuple[str, str, Window]]:
    """(event name, message type, window) of every event the condition reads, through the
    segments it names and the computed traits it compares."""
    seen: set[str] = set()
    stack = [condition]
    while stack:
        for node in walk(stack.pop()):
            if isinstance(node, EventCondition):
                yield node.event, node.message_type, node.window
            elif isinstance(node, SequenceCondition):
                for step in (node.did, node.then, node.then_not):
                    if step is not None:  # B may follow A up to `within` later: all of it
                        yield step.event, step.message_type, Window()
            elif isinstance(node, ComputedTraitCondition):
                trait = strategy.computed_traits.get(node.computed)
                if trait is not None:
                    yield trait.event, trait.message_type, trait.window
            elif isinstance(node, SegmentRef) and node.segment not in seen:
                seen.add(node.segment)
                segment = strategy.segments.get(node.segment)
                if segment is not None:
                    stack.append(segment.condition)


def _events(
    store: EventStore,
    strategy: Strategy,
    condition: Condition,
    customer_ids: Sequence[int],
    *,
    now: datetime,
) -> list[dict[str, Any]]:
    starts: dict[tuple[str, str], datetime | None] = {}
    for name, kind, window in _windows(strategy, condition):
        start, _ = window_bounds(window, as_of=now)
        if (name, kind) in starts:
            known = starts[(name, kind)]
            start = None if known is None or start is None else min(known, start)
        starts[(name, kind)] = start
    found: list[dict[str, Any]] = []
    for (name, kind), start in starts.items():
        table = store.events_of(
            customer_ids=customer_ids, name=name, kind=kind, start=start, end=now
        )
        for row in table.to_pylist():
            text = row["properties"]
            row["properties"] = orjson.loads(text) if isinstance(text, str) and text else {}
            found.append(row)
    return found
