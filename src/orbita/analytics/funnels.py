"""Funnels: how many customers complete ordered steps within a conversion window, the
conversion from the previous and the first step, and the median time between steps.

Definitions (the pure-Python reference in tests/analytics/test_funnels_reference.py follows
them word for word):

- **Event order.** A customer's funnel events (events matching any step) are ordered by
  time; events at the same instant by the first funnel step they match, then by message
  id. So a click and a purchase stamped with the same second count in the funnel's order,
  and the order is the same on every engine.
- **Attempts.** Every event matching the first step inside [start, end) starts an attempt;
  the conversion window (`within`) runs from it, inclusive at its end. Later steps may fall
  after `end` as long as they are inside the window.
- **Loose order** (Amplitude's "this order", Mixpanel's default "in order"): each step is
  the earliest event matching it after the previous step's event, other events allowed in
  between. Taking the earliest is never worse than waiting for a later one.
- **Strict order**: each step must be the very next of the funnel's events after the
  previous step's — no event matching any step of the funnel in between. Amplitude's
  "exact order" forbids any event at all in between; counting only the funnel's own events
  keeps strict funnels meaningful in a CRM store, where page views and message events
  interleave with everything.
- **Each event completes at most one step** of an attempt, so repeated steps (first
  purchase, then repeat) need as many events.
- **A customer counts once**, at the deepest step any of their attempts reached; the times
  between steps are that attempt's (the first in the event order of the deepest).
- **Breakdown** by `trait:NAME` (the profile at the last segment refresh), `segment:a,b`
  (the first listed segment the customer is in now, else `(other)`) or `stage` (their
  lifecycle stage now, else `(none)`).

Computed in one pass of window functions over the funnel's events: each event's position in
the order and, per step, the position and time of the next event matching that step (loose:
MIN over the following rows; strict: LEAD). Attempts then follow those pointers with one
equi-join per step — no self-join of events on time ranges. DuckDB and PostgreSQL alike.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import ibis

from orbita.analytics.periods import Expr, Source, source_of, timestamp, utc
from orbita.core.errors import NotFoundError, UserError
from orbita.engine.segments.compile import property_filters
from orbita.engine.segments.json_access import json_access
from orbita.engine.segments.tables import PROFILE_TEXT
from orbita.model.funnels import BREAKDOWN_HINT, Funnel, check_breakdown
from orbita.model.strategy import Strategy
from orbita.store.events.base import EventStore

ALL = ""  # the key of the whole funnel, beside the breakdown's groups
OTHER = "(other)"
NONE = "(none)"
STAGE_PREFIX = "stage:"


@dataclass(frozen=True, slots=True)
class FunnelStepRow:
    """One step of one group: a tidy row. Rates are None when the step before had nobody."""

    funnel: str
    group: str
    step: int  # 1-based
    name: str
    customers: int
    from_previous: float | None
    from_first: float | None
    median_seconds: float | None  # from the previous step (None for the first)


@dataclass(frozen=True, slots=True)
class FunnelResult:
    name: str
    order: str
    within_seconds: float
    start: datetime
    end: datetime
    breakdown: str | None
    steps: tuple[str, ...]
    rows: tuple[FunnelStepRow, ...]


def funnel_of(strategy: Strategy, name: str) -> Funnel:
    found = strategy.funnels.get(name)
    if found is None:
        known = ", ".join(sorted(strategy.funnels)) or "none is defined in the strategy"
        raise NotFoundError(f"funnel: unknown funnel {name!r} (known: {known})")
    return found


def compute_funnel(
    *,
    events: EventStore,
    funnel: Funnel,
    name: str,
    start: datetime,
    end: datetime,
    breakdown: str | None = None,
) -> FunnelResult:
    """The funnel over attempts started in [start, end); `breakdown` overrides the funnel's."""
    start, end = utc(start, field="start"), utc(end, field="end")
    if end <= start:
        raise UserError("end: must come after start")
    by = breakdown if breakdown is not None else funnel.by
    if by is not None:
        try:
            check_breakdown(by)
        except ValueError:
            raise UserError(f"by: {by!r} is not a breakdown ({BREAKDOWN_HINT})") from None
    source = source_of(events)
    per_customer = _customer_depths(source, funnel, start=start, end=end)
    n = len(funnel.steps)
    groups: list[tuple[str | None, Expr]] = [(ALL, per_customer)]
    if by is not None:
        labelled = per_customer.left_join(_labels(source, by), "customer_id")
        groups.append((None, labelled.mutate(group=labelled.group.fill_null(_unlabelled(by)))))
    rows: list[FunnelStepRow] = []
    labels = tuple(step.label for step in funnel.steps)
    for key, table in groups:
        aggregates: dict[str, Expr] = {}
        for k in range(1, n + 1):
            aggregates[f"c{k}"] = _count_of(table.depth >= k)
            if k > 1:
                aggregates[f"m{k}"] = table[f"d{k}"].median()
        expr = (
            table.aggregate(**aggregates)
            if key is not None
            else table.group_by("group").aggregate(**aggregates)
        )
        for found in source.rows(expr):
            group = key if key is not None else str(found["group"])
            rows += _step_rows(name, group, labels, found)
    rows.sort(key=lambda r: (r.group != ALL, r.group, r.step))
    return FunnelResult(
        name=name,
        order=funnel.order,
        within_seconds=funnel.within.total_seconds(),
        start=start,
        end=end,
        breakdown=by,
        steps=labels,
        rows=tuple(rows),
    )


def _step_rows(
    name: str, group: str, labels: Sequence[str], found: Mapping[str, Any]
) -> list[FunnelStepRow]:
    counts = [int(found[f"c{k}"] or 0) for k in range(1, len(labels) + 1)]
    rows = []
    for index, label in enumerate(labels):
        previous = counts[index - 1] if index else None
        median = found.get(f"m{index + 1}") if index else None
        rows.append(
            FunnelStepRow(
                funnel=name,
                group=group,
                step=index + 1,
                name=label,
                customers=counts[index],
                from_previous=(counts[index] / previous if previous else None),
                from_first=(counts[index] / counts[0] if counts[0] and index else None)
                if index
                else (1.0 if counts[0] else None),
                median_seconds=None if median is None else float(median),
            )
        )
    return rows


def _customer_depths(source: Source, funnel: Funnel, *, start: datetime, end: datetime) -> Expr:
    """One row per customer with an attempt: depth (steps reached) and d2..dn, the seconds
    from the previous step of their deepest (earliest such) attempt."""
    events = source.tables.events
    steps = funnel.steps
    n = len(steps)
    horizon = end + funnel.within
    matches = [
        ibis.and_(
            events.type == step.message_type,
            events.name == step.event,
            *property_filters(step.where, events, dialect=source.dialect, as_of=end),
        )
        for step in steps
    ]
    names = sorted({step.event for step in steps})
    scoped = events.filter(
        events.name.isin(names),
        events.timestamp >= timestamp(start),
        events.timestamp <= timestamp(horizon),
    )
    flagged = scoped.select(
        "customer_id",
        "message_id",
        "timestamp",
        **{f"s{k}": matches[k - 1].fill_null(False) for k in range(1, n + 1)},
    )
    funnel_events = flagged.filter(ibis.or_(*[flagged[f"s{k}"] for k in range(1, n + 1)]))
    rank = ibis.literal(n + 1)
    for k in range(n, 0, -1):  # the first step the event matches
        rank = ibis.ifelse(funnel_events[f"s{k}"], k, rank)
    ranked = funnel_events.mutate(rank=rank)
    ordered = ranked.mutate(
        pos=ibis.row_number().over(
            group_by=ranked.customer_id,
            order_by=[ranked.timestamp, ranked["rank"], ranked.message_id],
        )
    )
    pointers = _pointers(ordered, n=n, strict=funnel.order == "strict")
    attempts = pointers.filter(
        pointers.s1, pointers.timestamp >= timestamp(start), pointers.timestamp < timestamp(end)
    )
    chain = attempts.select(
        "customer_id",
        p1=attempts.pos,
        t1=attempts.timestamp,
        **({"p2": attempts.n2, "t2": attempts.nt2} if n > 1 else {}),
    )
    for k in range(3, n + 1):
        hop = pointers.select(
            hop_customer=pointers.customer_id,
            hop_pos=pointers.pos,
            **{f"p{k}": pointers[f"n{k}"], f"t{k}": pointers[f"nt{k}"]},
        )
        chain = chain.left_join(
            hop,
            [chain.customer_id == hop.hop_customer, chain[f"p{k - 1}"] == hop.hop_pos],
        ).drop("hop_customer", "hop_pos")
    deadline = chain.t1 + ibis.interval(seconds=int(funnel.within.total_seconds()))
    depth: Expr = ibis.literal(1)
    for k in range(2, n + 1):
        # Times along a chain only grow: the step is reached when its time is in the window.
        reached = chain[f"t{k}"].notnull() & (chain[f"t{k}"] <= deadline)
        depth = depth + ibis.ifelse(reached, 1, 0)
    scored = chain.mutate(depth=depth)
    best = scored.mutate(
        choice=ibis.row_number().over(
            group_by=scored.customer_id, order_by=[ibis.desc(scored.depth), scored.p1]
        )
    )
    best = best.filter(best.choice == 0)
    seconds: dict[str, Expr] = {}
    for k in range(2, n + 1):
        gap = best[f"t{k}"].epoch_seconds() - best[f"t{k - 1}"].epoch_seconds()
        seconds[f"d{k}"] = ibis.ifelse(best.depth >= k, gap, None).cast("float64")
    return best.select("customer_id", "depth", **seconds)


def _count_of(condition: Expr) -> Expr:
    # PostgreSQL casts no boolean to a number: count the rows where it holds.
    return ibis.ifelse(condition, 1, 0).sum()


def _pointers(ordered: Expr, *, n: int, strict: bool) -> Expr:
    """Per funnel event and step k >= 2: nk, ntk, the position and time of the next event
    that completes step k after this one (NULL: none)."""
    columns: dict[str, Expr] = {}
    if strict:
        window = ibis.window(group_by=ordered.customer_id, order_by=ordered.pos)
        for k in range(2, n + 1):
            following = ordered[f"s{k}"].lead().over(window)
            columns[f"n{k}"] = ibis.ifelse(following, ordered.pos.lead().over(window), None)
            columns[f"nt{k}"] = ibis.ifelse(following, ordered.timestamp.lead().over(window), None)
    else:
        after = ibis.window(group_by=ordered.customer_id, order_by=ordered.pos, rows=(1, None))
        for k in range(2, n + 1):
            flag = ordered[f"s{k}"]
            columns[f"n{k}"] = ibis.ifelse(flag, ordered.pos, None).min().over(after)
            columns[f"nt{k}"] = ibis.ifelse(flag, ordered.timestamp, None).min().over(after)
    return ordered.mutate(**columns)


def _labels(source: Source, by: str) -> Expr:
    """customer_id -> group, for a breakdown."""
    if by.startswith("trait:"):
        trait = by.removeprefix("trait:")
        customers = source.tables.customers
        if trait in PROFILE_TEXT:
            value = customers[trait]
        else:
            access = json_access(source.dialect)
            value = access.text(customers.traits, trait).coalesce(
                access.number(customers.traits, trait).cast("string"),
                access.boolean(customers.traits, trait).cast("string"),
            )
        return customers.select("customer_id", group=value)
    members = ibis.table({"segment": "string", "customer_id": "int64"}, name="segment_members")
    if by == "stage":
        staged = members.filter(members.segment.startswith(STAGE_PREFIX))
        labelled = staged.select(
            "customer_id", group=staged.segment.substr(len(STAGE_PREFIX)), rank=ibis.literal(0)
        )
    else:
        names = by.removeprefix("segment:").split(",")
        chosen = members.filter(members.segment.isin(names))
        rank: Expr = ibis.literal(len(names))
        for index in range(len(names) - 1, -1, -1):
            rank = ibis.ifelse(chosen.segment == names[index], index, rank)
        labelled = chosen.select("customer_id", group=chosen.segment, rank=rank)
    first = labelled.mutate(
        pick=ibis.row_number().over(group_by=labelled.customer_id, order_by=labelled["rank"])
    )
    return first.filter(first.pick == 0).select("customer_id", "group")


def _unlabelled(by: str) -> str:
    return OTHER if by.startswith("segment:") else NONE


_SEGMENT_LIST = re.compile(r"^segment:(.+)$")


def check_breakdown_segments(strategy: Strategy, by: str | None) -> None:
    """A `segment:` breakdown must name segments of the strategy."""
    found = _SEGMENT_LIST.match(by or "")
    for name in found.group(1).split(",") if found else []:
        if name not in strategy.segments:
            known = ", ".join(sorted(strategy.segments)) or "none is defined"
            raise UserError(f"by: unknown segment {name!r} (known: {known})")
