"""Broadcasts: one message to a whole audience at a set time, sent through the outbox.

    send_broadcast      resolve the audience now (one segment query: exclusions included),
                        assign holdout and variants (sticky, as journey splits), and write
                        an outbox row per customer with the time it may go (`not_before`:
                        local time per zone, throttle spacing); the sender does the rest,
                        with consent, suppression, caps and quiet hours as for any message
    broadcasts_due      what a worker pass calls: scheduled and recurring occurrences that
                        are due, A/B decisions that are due, occurrences that are finished
    pause / resume / cancel, plan (a dry run), list, show, report

An occurrence is a row of `broadcasts`; its recipients are outbox rows with the run id
`broadcast:<id>` (the A/B test's rest: `broadcast:<id>:rest`, held as `waiting` until the
decision), the arm in `node`, and the key `b<id>:<customer>`: unique, so a restarted send
writes nobody twice and the sender sends nobody twice. Holdout customers get a row of kind
`holdout` that never leaves the outbox, timed as their message would have been, so the
report measures them the same way. Pausing sets the queued rows `paused` (the sender only
claims `queued` ones); resuming sets them back; cancelling makes every unsent row
`cancelled`.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import Connection, case, func, insert, select, update

from orbita.analytics.experiments import ArmData, analyze, winner
from orbita.core.errors import NotFoundError, UserError
from orbita.engine.journeys.predicates import compile_where
from orbita.engine.journeys.run import bucket
from orbita.engine.journeys.times import local_instant, next_cron_time
from orbita.engine.segments.compile import compile_segment
from orbita.engine.segments.tables import segment_tables
from orbita.model.broadcasts import HOLDOUT_ARM, AtSchedule, Broadcast, CronSchedule
from orbita.model.segments import Segment
from orbita.model.strategy import Strategy
from orbita.services.apply import applied_strategy
from orbita.services.delivery import (
    Delivery,
    _Caps,
    _profiles,
    _suppression_and_consent,
    preview_message,
    send_rules,
)
from orbita.services.segments import (
    _dialect,
    materialise_rfm,
    sync_customer_snapshot,
    uses_rfm,
)
from orbita.services.send_rules import blocked_by_rules
from orbita.services.templates import compile_templates
from orbita.services.workspace import Workspace, read_value, write_value
from orbita.store.state import broadcasts, customers, outbox

State = Literal["scheduled", "sending", "paused", "cancelled", "done"]
RUN_PREFIX = "broadcast:"
DUE_KEY = "broadcasts"
# A first pass looks back this far for occurrences it should not miss (as work.py does).
FIRST_LOOK_BACK = timedelta(minutes=5)
# The first zone to reach a wall-clock time (UTC+14): a local-time occurrence starts then.
EARLIEST_ZONE = ZoneInfo("Etc/GMT-14")
WRITE_CHUNK = 100_000
# Outbox statuses of a recipient not sent yet, by who holds it.
UNSENT = ("queued", "paused", "waiting")
IN_FLIGHT = ("sending", "committing")
MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class Occurrence:
    broadcast_id: int
    name: str
    occurrence: str
    scheduled_at: datetime
    state: str
    broadcast: Broadcast
    audience: int | None
    written_at: datetime | None
    decide_at: datetime | None
    decision: Mapping[str, Any] | None
    created_at: datetime

    @property
    def run_id(self) -> str:
        return f"{RUN_PREFIX}{self.broadcast_id}"

    @property
    def rest_run_id(self) -> str:
        return f"{RUN_PREFIX}{self.broadcast_id}:rest"

    @property
    def run_ids(self) -> tuple[str, str]:
        return (self.run_id, self.rest_run_id)

    def summary(self) -> dict[str, Any]:
        return {
            "broadcast_id": self.broadcast_id,
            "name": self.name,
            "occurrence": self.occurrence,
            "scheduled_at": self.scheduled_at.isoformat(),
            "state": self.state,
            "audience": self.audience,
            "written_at": self.written_at.isoformat() if self.written_at else None,
            "decide_at": self.decide_at.isoformat() if self.decide_at else None,
            "decision": dict(self.decision) if self.decision else None,
        }


@dataclass(frozen=True, slots=True)
class SendReport:
    occurrence: Occurrence
    audience: int
    written: int  # outbox rows this call wrote (0 when another call had written them)
    holdout: int
    sample: int  # the A/B test's sample (everyone else when there is no test)
    rest: int  # waiting for the A/B decision
    by_arm: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class DueReport:
    sent: tuple[str, ...] = ()  # occurrences written: "name@occurrence"
    decided: tuple[str, ...] = ()
    finished: tuple[str, ...] = ()


def journey_name(name: str) -> str:
    """What the outbox's `journey` column holds for a broadcast's messages."""
    return f"{RUN_PREFIX}{name}"


def _broadcast(strategy: Strategy, name: str) -> Broadcast:
    found = strategy.broadcasts.get(name)
    if found is None:
        known = ", ".join(sorted(strategy.broadcasts)) or "none"
        raise NotFoundError(f"no broadcast {name!r} in the strategy (broadcasts: {known})")
    return found


# --- schedule ------------------------------------------------------------------------------


def _zone_of(broadcast: Broadcast, strategy: Strategy) -> str:
    schedule = broadcast.schedule
    if schedule is not None and schedule.timezone is not None:
        return schedule.timezone
    return strategy.timezone


def _local(broadcast: Broadcast) -> bool:
    return broadcast.schedule is not None and broadcast.schedule.local_time


def _wall_key(wall: datetime) -> str:
    return wall.replace(tzinfo=None).isoformat(timespec="minutes")


def _first_moment(broadcast: Broadcast, strategy: Strategy, wall: datetime) -> datetime:
    """When an occurrence at wall-clock `wall` starts: then in its zone, or for local time
    when the first zone reaches it."""
    if wall.tzinfo is not None:
        return wall.astimezone(UTC)
    where = EARLIEST_ZONE if _local(broadcast) else ZoneInfo(_zone_of(broadcast, strategy))
    return local_instant(wall.date(), wall.time(), where)


def _due_walls(
    broadcast: Broadcast, strategy: Strategy, *, after: datetime, until: datetime
) -> Iterator[datetime]:
    """Wall-clock times of the occurrences that start in (after, until]."""
    schedule = broadcast.schedule
    if isinstance(schedule, AtSchedule):
        if after < _first_moment(broadcast, strategy, schedule.at) <= until:
            yield schedule.at
    elif isinstance(schedule, CronSchedule):
        zone = "Etc/GMT-14" if schedule.local_time else _zone_of(broadcast, strategy)
        where = ZoneInfo(zone)
        moment = next_cron_time(schedule.cron, after=after, timezone=zone)
        while moment <= until:
            yield moment.astimezone(where).replace(tzinfo=None)
            moment = next_cron_time(schedule.cron, after=moment, timezone=zone)


def _default_wall(broadcast: Broadcast, strategy: Strategy, now: datetime) -> datetime | None:
    """The occurrence `send` means: the one-off's `at`; None (now) for a cron or none."""
    if isinstance(broadcast.schedule, AtSchedule):
        return broadcast.schedule.at
    return None


# --- occurrences ---------------------------------------------------------------------------


def _occurrence(row: Any) -> Occurrence:
    return Occurrence(
        broadcast_id=int(row.broadcast_id),
        name=row.name,
        occurrence=row.occurrence,
        scheduled_at=row.scheduled_at,
        state=row.state,
        broadcast=Broadcast.model_validate(row.definition["broadcast"]),
        audience=row.audience,
        written_at=row.written_at,
        decide_at=row.decide_at,
        decision=row.decision,
        created_at=row.created_at,
    )


def occurrences(*, workspace: Workspace, name: str | None = None) -> list[Occurrence]:
    """Occurrences, newest first (of one broadcast when `name` is given)."""
    query = select(broadcasts).order_by(broadcasts.c.broadcast_id.desc())
    if name is not None:
        query = query.where(broadcasts.c.name == name)
    with workspace.state.connect() as connection:
        return [_occurrence(row) for row in connection.execute(query)]


def find_occurrence(
    *, workspace: Workspace, name: str, occurrence: str | None = None
) -> Occurrence:
    """One occurrence of a broadcast: the named one, else the newest."""
    found = occurrences(workspace=workspace, name=name)
    if occurrence is not None:
        found = [
            o for o in found if o.occurrence == occurrence or str(o.broadcast_id) == occurrence
        ]
    if not found:
        which = f" occurrence {occurrence!r}" if occurrence else ""
        raise NotFoundError(f"broadcast {name!r}{which} was never sent")
    return found[0]


def _create(
    connection: Connection,
    *,
    name: str,
    key: str,
    scheduled_at: datetime,
    broadcast: Broadcast,
    version: int | None,
    now: datetime,
) -> None:
    values = {
        "name": name,
        "occurrence": key,
        "scheduled_at": scheduled_at,
        "state": "scheduled",
        "definition": {"broadcast": broadcast.model_dump(mode="json"), "version": version},
        "created_at": now,
        "updated_at": now,
    }
    statement = insert(broadcasts).values(**values)
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        statement = pg_insert(broadcasts).values(**values).on_conflict_do_nothing()
    else:
        statement = statement.prefix_with("OR IGNORE")
    connection.execute(statement)


def _load(connection: Connection, name: str, key: str) -> Occurrence:
    row = connection.execute(
        select(broadcasts).where(broadcasts.c.name == name, broadcasts.c.occurrence == key)
    ).one()
    return _occurrence(row)


def _set(connection: Connection, occurrence: Occurrence, *, now: datetime, **values: Any) -> None:
    connection.execute(
        update(broadcasts)
        .where(broadcasts.c.broadcast_id == occurrence.broadcast_id)
        .values(updated_at=now, **values)
    )


# --- the audience --------------------------------------------------------------------------


def audience_segment(broadcast: Broadcast) -> Segment:
    """The audience as one condition: the segment (or inline condition), not the exclusions."""
    audience = broadcast.audience
    include: dict[str, Any] = (
        {"segment": audience.segment}
        if audience.segment is not None
        else _condition_data(audience.condition)
    )
    if not audience.exclude:
        return Segment.model_validate(include)
    parts = [include, *({"not": {"segment": name}} for name in audience.exclude)]
    return Segment.model_validate({"all": parts})


def _condition_data(segment: Segment | None) -> dict[str, Any]:
    assert segment is not None
    data: dict[str, Any] = segment.model_dump(mode="json", by_alias=True)
    return data


def resolve_audience(
    *, workspace: Workspace, strategy: Strategy, broadcast: Broadcast, name: str, as_of: datetime
) -> tuple[np.ndarray, list[str | None]]:
    """The audience at `as_of`: customer ids (ascending, each once) and their time zones.

    One segment query on the event store; then only customers that still exist in the
    state store are kept (a profile merged into another is gone there: the survivor,
    who holds its events, is the one in the audience)."""
    sync_customer_snapshot(workspace=workspace, full=False)
    if uses_rfm(strategy):
        materialise_rfm(workspace=workspace, strategy=strategy, as_of=as_of)
    expr = compile_segment(
        audience_segment(broadcast),
        as_of=as_of,
        tables=segment_tables(_dialect(workspace)),
        segments=strategy.segments,
        computed_traits=strategy.computed_traits,
        name=journey_name(name),
    )
    found = workspace.events.ibis().to_pyarrow(expr.select("customer_id"))
    members = np.unique(np.asarray(found.column("customer_id").to_numpy(), dtype=np.int64))
    with workspace.state.connect() as connection:
        rows = connection.execute(
            select(customers.c.customer_id, customers.c.timezone).order_by(customers.c.customer_id)
        ).all()
    known = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    keep = np.isin(known, members, assume_unique=True)
    ids = known[keep]
    zones = [rows[int(i)][1] for i in np.flatnonzero(keep)]
    return ids, zones


# --- assignment and timing -----------------------------------------------------------------


@dataclass
class _Plan:
    """Who gets what, when: one entry per audience member."""

    ids: np.ndarray
    zones: list[str]
    holdout: np.ndarray  # bool
    arm: np.ndarray  # index into arms; -1 for the rest of an A/B test
    at: np.ndarray  # epoch seconds: when the message may go
    arms: list[str]
    decide_at: datetime | None
    by_zone: dict[str, int] = field(default_factory=dict)


def _assign(
    *,
    broadcast: Broadcast,
    strategy: Strategy,
    name: str,
    ids: np.ndarray,
    zones: Sequence[str | None],
    wall: datetime | None,
    now: datetime,
) -> _Plan:
    count = len(ids)
    arms = list(broadcast.arms())
    weights = np.array([v.weight for v in broadcast.arms().values()], dtype=float)
    bounds = np.cumsum(weights / weights.sum())
    bounds[-1] = 1.0  # rounding: the last arm takes what is left
    # Sticky per customer and broadcast, as journey holdouts and splits are.
    # One sticky number per customer and broadcast (as journey holdouts and splits):
    # below the holdout share, the holdout; the rest of the range, rescaled, picks the arm
    # (and the A/B test's sample), so it stays uniform for those who get the message.
    if broadcast.holdout > 0 or len(arms) > 1:
        drawn = np.fromiter(
            (bucket("broadcast", name, c) for c in ids.tolist()), dtype=float, count=count
        )
    else:
        drawn = np.ones(count, dtype=float)
    holdout = drawn < broadcast.holdout
    point = np.clip((drawn - broadcast.holdout) / (1.0 - broadcast.holdout), 0.0, 1.0 - 1e-12)
    test = broadcast.ab_test
    last_arm = len(arms) - 1
    if test is not None:
        chosen = np.minimum(np.searchsorted(bounds, point / test.sample, side="right"), last_arm)
        arm = np.where(point < test.sample, chosen, -1)
    else:
        arm = np.minimum(np.searchsorted(bounds, point, side="right"), last_arm)
    # When each may go: the occurrence's wall-clock time in each zone, not before now.
    default_zone = _zone_of(broadcast, strategy)
    local = _local(broadcast)
    filled = [(zone or default_zone) if local else default_zone for zone in zones]
    numbered: dict[str, int] = {}  # a few zones among many customers: no sort of strings
    index = np.fromiter(
        (numbered.setdefault(zone, len(numbered)) for zone in filled), dtype=np.int64, count=count
    )
    names = list(numbered)
    starts = np.array([_start(wall, zone, now).timestamp() for zone in names], dtype=float)
    base = starts[index] if count else np.zeros(0)
    at = base.copy()
    spacing = 60.0 / broadcast.throttle if broadcast.throttle else 0.0
    sending = ~holdout
    first = sending & (arm >= 0)
    at[first] = _throttled(base[first], spacing)
    decide_at: datetime | None = None
    if test is not None:
        last = float(at[first].max()) if first.any() else now.timestamp()
        decide_at = datetime.fromtimestamp(last, UTC) + test.wait
        rest = sending & (arm < 0)
        at[rest] = _throttled(np.maximum(base[rest], decide_at.timestamp()), spacing)
    per_zone = np.bincount(index[~holdout], minlength=len(names))
    by_zone = {zone: int(n) for zone, n in zip(names, per_zone, strict=True) if n}
    return _Plan(
        ids=ids,
        zones=filled,
        holdout=holdout,
        arm=arm,
        at=at,
        arms=arms,
        decide_at=decide_at,
        by_zone=by_zone,
    )


def _start(wall: datetime | None, zone: str, now: datetime) -> datetime:
    if wall is None:
        return now
    moment = (
        wall.astimezone(UTC)
        if wall.tzinfo is not None
        else local_instant(wall.date(), wall.time(), ZoneInfo(zone))
    )
    return max(moment, now)


def _throttled(base: np.ndarray, spacing: float) -> np.ndarray:
    """Send times at most one per `spacing` seconds, none before its own base time, in
    base-time order: t_i = max(base_i, t_(i-1) + spacing), computed without a loop as
    i * spacing + running max of (base_j - j * spacing)."""
    if not spacing or not len(base):
        return base
    order = np.argsort(base, kind="stable")
    steps = np.arange(len(base), dtype=float) * spacing
    timed = steps + np.maximum.accumulate(base[order] - steps)
    result = np.empty_like(base)
    result[order] = timed
    return result


# --- send ----------------------------------------------------------------------------------


def send_broadcast(
    *,
    workspace: Workspace,
    strategy: Strategy,
    name: str,
    now: datetime,
    wall: datetime | None = None,
    version: int | None = None,
) -> SendReport:
    """Write the recipients of an occurrence (the one-off's, or `wall`'s, or one now).

    Calling it again for the same occurrence writes nothing twice: it completes what an
    interrupted call left, or does nothing."""
    broadcast = _broadcast(strategy, name)
    if wall is None:
        wall = _default_wall(broadcast, strategy, now)
    key = _wall_key(wall) if wall is not None else f"{MANUAL} {_wall_key(now)}"
    if wall is None and broadcast.schedule is None:
        key = MANUAL  # a broadcast without a schedule is sent once
    scheduled_at = _first_moment(broadcast, strategy, wall) if wall is not None else now
    with workspace.state.begin() as connection:
        _create(
            connection,
            name=name,
            key=key,
            scheduled_at=scheduled_at,
            broadcast=broadcast,
            version=version,
            now=now,
        )
        occurrence = _load(connection, name, key)
    return _write_occurrence(
        workspace=workspace, strategy=strategy, occurrence=occurrence, wall=wall, now=now
    )


def _write_occurrence(
    *,
    workspace: Workspace,
    strategy: Strategy,
    occurrence: Occurrence,
    wall: datetime | None,
    now: datetime,
) -> SendReport:
    if occurrence.written_at is not None or occurrence.state == "cancelled":
        return _report_of(workspace, occurrence)
    broadcast = occurrence.broadcast
    ids, zones = resolve_audience(
        workspace=workspace, strategy=strategy, broadcast=broadcast, name=occurrence.name, as_of=now
    )
    plan = _assign(
        broadcast=broadcast,
        strategy=strategy,
        name=occurrence.name,
        ids=ids,
        zones=zones,
        wall=wall,
        now=now,
    )
    written = _write_rows(workspace, occurrence, strategy, plan, now=now)
    with workspace.state.begin() as connection:
        state = connection.execute(
            select(broadcasts.c.state).where(broadcasts.c.broadcast_id == occurrence.broadcast_id)
        ).scalar_one()
        _set(
            connection,
            occurrence,
            now=now,
            audience=len(ids),
            written_at=now,
            decide_at=plan.decide_at,
            state="sending" if state == "scheduled" else state,
        )
        # Paused or cancelled while the rows were written: the rows follow.
        if state == "paused":
            _move(connection, occurrence, ("queued",), "paused")
        elif state == "cancelled":
            _move(connection, occurrence, UNSENT, "cancelled")
        occurrence = _load(connection, occurrence.name, occurrence.occurrence)
    report = _report_of(workspace, occurrence)
    return SendReport(
        occurrence=occurrence,
        audience=report.audience,
        written=written,
        holdout=report.holdout,
        sample=report.sample,
        rest=report.rest,
        by_arm=report.by_arm,
    )


def _write_rows(
    workspace: Workspace, occurrence: Occurrence, strategy: Strategy, plan: _Plan, *, now: datetime
) -> int:
    broadcast = occurrence.broadcast
    variants = broadcast.arms()
    channels = {
        arm: broadcast.channel
        or (strategy.templates[v.template].channel if v.template in strategy.templates else None)
        for arm, v in variants.items()
    }
    journey = journey_name(occurrence.name)
    payload = {"broadcast": occurrence.name, "occurrence": occurrence.occurrence}
    bid = occurrence.broadcast_id
    paused = occurrence.state == "paused"
    # Per arm (and the rest, and the holdout): the columns that do not vary by customer.
    shapes: list[tuple[Any, ...]] = []
    for arm, chosen in variants.items():
        shapes.append(
            (
                occurrence.run_id,
                arm,
                "send",
                channels[arm],
                chosen.template,
                chosen.variant,
                "paused" if paused else "queued",
            )
        )
    rest_shape = (occurrence.rest_run_id, "rest", "send", None, None, None, "waiting")
    hold_shape = (occurrence.run_id, HOLDOUT_ARM, "holdout", None, None, None, "holdout")
    # Each row's shape: an arm's index, then the rest, then the holdout.
    shape_of = np.where(
        plan.holdout, len(shapes) + 1, np.where(plan.arm < 0, len(shapes), plan.arm)
    )
    every_shape = [*shapes, rest_shape, hold_shape]
    written = 0
    for start in range(0, len(plan.ids), WRITE_CHUNK):
        end = start + WRITE_CHUNK
        with workspace.state.begin() as connection:
            written += _insert_recipients(
                connection,
                key_prefix=f"b{bid}:",
                journey=journey,
                payload=payload,
                now=now,
                shapes=every_shape,
                customer_ids=plan.ids[start:end],
                shape_of=shape_of[start:end],
                at=plan.at[start:end],
            )
    return written


# The varying columns go to a staging table (customer, shape, time: three numbers per row);
# one INSERT ... SELECT joins the shapes' constant columns and builds the keys server-side.
# The generic bulk insert (services/journeys.py) converts and sends every column of every
# row, which for a broadcast's million near-identical rows was most of its time.
_STAGE = "orbita_broadcast_rows"
_INSERTED = (
    "idempotency_key, run_id, journey, customer_id, node, kind, channel, template, variant, "
    "payload, status, attempts, next_attempt_at, created_at, result"
)


def _insert_recipients(
    connection: Connection,
    *,
    key_prefix: str,
    journey: str,
    payload: Mapping[str, Any],
    now: datetime,
    shapes: Sequence[tuple[Any, ...]],
    customer_ids: np.ndarray,
    shape_of: np.ndarray,
    at: np.ndarray,
) -> int:
    """Write these recipients' outbox rows; a row whose key exists already is left as it is
    (a send completed after a crash). Returns how many rows were given."""
    cursor = connection.connection.cursor()
    postgres = connection.dialect.name == "postgresql"
    shape_rows = [(index, *shape) for index, shape in enumerate(shapes)]
    if postgres:
        cursor.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} "
            "(customer_id int8, shape int4, at float8) ON COMMIT DELETE ROWS"
        )
        lines = "".join(
            f"{c}\t{s}\t{t!r}\n"
            for c, s, t in zip(customer_ids.tolist(), shape_of.tolist(), at.tolist(), strict=True)
        )
        with cursor.copy(f"COPY {_STAGE} (customer_id, shape, at) FROM STDIN") as copy:
            copy.write(lines)
        values = ", ".join("(%s::int4, %s, %s, %s, %s, %s, %s, %s)" for _ in shape_rows)
        cursor.execute(
            f"INSERT INTO outbox ({_INSERTED}) "
            "SELECT %s || r.customer_id, s.run_id, %s, r.customer_id, s.node, s.kind, s.channel, "
            "s.template, s.variant, %s::jsonb, s.status, 0, to_timestamp(r.at), %s, "
            "'null'::jsonb "
            f"FROM {_STAGE} AS r JOIN (VALUES {values}) "
            "AS s (shape, run_id, node, kind, channel, template, variant, status) "
            "ON s.shape = r.shape ON CONFLICT (idempotency_key) DO NOTHING",
            (key_prefix, journey, json.dumps(payload), now, *itertools.chain(*shape_rows)),
        )
        return len(customer_ids)
    cursor.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (customer_id INTEGER, shape INTEGER, at TEXT)"
    )
    cursor.execute(f"DELETE FROM {_STAGE}")
    # AwareDateTime's SQLite form, once per distinct moment (few, unless throttled).
    moments, moment_of = np.unique(at, return_inverse=True)
    texts = np.array([_sqlite_text(float(t)) for t in moments], dtype=object)[moment_of]
    cursor.executemany(
        f"INSERT INTO {_STAGE} (customer_id, shape, at) VALUES (?, ?, ?)",
        list(zip(customer_ids.tolist(), shape_of.tolist(), texts.tolist(), strict=True)),
    )
    values = ", ".join("(?, ?, ?, ?, ?, ?, ?, ?)" for _ in shape_rows)
    cursor.execute(
        f"WITH s (shape, run_id, node, kind, channel, template, variant, status) "
        f"AS (VALUES {values}) "
        f"INSERT INTO outbox ({_INSERTED}) "
        "SELECT ? || r.customer_id, s.run_id, ?, r.customer_id, s.node, s.kind, s.channel, "
        "s.template, s.variant, ?, s.status, 0, r.at, ?, 'null' "
        f"FROM {_STAGE} AS r JOIN s ON s.shape = r.shape WHERE true "
        "ON CONFLICT (idempotency_key) DO NOTHING",
        (
            *itertools.chain(*shape_rows),
            key_prefix,
            journey,
            json.dumps(payload),
            now.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds"),
        ),
    )
    cursor.execute(f"DELETE FROM {_STAGE}")
    return len(customer_ids)


def _sqlite_text(epoch: float) -> str:
    """A moment as AwareDateTime stores it on SQLite: naive UTC with six decimals."""
    moment = datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)
    return moment.isoformat(" ", "microseconds")


# --- pause, resume, cancel -----------------------------------------------------------------


def _move(
    connection: Connection, occurrence: Occurrence, source: Sequence[str], target: str
) -> int:
    result = connection.execute(
        update(outbox)
        .where(outbox.c.run_id.in_(occurrence.run_ids), outbox.c.status.in_(source))
        .values(status=target)
    )
    return int(result.rowcount or 0)


def _live(workspace: Workspace, name: str, occurrence: str | None) -> Occurrence:
    if occurrence is not None:
        return find_occurrence(workspace=workspace, name=name, occurrence=occurrence)
    for found in occurrences(workspace=workspace, name=name):
        if found.state in ("scheduled", "sending", "paused"):
            return found
    raise UserError(f"broadcast {name!r} has no occurrence being sent")


def pause_broadcast(
    *, workspace: Workspace, name: str, now: datetime, occurrence: str | None = None
) -> Occurrence:
    """The sender skips its rows from now on (they stay in the outbox); `resume` goes on."""
    found = _live(workspace, name, occurrence)
    if found.state not in ("scheduled", "sending", "paused"):
        raise UserError(f"broadcast {name!r} is {found.state}: only one being sent can pause")
    with workspace.state.begin() as connection:
        _move(connection, found, ("queued",), "paused")
        _set(connection, found, now=now, state="paused")
        return _load(connection, found.name, found.occurrence)


def resume_broadcast(
    *,
    workspace: Workspace,
    strategy: Strategy,
    name: str,
    now: datetime,
    occurrence: str | None = None,
) -> Occurrence:
    """Paused rows go back to the queue; recipients not written yet are written."""
    found = _live(workspace, name, occurrence)
    if found.state != "paused":
        raise UserError(f"broadcast {name!r} is {found.state}, not paused")
    with workspace.state.begin() as connection:
        _move(connection, found, ("paused",), "queued")
        state = "sending" if found.written_at is not None else "scheduled"
        _set(connection, found, now=now, state=state)
        found = _load(connection, found.name, found.occurrence)
    if found.written_at is None:
        _write_occurrence(
            workspace=workspace, strategy=strategy, occurrence=found, wall=_wall_of(found), now=now
        )
        found = find_occurrence(workspace=workspace, name=name, occurrence=found.occurrence)
    return found


def cancel_broadcast(
    *, workspace: Workspace, name: str, now: datetime, occurrence: str | None = None
) -> tuple[Occurrence, int]:
    """Nothing more is sent: every row not sent yet is cancelled. (Occurrence, rows cancelled)."""
    found = _live(workspace, name, occurrence)
    with workspace.state.begin() as connection:
        cancelled = _move(connection, found, UNSENT, "cancelled")
        _set(connection, found, now=now, state="cancelled")
        return _load(connection, found.name, found.occurrence), cancelled


def _wall_of(occurrence: Occurrence) -> datetime | None:
    key = occurrence.occurrence
    if key == MANUAL or key.startswith(MANUAL):
        return None
    return datetime.fromisoformat(key)


# --- the worker's call ---------------------------------------------------------------------


def broadcasts_due(
    *,
    workspace: Workspace,
    now: datetime,
    strategy: Strategy | None = None,
    since: datetime | None = None,
) -> DueReport:
    """What a worker pass (or a simulated run's window) does for broadcasts at `now`:
    occurrences whose time came since the last pass are written, interrupted writes are
    completed, A/B decisions that are due are taken, finished occurrences marked done."""
    version: int | None = None
    if strategy is None:
        applied = applied_strategy(workspace=workspace)
        if applied is None:
            return DueReport()
        strategy, version = applied.strategy, applied.version
    mark = read_value(workspace=workspace, key=DUE_KEY)
    # Since the last pass; a first pass looks back a little, or (a simulated run's first
    # window) to `since`.
    after = datetime.fromisoformat(mark["until"]) if mark else (since or now - FIRST_LOOK_BACK)
    sent: list[str] = []
    if now > after and strategy.broadcasts:
        for name, broadcast in sorted(strategy.broadcasts.items()):
            for wall in _due_walls(broadcast, strategy, after=after, until=now):
                report = send_broadcast(
                    workspace=workspace,
                    strategy=strategy,
                    name=name,
                    now=now,
                    wall=wall,
                    version=version,
                )
                sent.append(f"{name}@{report.occurrence.occurrence}")
        write_value(workspace=workspace, key=DUE_KEY, value={"until": now.isoformat()}, now=now)
    decided: list[str] = []
    finished: list[str] = []
    with workspace.state.connect() as connection:
        live = [
            _occurrence(row)
            for row in connection.execute(
                select(broadcasts).where(broadcasts.c.state.in_(("scheduled", "sending")))
            )
        ]
    for occurrence in live:
        label = f"{occurrence.name}@{occurrence.occurrence}"
        if occurrence.written_at is None:
            if label not in sent:  # a write interrupted by a crash: complete it
                _write_occurrence(
                    workspace=workspace,
                    strategy=strategy,
                    occurrence=occurrence,
                    wall=_wall_of(occurrence),
                    now=now,
                )
            continue
        if (
            occurrence.broadcast.ab_test is not None
            and occurrence.decision is None
            and occurrence.decide_at is not None
            and occurrence.decide_at <= now
        ):
            decide_broadcast(workspace=workspace, occurrence=occurrence, now=now)
            decided.append(label)
        elif _finished(workspace, occurrence):
            with workspace.state.begin() as connection:
                _set(connection, occurrence, now=now, state="done")
            finished.append(label)
    return DueReport(sent=tuple(sent), decided=tuple(decided), finished=tuple(finished))


def next_broadcast_at(
    *, workspace: Workspace, strategy: Strategy, after: datetime
) -> datetime | None:
    """The next moment something is due for broadcasts after `after`: an occurrence starts
    or an A/B decision falls due (a simulated run stops its window there)."""
    moments: list[datetime] = []
    for broadcast in strategy.broadcasts.values():
        schedule = broadcast.schedule
        if isinstance(schedule, AtSchedule):
            moment = _first_moment(broadcast, strategy, schedule.at)
            if moment > after:
                moments.append(moment)
        elif isinstance(schedule, CronSchedule):
            zone = "Etc/GMT-14" if schedule.local_time else _zone_of(broadcast, strategy)
            moments.append(next_cron_time(schedule.cron, after=after, timezone=zone))
    if strategy.broadcasts:
        with workspace.state.connect() as connection:
            decide = connection.execute(
                select(func.min(broadcasts.c.decide_at)).where(
                    broadcasts.c.state.in_(("scheduled", "sending")),
                    broadcasts.c.decision.is_(None),
                )
            ).scalar()
        if decide is not None:
            moments.append(decide)
    return min(moments, default=None)


def _finished(workspace: Workspace, occurrence: Occurrence) -> bool:
    if occurrence.broadcast.ab_test is not None and occurrence.decision is None:
        return False
    with workspace.state.connect() as connection:
        pending = connection.execute(
            select(outbox.c.outbox_id)
            .where(
                outbox.c.run_id.in_(occurrence.run_ids),
                outbox.c.status.in_((*UNSENT, *IN_FLIGHT)),
            )
            .limit(1)
        ).first()
    return pending is None


# --- the A/B decision ----------------------------------------------------------------------


def decide_broadcast(*, workspace: Workspace, occurrence: Occurrence, now: datetime) -> Occurrence:
    """Choose the winner over the sample's goal metric — only when the experiment statistics
    call one; otherwise the configured default — record the decision and its numbers, and
    release the rest with the winner."""
    broadcast = occurrence.broadcast
    test = broadcast.ab_test
    if test is None:
        raise UserError(f"broadcast {occurrence.name!r} has no ab_test")
    if occurrence.decision is not None:
        return occurrence
    arms = list(broadcast.arms())
    measured = _measure_arms(workspace, occurrence, now=now)
    control = broadcast.default_arm()
    ordered = [control, *(arm for arm in arms if arm != control)]
    data = [measured[arm] for arm in ordered]
    weights = {name: variant.weight for name, variant in broadcast.arms().items()}
    total = sum(weights.values())
    result = analyze(data, control=control, shares=[weights[arm] / total for arm in ordered])
    stat_metric: Literal["conversion", "revenue"] = (
        "revenue" if test.metric == "revenue" else "conversion"
    )
    verdict = winner(result, metric=stat_metric)
    chosen = verdict.winner or control
    decision = {
        "winner": chosen,
        "called": verdict.winner is not None,
        "reason": verdict.reason
        if verdict.winner is not None
        else f"{verdict.reason}; sending the default, {control}",
        "metric": test.metric,
        "p_value": _number(verdict.p_value),
        "lift": _number(verdict.lift),
        "arms": [
            {
                "arm": arm.name,
                "recipients": arm.n,
                test.metric if test.metric != "revenue" else "conversions": arm.conversions,
                "rate": arm.conversions / arm.n if arm.n else None,
                "revenue": arm.revenue,
            }
            for arm in data
        ],
        "decided_at": now.isoformat(),
    }
    variant = broadcast.arms()[chosen]
    strategy_channel = occurrence.broadcast.channel
    with workspace.state.begin() as connection:
        channel = (
            strategy_channel
            or connection.execute(
                select(outbox.c.channel)
                .where(outbox.c.run_id == occurrence.run_id, outbox.c.node == chosen)
                .limit(1)
            ).scalar()
        )
        state = connection.execute(
            select(broadcasts.c.state).where(broadcasts.c.broadcast_id == occurrence.broadcast_id)
        ).scalar_one()
        connection.execute(
            update(outbox)
            .where(outbox.c.run_id == occurrence.rest_run_id, outbox.c.status == "waiting")
            .values(
                node=chosen,
                channel=channel,
                template=variant.template,
                variant=variant.variant,
                status="paused" if state == "paused" else "queued",
            )
        )
        _set(connection, occurrence, now=now, decision=decision)
        return _load(connection, occurrence.name, occurrence.occurrence)


def _number(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass
class _Measured:
    recipients: int = 0
    sent: int = 0
    opens: int = 0
    clicks: int = 0
    unsubscribes: int = 0
    bounces: int = 0
    conversions: int = 0
    revenue: float = 0.0
    revenue_squares: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)  # outbox rows by status


def _measure_arms(
    workspace: Workspace, occurrence: Occurrence, *, now: datetime
) -> dict[str, ArmData]:
    """The sample's arms as the statistics take them: recipients who were sent the message,
    and those of them who did the metric's thing."""
    test = occurrence.broadcast.ab_test
    assert test is not None
    counts = _tally(workspace, occurrence, run_ids=(occurrence.run_id,), now=now)
    found: dict[str, ArmData] = {}
    for arm in occurrence.broadcast.arms():
        m = counts.get(arm, _Measured())
        hits = {
            "open": m.opens,
            "click": m.clicks,
            "conversion": m.conversions,
            "revenue": m.conversions,
        }[test.metric]
        found[arm] = ArmData(
            name=arm,
            n=m.sent,
            conversions=hits,
            revenue=m.revenue,
            revenue_squares=m.revenue_squares,
            unsubscribes=m.unsubscribes,
        )
    return found


def _tally(
    workspace: Workspace, occurrence: Occurrence, *, run_ids: Sequence[str], now: datetime
) -> dict[str, _Measured]:
    """Per arm (node): recipients, sent, and from the event store opens, clicks,
    unsubscribes, bounces (message events naming the message's key) and goal conversions
    with revenue within the goal's window after the message (for the holdout, after the
    moment it would have gone)."""
    of_occurrence = outbox.c.run_id.in_(run_ids)
    # Counted in SQL; read row by row: only the recipients measured (sent, or held out),
    # whose customer and time the event windows need.
    counted = select(outbox.c.node, outbox.c.kind, outbox.c.status, func.count()).where(
        of_occurrence
    )
    sent = outbox.c.status == "sent"
    # A holdout is measured from the moment its message would have gone.
    moment = case((sent, outbox.c.sent_at), else_=outbox.c.next_attempt_at)
    measured = select(outbox.c.customer_id, outbox.c.node, moment).where(
        of_occurrence, sent | (outbox.c.kind == "holdout")
    )
    tally: dict[str, _Measured] = {}
    touched: dict[int, tuple[str, datetime]] = {}
    with workspace.state.connect() as connection:
        for node, kind, status, rows in connection.execute(
            counted.group_by(outbox.c.node, outbox.c.kind, outbox.c.status)
        ):
            n = int(rows)
            arm = tally.setdefault(node, _Measured())
            arm.recipients += n
            arm.statuses[status] = arm.statuses.get(status, 0) + n
            if status == "sent" or kind == "holdout":
                arm.sent += n  # a holdout measured as if sent, when it would have been
        for customer, node, at in connection.execute(measured):
            touched[int(customer)] = (node, at)
    if not touched:
        return tally
    start = min(at for _, at in touched.values())
    customer_ids = sorted(touched)
    for name, attribute in _MESSAGE_EVENTS.items():
        named = [
            str(properties.get("message_key"))
            for properties in _event_properties(workspace, customer_ids, name, start, now)
        ]
        node_of = _sent_nodes(workspace, run_ids=run_ids, keys=set(named))
        for key in named:
            node = node_of.get(key)
            if node is not None:
                setattr(tally[node], attribute, getattr(tally[node], attribute) + 1)
    goal = occurrence.broadcast.goal
    if goal is not None:
        events = workspace.events.events_of(
            customer_ids=customer_ids, name=goal.event, kind=goal.message_type, start=start, end=now
        )
        converted: set[int] = set()
        where = compile_where(goal.where)
        ids = events.column("customer_id").to_pylist()
        stamps = events.column("timestamp").to_pylist()
        texts = events.column("properties").to_pylist()
        for customer, at, text in sorted(zip(ids, stamps, texts, strict=True), key=lambda e: e[1]):
            node, touch = touched[int(customer)]
            if customer in converted or not touch < at <= touch + goal.within:
                continue
            properties = json.loads(text) if text else {}
            if not where(properties, at):
                continue
            converted.add(customer)
            arm = tally[node]
            arm.conversions += 1
            revenue = _revenue(properties)
            arm.revenue += revenue
            arm.revenue_squares += revenue * revenue
    return tally


KEY_CHUNK = 5_000


def _sent_nodes(workspace: Workspace, *, run_ids: Sequence[str], keys: set[str]) -> dict[str, str]:
    """The arm of each of these message keys sent by the occurrence (events name few of
    its messages: looked up, not every sent row read)."""
    found: dict[str, str] = {}
    ordered = sorted(keys)
    with workspace.state.connect() as connection:
        for at in range(0, len(ordered), KEY_CHUNK):
            chunk = ordered[at : at + KEY_CHUNK]
            for key, node in connection.execute(
                select(outbox.c.idempotency_key, outbox.c.node).where(
                    outbox.c.run_id.in_(run_ids),
                    outbox.c.status == "sent",
                    outbox.c.idempotency_key.in_(chunk),
                )
            ):
                found[key] = node
    return found


# Message events counted per message (H3's names: see services/message_events.py).
_MESSAGE_EVENTS = {
    "Email Opened": "opens",
    "Email Clicked": "clicks",
    "Unsubscribed": "unsubscribes",
    "Email Bounced": "bounces",
}


def _event_properties(
    workspace: Workspace, customer_ids: Sequence[int], name: str, start: datetime, end: datetime
) -> Iterator[dict[str, Any]]:
    events = workspace.events.events_of(
        customer_ids=customer_ids, name=name, kind="track", start=start, end=end
    )
    for text in events.column("properties").to_pylist():
        if text:
            yield json.loads(text)


def _revenue(properties: Mapping[str, Any]) -> float:
    for key in ("revenue", "value", "total"):
        value = properties.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


# --- reports -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Counts:
    audience: int
    holdout: int
    sample: int
    rest: int
    by_arm: dict[str, int]


def _report_of(workspace: Workspace, occurrence: Occurrence) -> SendReport:
    with workspace.state.connect() as connection:
        rows = connection.execute(
            select(outbox.c.run_id, outbox.c.node, outbox.c.kind, func.count())
            .where(outbox.c.run_id.in_(occurrence.run_ids))
            .group_by(outbox.c.run_id, outbox.c.node, outbox.c.kind)
        ).all()
    by_arm: dict[str, int] = {}
    holdout = sample = rest = 0
    for run_id, node, kind, n in rows:
        by_arm[node] = by_arm.get(node, 0) + int(n)
        if kind == "holdout":
            holdout += int(n)
        elif run_id == occurrence.rest_run_id:
            rest += int(n)
        else:
            sample += int(n)
    return SendReport(
        occurrence=occurrence,
        audience=occurrence.audience or sum(by_arm.values()),
        written=0,
        holdout=holdout,
        sample=sample,
        rest=rest,
        by_arm=by_arm,
    )


def broadcast_report(
    *, workspace: Workspace, name: str, now: datetime, occurrence: str | None = None
) -> dict[str, Any]:
    """An occurrence's figures: audience, sent, delivered, opens, clicks, conversions,
    revenue, unsubscribes — per arm (variants and holdout) and in total — with the
    experiment's result."""
    found = find_occurrence(workspace=workspace, name=name, occurrence=occurrence)
    tally = _tally(workspace, found, run_ids=found.run_ids, now=now)
    arms: list[dict[str, Any]] = []
    for node in sorted(tally, key=lambda n: (n == HOLDOUT_ARM, n)):
        m = tally[node]
        is_holdout = node == HOLDOUT_ARM
        sent = 0 if is_holdout else m.sent
        arms.append(
            {
                "arm": node,
                "recipients": m.recipients,
                "sent": sent,
                "delivered": max(0, sent - m.bounces),
                "opens": m.opens,
                "clicks": m.clicks,
                "conversions": m.conversions,
                "conversion_rate": m.conversions / m.sent if m.sent else None,
                "revenue": round(m.revenue, 2),
                "unsubscribes": m.unsubscribes,
                "statuses": dict(sorted(m.statuses.items())),
            }
        )
    totals = {
        key: sum(arm[key] for arm in arms if arm["arm"] != HOLDOUT_ARM)
        for key in (
            "recipients",
            "sent",
            "delivered",
            "opens",
            "clicks",
            "conversions",
            "revenue",
            "unsubscribes",
        )
    }
    return {
        **found.summary(),
        "totals": totals,
        "arms": arms,
        "experiment": dict(found.decision) if found.decision else None,
    }


def list_broadcasts(*, workspace: Workspace, strategy: Strategy | None) -> list[dict[str, Any]]:
    """The strategy's broadcasts with their schedule and latest occurrence, and any sent
    broadcast no longer in the strategy."""
    latest: dict[str, Occurrence] = {}
    counts: Counter[str] = Counter()
    for found in occurrences(workspace=workspace):
        latest.setdefault(found.name, found)
        counts[found.name] += 1
    names = sorted(set(strategy.broadcasts if strategy else ()) | set(latest))
    listed = []
    for name in names:
        broadcast = strategy.broadcasts.get(name) if strategy else None
        last = latest.get(name)
        listed.append(
            {
                "name": name,
                "schedule": _describe_schedule(broadcast) if broadcast else "(not in the strategy)",
                "occurrences": counts[name],
                "latest": last.summary() if last else None,
            }
        )
    return listed


def _describe_schedule(broadcast: Broadcast) -> str:
    schedule = broadcast.schedule
    local = " local time" if _local(broadcast) else ""
    if isinstance(schedule, AtSchedule):
        return f"at {schedule.at.isoformat(sep=' ', timespec='minutes')}{local}"
    if isinstance(schedule, CronSchedule):
        return f"cron {schedule.cron}{local}"
    return "when sent"


def show_broadcast(*, workspace: Workspace, strategy: Strategy | None, name: str) -> dict[str, Any]:
    """A broadcast's definition and its occurrences."""
    broadcast = strategy.broadcasts.get(name) if strategy else None
    found = occurrences(workspace=workspace, name=name)
    if broadcast is None and not found:
        known = ", ".join(sorted(strategy.broadcasts)) if strategy else ""
        raise NotFoundError(f"no broadcast {name!r} (broadcasts: {known or 'none'})")
    definition = broadcast or found[0].broadcast
    return {
        "name": name,
        "schedule": _describe_schedule(definition),
        "definition": definition.model_dump(mode="json", exclude_defaults=True),
        "occurrences": [o.summary() for o in found],
    }


# --- the dry run ---------------------------------------------------------------------------

PLAN_CHUNK = 5_000


@dataclass(frozen=True, slots=True)
class BroadcastPlan:
    """What `send` would do now, with nothing written: the audience and how it splits, and
    what the sender's rules would hold back, and why."""

    name: str
    occurrence: str
    audience: int
    holdout: int
    by_arm: Mapping[str, int]  # the A/B test's rest under "rest"
    by_zone: Mapping[str, int]
    excluded: Mapping[str, int]  # "skipped: no consent" -> customers
    deliverable: int
    first_at: datetime | None
    last_at: datetime | None
    decide_at: datetime | None
    samples: Mapping[str, Mapping[str, Any]]  # per arm: one customer's rendered message


def plan_broadcast(
    *, workspace: Workspace, strategy: Strategy, base_dir: Path, name: str, now: datetime
) -> BroadcastPlan:
    """The dry run of `send`: the audience resolved as `send` would, the arms assigned, and
    every recipient put through the sender's rules (`send_rules`) at the time their message
    would go; one message per arm rendered for its first deliverable customer."""
    broadcast = _broadcast(strategy, name)
    wall = _default_wall(broadcast, strategy, now)
    ids, zones = resolve_audience(
        workspace=workspace, strategy=strategy, broadcast=broadcast, name=name, as_of=now
    )
    plan = _assign(
        broadcast=broadcast,
        strategy=strategy,
        name=name,
        ids=ids,
        zones=zones,
        wall=wall,
        now=now,
    )
    templates = compile_templates(strategy=strategy, base_dir=base_dir)
    delivery = Delivery(strategy=strategy, templates=templates, clients={})
    arms = broadcast.arms()
    default = broadcast.default_arm()
    excluded: Counter[str] = Counter()
    first_ok: dict[str, int] = {}
    sending = np.flatnonzero(~plan.holdout)
    for start in range(0, len(sending), PLAN_CHUNK):
        chunk = sending[start : start + PLAN_CHUNK]
        rows: list[dict[str, Any]] = []
        for i in chunk:
            index = int(plan.arm[i])
            arm = plan.arms[index] if index >= 0 else default
            variant = arms[arm]
            template = templates[variant.template or ""]
            rows.append(
                {
                    "arm": arm,
                    "at": datetime.fromtimestamp(float(plan.at[i]), UTC),
                    "idempotency_key": "plan",
                    "kind": "send",
                    "customer_id": int(plan.ids[i]),
                    "template": variant.template,
                    "channel": broadcast.channel or template.channel,
                    "payload": {},
                    "outbox_id": int(i),  # the plan's own index: what the send rules key on
                }
            )
        with workspace.state.connect() as connection:
            profiles = _profiles(connection, {row["customer_id"] for row in rows})
            suppressed, decided = _suppression_and_consent(connection, rows, profiles)
            caps = _Caps.load(connection, delivery, rows, now=now)
        # The strategy's send rules (the bank's offers), as the sender checks them.
        blocked = blocked_by_rules(
            events=workspace.events, strategy=strategy, rows=rows, profiles=profiles, now=now
        )
        for row in rows:
            if row["outbox_id"] in blocked:
                excluded[f"skipped: {blocked[row['outbox_id']]}"] += 1
                continue
            channel = str(row["channel"])
            checked = send_rules(
                row,
                profiles.get(row["customer_id"]),
                strategy=strategy,
                template=templates[str(row["template"])],
                channel=channel,
                config=strategy.channels[channel],
                now=row["at"],
                suppressed=suppressed,
                decided=decided,
                caps=caps,
            )
            if isinstance(checked, str):
                first_ok.setdefault(row["arm"], row["customer_id"])
            else:
                excluded[f"{checked.outcome}: {_reason_kind(checked.reason)}"] += 1
    samples: dict[str, dict[str, Any]] = {}
    for arm, customer in first_ok.items():
        variant = arms[arm]
        preview = preview_message(
            workspace=workspace,
            strategy=strategy,
            base_dir=base_dir,
            template=variant.template or "",
            customer=f"#{customer}",
            variant=variant.variant,
        )
        samples[arm] = {
            "customer_id": customer,
            "to": preview.to,
            "subject": preview.message.subject,
            "text": (preview.message.text or "")[:500],
        }
    by_arm = Counter(plan.arms[int(a)] if a >= 0 else "rest" for a in plan.arm[~plan.holdout])
    times = plan.at[~plan.holdout]
    skipped = sum(n for reason, n in excluded.items() if reason.startswith("skipped"))
    return BroadcastPlan(
        name=name,
        occurrence=_wall_key(wall) if wall is not None else MANUAL,
        audience=len(ids),
        holdout=int(plan.holdout.sum()),
        by_arm=dict(by_arm),
        by_zone=dict(sorted(plan.by_zone.items(), key=lambda item: -item[1])),
        excluded=dict(excluded.most_common()),
        deliverable=len(sending) - skipped,
        first_at=datetime.fromtimestamp(float(times.min()), UTC) if len(times) else None,
        last_at=datetime.fromtimestamp(float(times.max()), UTC) if len(times) else None,
        decide_at=plan.decide_at,
        samples=samples,
    )


def _reason_kind(reason: str) -> str:
    """A rule's reason without what varies per customer: `suppressed: hard bounce` ->
    `suppressed`; `quiet hours 22:00-08:00 in Europe/Kyiv: deferred to …` -> its rule."""
    head = reason.split(":", 1)[0] if not reason.startswith("quiet hours") else reason
    if head.startswith("quiet hours"):
        return head.split(" in ", 1)[0] + " (deferred, not dropped)"
    return head


__all__ = [
    "BroadcastPlan",
    "DueReport",
    "Occurrence",
    "SendReport",
    "broadcast_report",
    "broadcasts_due",
    "cancel_broadcast",
    "decide_broadcast",
    "find_occurrence",
    "list_broadcasts",
    "next_broadcast_at",
    "occurrences",
    "pause_broadcast",
    "plan_broadcast",
    "resolve_audience",
    "resume_broadcast",
    "send_broadcast",
    "show_broadcast",
]
