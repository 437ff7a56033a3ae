"""Experiments read from a workspace's stores: every journey's holdout, every split step
and every A/B template variant not already chosen by a split.

The unit is a journey run. Per run: its arm, whether it converted (the journey's goal within
its window, as the journeys recorded it), the revenue of the goal event that converted it
(its `revenue` property, from the event store), and the guardrails — whether the customer
unsubscribed or complained between entry and the end of the goal window (message events;
none stored yet counts zero). Daily looks (cumulative counts at the end of each day) feed the
sequential test, which any of those days could have been decided on.

Assignment is per customer (sticky), the unit is the run: a journey customers re-enter often
gives correlated units and somewhat narrow intervals; the sample-ratio check counts customers.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
from sqlalchemy import Connection, Engine, func, select

from orbita.analytics.experiments.results import (
    DEFAULT_BURN_IN,
    DEFAULT_MIXING_VARIANCE,
    ArmData,
    ExperimentResult,
    analyze,
)
from orbita.analytics.experiments.stats import (
    Interval,
    SequentialLook,
    proportion_looks,
    sequential_test,
)
from orbita.core.errors import NotFoundError
from orbita.model.journeys import Journey, SplitStep, journey_graph, parse_journey
from orbita.store.events import EventStore
from orbita.store.state import journey_conversions, journey_runs, journey_steps, journey_versions
from orbita.store.state import outbox as outbox_table

ExperimentKind = Literal["holdout", "split", "variant"]
# Message events (services/message_events.py names them) that count against a message.
UNSUBSCRIBE_EVENTS = ("Unsubscribed",)
COMPLAINT_EVENTS = (
    "Email Marked as Spam",
    "Email Complained",
    "SMS Marked as Spam",
    "Push Marked as Spam",
    "Telegram Marked as Spam",
)
CONTROL_NAMES = ("control", "holdout")
MAX_LOOKS = 400
_NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True, slots=True)
class ArmVariant:
    """Runs sent a variant, and how many of them converted."""

    runs: int
    converted: int


@dataclass(frozen=True, slots=True)
class TimelinePoint:
    """One arm against the control at the end of one day (ready to plot)."""

    at: datetime
    n: int
    estimate: float
    p_value: float  # always valid: the running minimum
    interval: Interval  # the confidence sequence so far


@dataclass(frozen=True, slots=True)
class Experiment:
    journey: str
    kind: ExperimentKind
    name: str  # "holdout", the split's node, or "variants"
    shares: tuple[float, ...] | None  # the configured split, in arm order
    looks: tuple[datetime, ...]
    result: ExperimentResult
    timeline: dict[str, tuple[TimelinePoint, ...]]  # per non-control arm


# --- queries shared with services/journey_stats ----------------------------------------------


def journey_names(connection: Connection) -> list[str]:
    query = select(journey_versions.c.journey).distinct().order_by(journey_versions.c.journey)
    return list(connection.execute(query).scalars())


def variant_counts(connection: Connection, name: str) -> dict[str, ArmVariant]:
    """Per A/B variant of a journey's sends: the runs sent it and how many converted."""
    rows = outbox_table.c
    query = (
        select(
            rows.variant,
            func.count(rows.run_id.distinct()),
            func.count(journey_conversions.c.run_id.distinct()),
        )
        .select_from(
            outbox_table.outerjoin(journey_conversions, journey_conversions.c.run_id == rows.run_id)
        )
        .where(rows.journey == name, rows.kind == "send", rows.variant.is_not(None))
        .group_by(rows.variant)
        .order_by(rows.variant)
    )
    return {
        variant: ArmVariant(runs=int(runs), converted=int(converted))
        for variant, runs, converted in connection.execute(query)
    }


# --- experiments -------------------------------------------------------------------------------


def read_experiments(
    *,
    state: Engine,
    events: EventStore,
    journeys: Sequence[str] | None = None,
    now: datetime | None = None,
    alpha: float = 0.05,
    mixing_variance: float = DEFAULT_MIXING_VARIANCE,
    burn_in: int = DEFAULT_BURN_IN,
    revenue_property: str = "revenue",
) -> list[Experiment]:
    """Every experiment of the published journeys (or `journeys`, each of which must exist),
    measured up to `now` (default: the journeys' latest activity)."""
    with state.connect() as connection:
        known = journey_names(connection)
        for name in journeys or ():
            if name not in known:
                listed = ", ".join(known) or "none is published: run `orbita apply FILE`"
                raise NotFoundError(f"unknown journey {name!r} (known: {listed})")
        found: list[Experiment] = []
        # Guardrail events no one has sent yet need no query per journey.
        present = set(events.counts_by_name())
        for name in journeys or known:
            facts = _read_runs(
                connection, events, name, now=now, revenue=revenue_property, present=present
            )
            if facts is None:
                continue
            found.extend(
                _experiments_of(
                    connection,
                    facts,
                    alpha=alpha,
                    mixing_variance=mixing_variance,
                    burn_in=burn_in,
                )
            )
    return found


@dataclass(frozen=True, slots=True)
class _Runs:
    journey: str
    definition: Journey
    now: datetime
    run_ids: list[str]
    customer: npt.NDArray[np.int64]
    holdout: npt.NDArray[np.bool_]
    entered: npt.NDArray[np.int64]  # µs since the epoch
    converted: npt.NDArray[np.int64]  # µs, or _NEVER
    revenue: npt.NDArray[np.float64]
    unsubscribed: npt.NDArray[np.bool_]
    complained: npt.NDArray[np.bool_]


def _micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def _read_runs(
    connection: Connection,
    events: EventStore,
    name: str,
    *,
    now: datetime | None,
    revenue: str,
    present: set[str],
) -> _Runs | None:
    definition_row = connection.execute(
        select(journey_versions.c.definition)
        .where(journey_versions.c.journey == name)
        .order_by(journey_versions.c.version.desc())
        .limit(1)
    ).scalar_one()
    definition = parse_journey(definition_row, name=name)
    runs, conversions = journey_runs.c, journey_conversions.c
    rows = connection.execute(
        select(
            runs.run_id,
            runs.customer_id,
            runs.holdout,
            runs.entered_at,
            runs.updated_at,
            conversions.at,
            conversions.message_id,
        )
        .select_from(journey_runs.outerjoin(journey_conversions, conversions.run_id == runs.run_id))
        .where(runs.journey == name)
        .order_by(runs.entered_at, runs.run_id)
    ).all()
    if not rows:
        return None
    latest = max(max(r.updated_at, r.at or r.updated_at) for r in rows)
    until = now if now is not None else latest
    count = len(rows)
    customer = np.fromiter((r.customer_id for r in rows), dtype=np.int64, count=count)
    entered = np.fromiter((_micros(r.entered_at) for r in rows), dtype=np.int64, count=count)
    converted = np.fromiter(
        (_micros(r.at) if r.at is not None else _NEVER for r in rows), dtype=np.int64, count=count
    )
    converted = np.where(converted <= _micros(until), converted, _NEVER)
    values = np.zeros(count, dtype=np.float64)
    goal = definition.goal
    converting = {r.message_id: i for i, r in enumerate(rows) if r.at is not None}
    if goal is not None and converting:
        times = [r.at for r in rows if r.at is not None]
        table = events.events_of(
            customer_ids=sorted({int(r.customer_id) for r in rows if r.at is not None}),
            name=goal.event,
            kind=goal.message_type,
            start=min(times) - timedelta(seconds=1),
            end=max(times) + timedelta(seconds=1),
        )
        for message_id, properties in zip(
            table.column("message_id").to_pylist(),
            table.column("properties").to_pylist(),
            strict=True,
        ):
            index = converting.get(message_id)
            if index is not None and properties:
                values[index] = _number(orjson.loads(properties).get(revenue))
    window = int(goal.within.total_seconds() * 1_000_000) if goal is not None else None
    start = min(r.entered_at for r in rows) - timedelta(seconds=1)
    guard = {
        label: _any_event_in_window(
            events,
            [n for n in names if n in present],
            customer=customer,
            entered=entered,
            window=window,
            start=start,
            until=until,
        )
        for label, names in (("unsubscribed", UNSUBSCRIBE_EVENTS), ("complained", COMPLAINT_EVENTS))
    }
    return _Runs(
        journey=name,
        definition=definition,
        now=until,
        run_ids=[r.run_id for r in rows],
        customer=customer,
        holdout=np.fromiter((bool(r.holdout) for r in rows), dtype=np.bool_, count=count),
        entered=entered,
        converted=converted,
        revenue=values,
        unsubscribed=guard["unsubscribed"],
        complained=guard["complained"],
    )


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return 0.0
    try:
        number = float(value)
    except ValueError:
        return 0.0
    return number if math.isfinite(number) else 0.0


def _any_event_in_window(
    events: EventStore,
    names: Sequence[str],
    *,
    customer: npt.NDArray[np.int64],
    entered: npt.NDArray[np.int64],
    window: int | None,
    start: datetime,
    until: datetime,
) -> npt.NDArray[np.bool_]:
    """Per run: whether the customer had one of these events from entry to the end of the
    goal window (to `until` without a goal)."""
    found = np.zeros(customer.size, dtype=np.bool_)
    if not names:
        return found
    people = sorted(set(customer.tolist()))
    stamps: dict[int, list[int]] = defaultdict(list)
    for name in names:
        table = events.events_of(
            customer_ids=people, name=name, kind="track", start=start, end=until
        )
        if table.num_rows == 0:
            continue
        ids = table.column("customer_id").to_numpy()
        times = table.column("timestamp").cast(pa.int64()).to_numpy()
        for who, at in zip(ids.tolist(), times.tolist(), strict=True):
            stamps[who].append(at)
    if not stamps:
        return found
    end = _micros(until)
    for index, (who, at) in enumerate(zip(customer.tolist(), entered.tolist(), strict=True)):
        moments = stamps.get(who)
        if moments:
            stop = min(at + window, end) if window is not None else end
            found[index] = any(at <= moment <= stop for moment in moments)
    return found


def _experiments_of(
    connection: Connection, runs: _Runs, *, alpha: float, mixing_variance: float, burn_in: int
) -> list[Experiment]:
    def measure(
        kind: ExperimentKind,
        name: str,
        arm_of: npt.NDArray[np.int64],
        names: Sequence[str],
        shares: Sequence[float] | None,
    ) -> Experiment:
        control = next((n for n in names if n in CONTROL_NAMES), names[0])
        return _measure(
            runs,
            kind=kind,
            name=name,
            arm_of=arm_of,
            names=names,
            shares=shares,
            control=control,
            alpha=alpha,
            mixing_variance=mixing_variance,
            burn_in=burn_in,
        )

    found: list[Experiment] = []
    held = runs.definition.holdout
    if held > 0 or bool(runs.holdout.any()):
        arm_of = np.where(runs.holdout, 0, 1).astype(np.int64)
        found.append(
            measure("holdout", "holdout", arm_of, ["holdout", "treatment"], [held, 1 - held])
        )
    graph, _problems = journey_graph(runs.definition)
    splits = {
        node_id: node.step
        for node_id, node in graph.nodes.items()
        if isinstance(node.step, SplitStep)
    }
    index_of = {run_id: i for i, run_id in enumerate(runs.run_ids)}
    split_arms: set[str] = set()
    if splits:
        edges: dict[str, dict[str, str]] = defaultdict(dict)
        steps = journey_steps.c
        for run_id, node, edge in connection.execute(
            select(steps.run_id, steps.node, steps.edge).where(
                steps.journey == runs.journey, steps.node.in_(sorted(splits))
            )
        ):
            edges[node].setdefault(run_id, edge)
        for node_id, step in splits.items():
            names = [arm.name for arm in step.arms]
            split_arms.update(names)
            arm_of = np.full(len(runs.run_ids), -1, dtype=np.int64)
            for run_id, edge in edges[node_id].items():
                index = index_of.get(run_id)
                if index is not None and edge in names and not runs.holdout[index]:
                    arm_of[index] = names.index(edge)
            found.append(measure("split", node_id, arm_of, names, [a.percent for a in step.arms]))
    variants = variant_counts(connection, runs.journey)
    if len(variants) >= 2 and not set(variants) <= split_arms:
        names = sorted(variants)
        arm_of = np.full(len(runs.run_ids), -1, dtype=np.int64)
        rows = outbox_table.c
        for run_id, variant in connection.execute(
            select(rows.run_id, rows.variant)
            .where(rows.journey == runs.journey, rows.kind == "send", rows.variant.is_not(None))
            .order_by(rows.outbox_id)
        ):
            index = index_of.get(run_id)
            if index is not None and arm_of[index] < 0:
                arm_of[index] = names.index(variant)
        # Variants named on send steps are not assigned at random: no split to check against.
        found.append(measure("variant", "variants", arm_of, names, None))
    return found


def _measure(
    runs: _Runs,
    *,
    kind: ExperimentKind,
    name: str,
    arm_of: npt.NDArray[np.int64],
    names: Sequence[str],
    shares: Sequence[float] | None,
    control: str,
    alpha: float,
    mixing_variance: float,
    burn_in: int,
) -> Experiment:
    masks = [arm_of == i for i in range(len(names))]
    totals = [
        ArmData(
            name=arm,
            n=int(mask.sum()),
            conversions=int((runs.converted[mask] != _NEVER).sum()),
            revenue=float(runs.revenue[mask].sum()),
            revenue_squares=float((runs.revenue[mask] ** 2).sum()),
            unsubscribes=int(runs.unsubscribed[mask].sum()),
            complaints=int(runs.complained[mask].sum()),
            customers=int(np.unique(runs.customer[mask]).size),
        )
        for arm, mask in zip(names, masks, strict=True)
    ]
    looks = _look_times(runs, arm_of)
    per_arm = [
        _arm_history(runs, arm, mask, looks[:-1]) for arm, mask in zip(names, masks, strict=True)
    ]
    history = [list(look) for look in zip(*per_arm, strict=True)] if len(looks) > 1 else []
    result = analyze(
        totals,
        control=control,
        shares=shares,
        looks=history,
        alpha=alpha,
        mixing_variance=mixing_variance,
        burn_in=burn_in,
    )
    timeline: dict[str, tuple[TimelinePoint, ...]] = {}
    base = names.index(control)
    full = [*history, totals]
    for i, arm in enumerate(names):
        if i == base:
            continue
        sequence: list[SequentialLook] = sequential_test(
            proportion_looks(
                [look[base].conversions for look in full],
                [look[base].n for look in full],
                [look[i].conversions for look in full],
                [look[i].n for look in full],
            ),
            mixing_variance=mixing_variance,
            alpha=alpha,
            burn_in=burn_in,
        )
        timeline[arm] = tuple(
            TimelinePoint(
                at=datetime.fromtimestamp(at / 1_000_000, tz=UTC),
                n=point.n,
                estimate=point.estimate,
                p_value=point.p_value,
                interval=point.interval,
            )
            for at, point in zip(looks, sequence, strict=True)
        )
    return Experiment(
        journey=runs.journey,
        kind=kind,
        name=name,
        shares=tuple(shares) if shares is not None else None,
        looks=tuple(datetime.fromtimestamp(at / 1_000_000, tz=UTC) for at in looks),
        result=result,
        timeline=timeline,
    )


def _look_times(runs: _Runs, arm_of: npt.NDArray[np.int64]) -> list[int]:
    """The end of each day (UTC) from the first entry on, the last look at `now`; at most
    MAX_LOOKS of them (evenly spaced days beyond that: a subset of looks stays valid)."""
    end = _micros(runs.now)
    entered = runs.entered[arm_of >= 0]
    if entered.size == 0:
        return [end]
    day = 86_400_000_000
    first = (int(entered.min()) // day + 1) * day
    days = list(range(first, end, day))
    if len(days) >= MAX_LOOKS:
        step = math.ceil(len(days) / (MAX_LOOKS - 1))
        days = days[::step]
    return [*days, end]


def _arm_history(
    runs: _Runs, arm: str, mask: npt.NDArray[np.bool_], looks: Sequence[int]
) -> list[ArmData]:
    """The arm's cumulative counts at each look (a conversion comes after its entry, and its
    revenue with it)."""
    at = np.asarray(looks, dtype=np.int64)
    entered = np.sort(runs.entered[mask])
    converted = runs.converted[mask]
    order = np.argsort(converted, kind="stable")
    times, revenue = converted[order], runs.revenue[mask][order]
    sums = np.concatenate(([0.0], np.cumsum(revenue)))
    squares = np.concatenate(([0.0], np.cumsum(revenue**2)))
    n = np.searchsorted(entered, at, side="right")
    x = np.searchsorted(times, at, side="right")
    return [
        ArmData(
            name=arm,
            n=int(n[k]),
            conversions=int(x[k]),
            revenue=float(sums[x[k]]),
            revenue_squares=float(squares[x[k]]),
        )
        for k in range(at.size)
    ]
