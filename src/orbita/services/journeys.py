"""Durable journey execution: runs are rows, decisions come from the pure engine.

    publish_journeys   definitions -> journey_versions (a new version when one changed)
    handle_events      ingested events -> run events (goal, exit_on, wait_for), then entries
    advance_due        due runs, claimed in batches -> new states, outbox, steps, conversions

Each batch is one transaction: the run's new state and everything it decided (outbox rows,
steps, conversions, trait updates) commit together or not at all (DESIGN.md, Delivery
guarantees); outbox rows are inserted by idempotency key with insert-or-ignore, so a batch
run twice after a crash queues nothing twice. Every query covers the whole batch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_dumps
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    Integer,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql

from orbita.core.errors import InvalidInputError, UserError
from orbita.engine.journeys import (
    CallWebhook,
    CompiledJourney,
    Convert,
    Decision,
    Entered,
    NotEntered,
    Passed,
    RunsSummary,
    RunState,
    Send,
    Suppressed,
    TriggerMatcher,
    UpdateTrait,
    advance,
    compile_journey,
    compile_triggers,
    enter,
    on_event,
)
from orbita.engine.journeys.run import run_id_for
from orbita.engine.segments.compile import window_bounds
from orbita.engine.segments.reference import ReferenceData, evaluate
from orbita.model.events import EventRecord
from orbita.model.journeys import BranchStep, Journey, WaitStep, iter_steps, parse_journey
from orbita.model.segments import (
    DATE_OPERATORS,
    AllOf,
    AnyOf,
    Condition,
    EventCondition,
    Not,
    SegmentRef,
    TraitCondition,
    walk,
)
from orbita.services.identity import ANONYMOUS, USER
from orbita.services.workspace import Workspace
from orbita.store.events import EventStore
from orbita.store.state import (
    LIVE_RUNS,
    RUN_LIVE,
    AwareDateTime,
    customers,
    identities,
    journey_conversions,
    journey_runs,
    journey_steps,
    journey_versions,
    outbox,
    segment_memberships,
)

# Branch conditions a worker answers: traits and segment membership from the state store,
# event aggregates from the event store (both for the whole batch at once).
SUPPORTED_CONDITIONS = (TraitCondition, SegmentRef, EventCondition, AllOf, AnyOf, Not)


# What a run never changes after its insert: left out of updates (binding parameters is
# most of a batch's write time).
FIXED_RUN_COLUMNS = frozenset(
    {"journey", "version", "customer_id", "run_key", "holdout", "entered_at"}
)


# A run's state as JSON text, parsed by orjson (the drivers' JSON parsing is slower).
RUN_STATE_TEXT = cast(journey_runs.c.state, Text)


# --- values --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustomerEvent:
    """An ingested event with the customer it was resolved to.

    `journey` names the one journey the event enters the customer into, without matching
    triggers or reaching running runs: how schedule, date and API triggers start runs.
    """

    customer_id: int
    record: EventRecord
    journey: str | None = None


@dataclass(frozen=True, slots=True)
class PublishedJourneys:
    """The journeys that run: the current version of each (for entries) and every version
    still referenced by runs (a run finishes on the version it entered)."""

    current: Mapping[str, CompiledJourney]
    versions: Mapping[tuple[str, int], CompiledJourney]
    timezone: str
    matcher: TriggerMatcher


@dataclass(frozen=True, slots=True)
class PublishReport:
    journeys: PublishedJourneys
    published: tuple[tuple[str, int], ...]  # (journey, new version)


@dataclass(frozen=True, slots=True)
class EventsReport:
    events: int
    entered: int
    not_entered: int
    runs_touched: int
    messages: int  # outbox rows decided (sends and webhooks)
    suppressed: int
    conversions: int
    ended: int


@dataclass(frozen=True, slots=True)
class AdvanceReport:
    claimed: int
    batches: int
    messages: int
    suppressed: int
    conversions: int
    ended: int


# --- publishing ----------------------------------------------------------------------------


def _definition(journey: Journey) -> tuple[dict[str, Any], str]:
    data = journey.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return data, digest


def _check_conditions(name: str, journey: Journey) -> None:
    """Refuse at publish time what a worker could not answer later."""
    for step in iter_steps(journey.steps):
        if not isinstance(step, BranchStep):
            continue
        for arm in step.arms:
            for condition in walk(arm.when):
                if not isinstance(condition, SUPPORTED_CONDITIONS):
                    raise UserError(
                        f"journey {name}: branch conditions on {condition.type} are not "
                        "supported yet (use trait, segment or event conditions)"
                    )


def publish_journeys(
    *,
    workspace: Workspace,
    journeys: Mapping[str, Journey],
    timezone: str = "UTC",
) -> PublishReport:
    """Store a new version of each journey whose definition changed; return what runs."""
    for name, journey in journeys.items():
        _check_conditions(name, journey)
    now = workspace.clock.now()
    published: list[tuple[str, int]] = []
    with workspace.state.begin() as connection:
        # Versions are few (one per apply that changed a journey): read them all.
        latest: dict[str, tuple[int, str]] = {}
        for name, version, digest in connection.execute(
            select(
                journey_versions.c.journey,
                journey_versions.c.version,
                journey_versions.c.definition_hash,
            ).order_by(journey_versions.c.version)
        ):
            latest[name] = (version, digest)
        rows = []
        for name, journey in sorted(journeys.items()):
            data, digest = _definition(journey)
            version, known = latest.get(name, (0, ""))
            if known == digest:
                continue
            rows.append(
                {
                    "journey": name,
                    "version": version + 1,
                    "definition": data,
                    "definition_hash": digest,
                    "published_at": now,
                }
            )
            published.append((name, version + 1))
        if rows:
            connection.execute(insert(journey_versions), rows)
    loaded = load_journeys(workspace=workspace, timezone=timezone, names=list(journeys))
    return PublishReport(journeys=loaded, published=tuple(published))


def load_journeys(
    *, workspace: Workspace, timezone: str = "UTC", names: Sequence[str] | None = None
) -> PublishedJourneys:
    """Every stored version; `names` (default: all) are the ones that take new entries."""
    with workspace.state.connect() as connection:
        rows = connection.execute(
            select(
                journey_versions.c.journey,
                journey_versions.c.version,
                journey_versions.c.definition,
            ).order_by(journey_versions.c.journey, journey_versions.c.version)
        ).all()
    versions: dict[tuple[str, int], CompiledJourney] = {}
    current: dict[str, CompiledJourney] = {}
    wanted = set(names) if names is not None else None
    for name, version, definition in rows:
        compiled = compile_journey(name, parse_journey(definition, name=name), version=version)
        versions[(name, version)] = compiled
        if wanted is None or name in wanted:
            current[name] = compiled  # rows come in version order: the last one wins
    return PublishedJourneys(
        current=current,
        versions=versions,
        timezone=timezone,
        matcher=compile_triggers({name: j.journey for name, j in current.items()}),
    )


# --- customers of events -------------------------------------------------------------------


def resolve_customers(
    *, workspace: Workspace, records: Sequence[EventRecord]
) -> list[CustomerEvent]:
    """The customers stored events belong to (after `store_records`), by their ids: one
    query per id kind for the batch. Events of unknown ids are left out."""
    wanted: dict[str, set[str]] = {USER: set(), ANONYMOUS: set()}
    for record in records:
        if record.user_id:
            wanted[USER].add(record.user_id)
        if record.anonymous_id:
            wanted[ANONYMOUS].add(record.anonymous_id)
    found: dict[tuple[str, str], int] = {}
    with workspace.state.connect() as connection:
        for kind, values in wanted.items():
            if not values:
                continue
            for value, customer_id in connection.execute(
                select(identities.c.value, identities.c.customer_id).where(
                    identities.c.kind == kind, identities.c.value.in_(sorted(values))
                )
            ):
                found[(kind, value)] = int(customer_id)
    result = []
    for record in records:
        customer = (record.user_id and found.get((USER, record.user_id))) or (
            record.anonymous_id and found.get((ANONYMOUS, record.anonymous_id))
        )
        if customer:
            result.append(CustomerEvent(customer_id=customer, record=record))
    return result


# --- branch facts --------------------------------------------------------------------------


class _EventHistory:
    """Events that branch conditions read, from the event store: per (event name, message
    type), one query for all of a batch's customers, from the earliest window start asked
    so far up to the batch's horizon (the latest moment any of its decisions is taken at).
    The evaluator applies each condition's own window to what was fetched, so one fetch
    serves every run of the batch, whatever its wake time (fetching up to each decision's
    own moment fetched again for nearly every run of a batch)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._customers: tuple[int, ...] = ()
        self._horizon: datetime | None = None
        # (name, type) -> (start or None, end, events by customer) for `_customers`
        self._fetched: dict[tuple[str, str], _Fetched] = {}

    def horizon(self, moment: datetime) -> None:
        """No decision of the coming batch is taken after `moment`."""
        self._horizon = moment

    def events(
        self,
        condition: EventCondition,
        customer_ids: Sequence[int],
        *,
        start: datetime | None,
        end: datetime,
    ) -> dict[int, list[dict[str, Any]]]:
        if tuple(customer_ids) != self._customers:  # the next batch: forget the last one's
            self._customers = tuple(customer_ids)
            self._fetched = {}
        key = (condition.event, condition.message_type)
        known = self._fetched.get(key)
        if known is None or not known.covers(start, end):
            if known is not None:
                # Widen to cover both: windows of one batch differ by the runs' wake times.
                start = None if start is None or known.start is None else min(start, known.start)
                end = max(end, known.end)
            if self._horizon is not None:
                end = max(end, self._horizon)
            known = _Fetched(start, end, self._query(condition, customer_ids, start=start, end=end))
            self._fetched[key] = known
        if condition.where or condition.aggregate.property is not None:
            known.parse()
        return known.found

    def _query(
        self,
        condition: EventCondition,
        customer_ids: Sequence[int],
        *,
        start: datetime | None,
        end: datetime,
    ) -> dict[int, list[dict[str, Any]]]:
        # One fixed, parametrised query per fetch: compiling an expression each time cost
        # more than the query (tens of milliseconds, thousands of times in a long run).
        table = self._store.events_of(
            customer_ids=customer_ids,
            name=condition.event,
            kind=condition.message_type,
            start=start,
            end=end,
        )
        found: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for row in table.to_pylist():
            found[int(row["customer_id"])].append(row)
        return dict(found)


@dataclass(slots=True)
class _Fetched:
    """One fetch of `_EventHistory`: the events of (start, end] by customer. Properties stay
    JSON text until a condition reads them (a count without `where` never does)."""

    start: datetime | None
    end: datetime
    found: dict[int, list[dict[str, Any]]]
    parsed: bool = False

    def covers(self, start: datetime | None, end: datetime) -> bool:
        return end <= self.end and (
            self.start is None or (start is not None and start >= self.start)
        )

    def parse(self) -> None:
        if not self.parsed:
            for rows in self.found.values():
                for row in rows:
                    row["properties"] = _json_object(row["properties"])
            self.parsed = True


class _Profiles:
    """Profiles and segment memberships of a batch's customers: loaded once per batch, and
    only when a decision asks (a wait followed by a send needs neither)."""

    def __init__(
        self,
        connection: Connection,
        customer_ids: Iterable[int],
        segments: set[str],
        columns: set[str],
        history: _EventHistory | None = None,
    ):
        self._connection = connection
        self._history = history
        self._ids = sorted(set(customer_ids))
        self._segments = sorted(segments)
        # Profile columns beside traits and time zone that a decision may read.
        self._columns = sorted(columns & set(customers.c.keys()) - {"traits", "timezone"})
        self._rows: dict[int, dict[str, Any]] | None = None
        self._members: set[tuple[str, int]] | None = None
        # Customers of each trait condition, evaluated once for the whole batch; customers
        # whose traits a step of this batch changed are evaluated alone.
        self._trait_members: dict[int, set[int]] = {}
        self.updated: set[int] = set()

    @property
    def rows(self) -> dict[int, dict[str, Any]]:
        if self._rows is None:
            self._rows = {}
            if self._ids:
                query = select(
                    customers.c.customer_id,
                    cast(customers.c.traits, Text).label("traits"),
                    customers.c.timezone,
                    *(customers.c[name] for name in self._columns),
                ).where(_among(self._connection, customers.c.customer_id, self._ids))
                result = self._connection.execute(query)
                keys = list(result.keys())
                for values in result:
                    row = dict(zip(keys, values, strict=True))
                    row["traits"] = _json_object(row["traits"])
                    self._rows[row["customer_id"]] = row
        return self._rows

    def trait_holds(self, condition: TraitCondition, customer_id: int, *, now: datetime) -> bool:
        row = self.rows.get(customer_id)
        if row is None:
            return False
        if condition.op in DATE_OPERATORS or customer_id in self.updated:
            # Relative to `now` (each run's own wake time), or changed meanwhile: alone.
            alone = ReferenceData(events=[], customers=[row])
            return customer_id in evaluate(condition, as_of=now, data=alone)
        members = self._trait_members.get(id(condition))
        if members is None:
            rows = [r for cid, r in self.rows.items() if cid not in self.updated]
            members = evaluate(condition, as_of=now, data=ReferenceData(events=[], customers=rows))
            self._trait_members[id(condition)] = members
        return customer_id in members

    def event_holds(self, condition: EventCondition, customer_id: int, *, now: datetime) -> bool:
        """The condition at `now` over the customer's events, fetched for the whole batch."""
        if self._history is None:
            raise UserError("branch conditions on events need the event store")
        start, end = window_bounds(condition.window, as_of=now)
        events = self._history.events(condition, self._ids, start=start, end=end)
        data = ReferenceData(
            events=events.get(customer_id, ()), customers=[{"customer_id": customer_id}]
        )
        return customer_id in evaluate(condition, as_of=now, data=data)

    @property
    def members(self) -> set[tuple[str, int]]:
        if self._members is None:
            self._members = set()
            if self._ids and self._segments:
                self._members = {
                    (segment, int(customer_id))
                    for segment, customer_id in self._connection.execute(
                        select(
                            segment_memberships.c.segment, segment_memberships.c.customer_id
                        ).where(
                            _among(self._connection, segment_memberships.c.customer_id, self._ids),
                            segment_memberships.c.segment.in_(self._segments),
                            segment_memberships.c.exited_at.is_(None),
                        )
                    )
                }
        return self._members


@dataclass
class _Facts:
    """The engine's `Facts` for one customer of the batch."""

    profiles: _Profiles
    customer_id: int
    default_timezone: str

    @property
    def timezone(self) -> str:
        row = self.profiles.rows.get(self.customer_id)
        zone = row.get("timezone") if row else None
        return zone or self.default_timezone

    def trait(self, name: str) -> object:
        row = self.profiles.rows.get(self.customer_id) or {}
        traits = row.get("traits") or {}
        return traits[name] if name in traits else row.get(name)

    def holds(self, condition: Condition, *, now: datetime) -> bool:
        # By exact type: isinstance on pydantic models goes through their metaclass.
        kind = type(condition)
        if kind is TraitCondition:
            assert isinstance(condition, TraitCondition)
            return self.profiles.trait_holds(condition, self.customer_id, now=now)
        if kind is SegmentRef:
            assert isinstance(condition, SegmentRef)
            return (condition.segment, self.customer_id) in self.profiles.members
        if kind is EventCondition:
            assert isinstance(condition, EventCondition)
            return self.profiles.event_holds(condition, self.customer_id, now=now)
        if kind is AllOf:
            assert isinstance(condition, AllOf)
            return all(self.holds(c, now=now) for c in condition.all)
        if kind is AnyOf:
            assert isinstance(condition, AnyOf)
            return any(self.holds(c, now=now) for c in condition.any)
        if kind is Not:
            assert isinstance(condition, Not)
            return not self.holds(condition.condition, now=now)
        raise UserError(f"branch conditions on {condition.type} are not supported yet")


def _json_object(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        found = orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN and the like, which Python's json writes
        found = json.loads(text)
    return dict(found or {})


def _profile_columns_used(journeys: Iterable[CompiledJourney]) -> set[str]:
    """Names a trait condition or a date wait may read from a profile column."""
    found: set[str] = set()
    for journey in journeys:
        for step in iter_steps(journey.journey.steps):
            if isinstance(step, WaitStep) and step.until_trait:
                found.add(step.until_trait)
            if isinstance(step, BranchStep):
                for arm in step.arms:
                    found.update(c.trait for c in walk(arm.when) if isinstance(c, TraitCondition))
    return found


def _segments_used(journeys: Iterable[CompiledJourney]) -> set[str]:
    found: set[str] = set()
    for journey in journeys:
        for step in iter_steps(journey.journey.steps):
            if isinstance(step, BranchStep):
                for arm in step.arms:
                    found.update(c.segment for c in walk(arm.when) if isinstance(c, SegmentRef))
    return found


# --- one batch -----------------------------------------------------------------------------


def _is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def _among(connection: Connection, column: Any, values: Sequence[Any]) -> Any:
    """`column IN values` for a batch: one array parameter on PostgreSQL (a thousand
    placeholders cost more to send and plan than the rows), a plain IN on SQLite."""
    if not _is_postgres(connection):
        return column.in_(values)
    element = BigInteger() if isinstance(column.type, Integer) else Text()
    return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(element)))


@dataclass
class _Batch:
    """Runs of one transaction: decisions are applied in memory, then written in one go."""

    connection: Connection
    journeys: PublishedJourneys
    worker_id: str | None = None
    runs: dict[str, RunState] = field(default_factory=dict)
    new: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    outbox_rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    step_rows: list[tuple[Any, ...]] = field(default_factory=list)  # STEP_COLUMNS order
    conversion_rows: list[dict[str, Any]] = field(default_factory=list)
    updates_of: list[tuple[int, UpdateTrait]] = field(default_factory=list)
    profiles: _Profiles | None = None
    history: _EventHistory | None = None
    # When each run was last decided about, and which runs had already ended when loaded.
    decided_at: dict[str, datetime] = field(default_factory=dict)
    ended_before: set[str] = field(default_factory=set)
    entered: int = 0
    not_entered: int = 0

    def load_profiles(self, customer_ids: Iterable[int]) -> None:
        self.profiles = _Profiles(
            self.connection,
            customer_ids,
            _segments_used(self.journeys.versions.values()),
            _profile_columns_used(self.journeys.versions.values()),
            self.history,
        )

    def facts(self, customer_id: int) -> _Facts:
        assert self.profiles is not None, "load_profiles first"
        return _Facts(self.profiles, customer_id, self.journeys.timezone)

    def journey_of(self, state: RunState) -> CompiledJourney | None:
        return self.journeys.versions.get((state.journey, state.version))

    def apply(self, decision: Decision, *, now: datetime, fresh: bool = False) -> None:
        """Record a decision, then advance the run while it is due (as a worker would at
        once): a run leaves the batch waiting or ended."""
        state = decision.state
        if state is None:
            return
        journey = self.journey_of(state)
        assert journey is not None
        while True:
            self._record(state, decision, now=now)
            if fresh:
                self.new.add(state.run_id)
                fresh = False
            elif state.run_id not in self.new:
                self.changed.add(state.run_id)
            if state.ended or state.wake_at is None or state.wake_at > now:
                return
            decision = advance(journey, state, now=now, facts=self.facts(state.customer_id))
            assert decision.state is not None
            if decision.state == state:
                return
            state = decision.state

    def catch_up(self, state: RunState, *, until: datetime) -> bool:
        """Follow a run through every wake time up to `until`, each step at its own time
        (not at `until`): the outcome does not depend on when a worker got to it."""
        journey = self.journey_of(state)
        if journey is None:
            return False
        current, moved = state, False
        while not current.ended and current.wake_at is not None and current.wake_at <= until:
            at = current.wake_at
            decision = advance(journey, current, now=at, facts=self.facts(state.customer_id))
            if decision.state is None or decision.state == current:
                break  # nothing more the engine can do at this time
            self.apply(decision, now=at)
            current, moved = self.runs[state.run_id], True
        return moved

    def load(self, state: RunState) -> None:
        self.runs[state.run_id] = state
        if state.ended:
            self.ended_before.add(state.run_id)

    def _record(self, state: RunState, decision: Decision, *, now: datetime) -> None:
        self.runs[state.run_id] = state
        self.decided_at[state.run_id] = now
        for command in decision.commands:
            if isinstance(command, Send | Suppressed | CallWebhook):
                self._queue(state, command, now=now)
            elif isinstance(command, Passed):
                self.step_rows.append(
                    (state.run_id, state.journey, command.node, command.edge, now)
                )
            elif isinstance(command, Convert):
                self.conversion_rows.append(
                    {
                        "run_id": state.run_id,
                        "journey": state.journey,
                        "customer_id": state.customer_id,
                        "arm": "holdout" if state.holdout else "treatment",
                        "at": command.at,
                        "message_id": command.message_id,
                    }
                )
            elif isinstance(command, UpdateTrait):
                self.updates_of.append((state.customer_id, command))
                # Later decisions of this batch see the new value, as after a commit.
                if self.profiles is not None:
                    row = self.profiles.rows.get(state.customer_id)
                    if row is not None:
                        _apply_update(row["traits"], command)
                        self.profiles.updated.add(state.customer_id)

    def _queue(
        self, state: RunState, command: Send | Suppressed | CallWebhook, *, now: datetime
    ) -> None:
        payload: dict[str, Any] = {
            "trigger_message_id": state.context.trigger_message_id,
            "trigger_event": state.context.trigger_event,
            "properties": dict(state.context.properties),
        }
        row: dict[str, Any] = {
            "idempotency_key": command.idempotency_key,
            "run_id": state.run_id,
            "journey": state.journey,
            "customer_id": state.customer_id,
            "node": command.node,
            "channel": None,
            "template": None,
            "variant": None,
            "attempts": 0,
            "created_at": now,
            "result": None,
        }
        if isinstance(command, Send):
            row.update(
                kind="send",
                channel=command.channel,
                template=command.template,
                variant=command.variant,
                status="queued",
                next_attempt_at=now,
            )
        elif isinstance(command, CallWebhook):
            payload.update(url=command.url, method=command.method, body=command.body)
            row.update(kind="webhook", status="queued", next_attempt_at=now)
        else:
            # Kept for measurement (the holdout arm is tracked like the treatment), never sent.
            row.update(
                kind="suppressed",
                channel=command.channel,
                template=command.template,
                variant=command.variant,
                status="skipped",
                next_attempt_at=None,
                result={"reason": command.reason},
            )
        row["payload"] = payload
        self.outbox_rows.setdefault(command.idempotency_key, row)

    # --- writing ------------------------------------------------------------------------

    def _goal_until(self, state: RunState) -> datetime | None:
        journey = self.journey_of(state)
        goal = journey.journey.goal if journey is not None else None
        if goal is None or state.converted_at is not None:
            return None
        return state.entered_at + goal.within

    def _run_row(self, state: RunState) -> tuple[Any, ...]:
        """The run's row in RUN_COLUMNS order (`state`: written as its JSON)."""
        return (
            state.run_id,
            state.journey,
            state.version,
            state.customer_id,
            state.key or "",
            state.node,
            state.status,
            state.holdout,
            state.wake_at,
            self._goal_until(state),
            state,
            state.entered_at,
            self.decided_at.get(state.run_id, state.entered_at),
            state.converted_at,
            state.exit_reason,
            self.worker_id,
            None,
        )

    def _run_update(self, state: RunState) -> tuple[Any, ...]:
        """The run id, then what a step may change, in RUN_UPDATE_COLUMNS order."""
        return (
            state.run_id,
            state.node,
            state.status,
            state.wake_at,
            self._goal_until(state),
            state,
            self.decided_at.get(state.run_id, state.entered_at),
            state.converted_at,
            state.exit_reason,
            self.worker_id,
            None,
        )

    def write(self) -> None:
        """Every row the batch decided, one statement per table."""
        connection = self.connection
        # Updates first: a run ended in this batch frees its place in the one-live-run
        # index for a run the same batch starts.
        if self.changed:
            _bulk_update(
                connection,
                journey_runs,
                key="run_id",
                columns=RUN_UPDATE_COLUMNS,
                rows=[self._run_update(self.runs[run_id]) for run_id in sorted(self.changed)],
            )
        if self.new:
            _bulk_insert(
                connection,
                journey_runs,
                columns=RUN_COLUMNS,
                rows=[self._run_row(self.runs[run_id]) for run_id in sorted(self.new)],
            )
        if self.outbox_rows:
            _bulk_insert(
                connection,
                outbox,
                columns=OUTBOX_COLUMNS,
                rows=[OUTBOX_VALUES(row) for row in self.outbox_rows.values()],
                conflict="idempotency_key",
            )
        if self.step_rows:
            _bulk_insert(connection, journey_steps, columns=STEP_COLUMNS, rows=self.step_rows)
        if self.conversion_rows:
            _bulk_insert(
                connection,
                journey_conversions,
                columns=CONVERSION_COLUMNS,
                rows=[CONVERSION_VALUES(row) for row in self.conversion_rows],
                conflict="run_id",
            )
        if self.updates_of:
            _write_traits(connection, self.updates_of)

    def counts(self) -> dict[str, int]:
        kinds = [row["kind"] for row in self.outbox_rows.values()]
        return {
            "messages": sum(kind != "suppressed" for kind in kinds),
            "suppressed": sum(kind == "suppressed" for kind in kinds),
            "conversions": len(self.conversion_rows),
            "ended": sum(
                1
                for run_id in (self.new | self.changed) - self.ended_before
                if self.runs[run_id].ended
            ),
        }


# --- bulk writes ---------------------------------------------------------------------------
# A batch writes thousands of rows: one statement per table straight through the driver
# (PostgreSQL: the rows as arrays, unnested server-side in one round trip; SQLite: the
# driver's executemany), each value converted once here rather than through SQLAlchemy's
# per-row bind processing, which was most of a batch's time. Statements name only columns
# of the tables below; every value is a bound parameter.

OUTBOX_COLUMNS = (
    "idempotency_key",
    "run_id",
    "journey",
    "customer_id",
    "node",
    "kind",
    "channel",
    "template",
    "variant",
    "payload",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
    "result",
)
STEP_COLUMNS = ("run_id", "journey", "node", "edge", "at")
CONVERSION_COLUMNS = ("run_id", "journey", "customer_id", "arm", "at", "message_id")
RUN_COLUMNS = (
    "run_id",
    "journey",
    "version",
    "customer_id",
    "run_key",
    "node",
    "status",
    "holdout",
    "wake_at",
    "goal_until",
    "state",
    "entered_at",
    "updated_at",
    "converted_at",
    "exit_reason",
    "claimed_by",
    "claimed_until",
)
OUTBOX_VALUES: Callable[[Mapping[str, Any]], tuple[Any, ...]] = operator.itemgetter(*OUTBOX_COLUMNS)
CONVERSION_VALUES: Callable[[Mapping[str, Any]], tuple[Any, ...]] = operator.itemgetter(
    *CONVERSION_COLUMNS
)
RUN_UPDATE_COLUMNS = tuple(c for c in RUN_COLUMNS if c not in FIXED_RUN_COLUMNS | {"run_id"})
# The order _Batch._run_update writes them in.
assert RUN_UPDATE_COLUMNS == (
    "node",
    "status",
    "wake_at",
    "goal_until",
    "state",
    "updated_at",
    "converted_at",
    "exit_reason",
    "claimed_by",
    "claimed_until",
)

JSON_NULL = Jsonb(None)  # what SQLAlchemy's JSON type writes for None: JSON null, not NULL

# PostgreSQL types of the columns, for binary COPY (JSON goes as text, cast on the server).
_PG_TYPES = {
    "time": "timestamptz",
    "json": "text",
    "bool": "bool",
    "int8": "int8",
    "int4": "int4",
    "text": "text",
}


def _kind(table: Table, name: str) -> str:
    kind = table.c[name].type
    if isinstance(kind, AwareDateTime):
        return "time"
    if isinstance(kind, JSON):
        return "json"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, BigInteger):
        return "int8"
    if isinstance(kind, Integer):
        return "int4"
    return "text"


def _json_text(value: Any) -> str:
    """JSON columns hold None as JSON null, as SQLAlchemy's JSON type writes it. A run's
    state is given as the RunState: orjson writes its fields (datetimes as isoformat does)
    without the dict `to_json` builds."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson's limits (integers beyond 64 bits): the slower encoder
        return json.dumps(value.to_json() if isinstance(value, RunState) else value)


@functools.lru_cache(maxsize=65536)  # a batch's runs share a few wake and step times
def _sqlite_time(value: datetime | None) -> str | None:
    """AwareDateTime's SQLite form: naive UTC text with six fractional digits."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the state store")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _driver_rows(
    connection: Connection,
    table: Table,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    json_text: bool = True,
) -> list[tuple[Any, ...]]:
    """Rows (in `columns` order) as the driver takes them: JSON as text, or (`json_text`
    False, for a binary COPY whose driver encodes it) as the objects with None as JSON
    null; on SQLite, times as AwareDateTime's text."""
    postgres = _is_postgres(connection)
    converters: dict[int, Any] = {}
    for index, name in enumerate(columns):
        kind = _kind(table, name)
        if kind == "json":
            converters[index] = _json_text if json_text else _json_null
        elif kind == "time" and not postgres:
            converters[index] = _sqlite_time
    if not converters or not rows:
        return [tuple(row) for row in rows]
    values = [list(column) for column in zip(*rows, strict=True)]
    for index, convert in converters.items():
        values[index] = [convert(value) for value in values[index]]
    return list(zip(*values, strict=True))


def _json_null(value: Any) -> Any:
    return JSON_NULL if value is None else value


def _cursor(connection: Connection) -> Any:
    """A driver cursor in the connection's current transaction."""
    return connection.connection.cursor()


def _copy(
    cursor: Any,
    table: str,
    table_of: Table,
    columns: Sequence[str],
    rows: Any,
    *,
    json_text: bool = True,
) -> None:
    """Binary COPY: the rows cross in one stream, encoded by the driver's C code (JSON
    columns as text, or as jsonb the driver encodes with orjson)."""
    types = [_PG_TYPES[_kind(table_of, name)] for name in columns]
    if not json_text:
        set_json_dumps(_json_bytes, context=cursor)
        types = [
            "jsonb" if _kind(table_of, name) == "json" else t
            for name, t in zip(columns, types, strict=True)
        ]
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


def _json_bytes(value: Any) -> bytes:
    return _json_text(value).encode()


def _staged(cursor: Any, table: Table, columns: Sequence[str], rows: Any, *, use: str) -> str:
    """COPY the rows into a temporary table shaped like `columns` of `table` (emptied at
    commit); returns its name. A batch stages each (table, use) once per transaction."""
    name = f"orbita_batch_{table.name}_{use}"
    shape = ", ".join(f"{column} {_PG_TYPES[_kind(table, column)]}" for column in columns)
    cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} ({shape}) ON COMMIT DELETE ROWS")
    _copy(cursor, name, table, columns, rows)
    return name


def _pg_value(table: Table, name: str) -> str:
    return f"s.{name}::jsonb" if _kind(table, name) == "json" else f"s.{name}"


def _bulk_insert(
    connection: Connection,
    table: Table,
    *,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    conflict: str | None = None,
) -> None:
    """Insert the rows; with `conflict`, a row whose key exists is left out (not an error)."""
    names = ", ".join(columns)
    ignore = f" ON CONFLICT ({conflict}) DO NOTHING" if conflict else ""
    cursor = _cursor(connection)
    if not _is_postgres(connection):
        marks = ", ".join("?" for _ in columns)
        values = _driver_rows(connection, table, columns, rows)
        cursor.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({marks}){ignore}", values)
        return
    direct = _driver_rows(connection, table, columns, rows, json_text=False)
    if conflict is None:
        _copy(cursor, table.name, table, columns, direct, json_text=False)
        return
    # Straight into the table; only when a key exists already (a batch run again after a
    # crash) through a staging table and INSERT ... ON CONFLICT DO NOTHING.
    cursor.execute("SAVEPOINT orbita_copy")
    try:
        _copy(cursor, table.name, table, columns, direct, json_text=False)
    except psycopg.errors.UniqueViolation:
        cursor.execute("ROLLBACK TO SAVEPOINT orbita_copy")
        staged = _staged(
            cursor, table, columns, _driver_rows(connection, table, columns, rows), use="insert"
        )
        selected = ", ".join(_pg_value(table, name) for name in columns)
        cursor.execute(
            f"INSERT INTO {table.name} ({names}) SELECT {selected} FROM {staged} AS s{ignore}"
        )
    else:
        cursor.execute("RELEASE SAVEPOINT orbita_copy")


def _bulk_update(
    connection: Connection,
    table: Table,
    *,
    key: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    """Set `columns` of the row whose `key` each row names (the key first, then the
    columns)."""
    values = _driver_rows(connection, table, (key, *columns), rows)
    cursor = _cursor(connection)
    if _is_postgres(connection):
        staged = _staged(cursor, table, (key, *columns), values, use="update")
        assignments = ", ".join(f"{name} = {_pg_value(table, name)}" for name in columns)
        cursor.execute(
            f"UPDATE {table.name} AS t SET {assignments} FROM {staged} AS s WHERE t.{key} = s.{key}"
        )
    else:
        assignments = ", ".join(f"{name} = ?" for name in columns)
        cursor.executemany(
            f"UPDATE {table.name} SET {assignments} WHERE {key} = ?",
            [(*row[1:], row[0]) for row in values],
        )


def _apply_update(traits: dict[str, Any], command: UpdateTrait) -> None:
    if command.increment is not None:
        current = traits.get(command.trait)
        base = current if isinstance(current, int | float) and not isinstance(current, bool) else 0
        traits[command.trait] = base + command.increment
    else:
        traits[command.trait] = command.value


def _write_traits(connection: Connection, updates: Sequence[tuple[int, UpdateTrait]]) -> None:
    """Apply trait updates in decision order; rows are locked on PostgreSQL so an identify
    written meanwhile is not lost."""
    ids = sorted({customer_id for customer_id, _ in updates})
    query = select(customers.c.customer_id, customers.c.traits).where(
        _among(connection, customers.c.customer_id, ids)
    )
    if _is_postgres(connection):
        query = query.with_for_update()
    traits = {cid: dict(value or {}) for cid, value in connection.execute(query)}
    touched: set[int] = set()
    for customer_id, command in updates:
        if customer_id in traits:
            _apply_update(traits[customer_id], command)
            touched.add(customer_id)
    if touched:
        connection.execute(
            update(customers)
            .where(customers.c.customer_id == bindparam("cid"))
            .values(traits=bindparam("new_traits")),
            [{"cid": cid, "new_traits": traits[cid]} for cid in sorted(touched)],
        )


# --- events --------------------------------------------------------------------------------


def handle_events(
    *,
    workspace: Workspace,
    journeys: PublishedJourneys,
    events: Sequence[CustomerEvent],
    match: bool = True,
    enter_runs: bool = True,
) -> EventsReport:
    """Play newly stored events through the journeys, in timestamp order, in one
    transaction: each event first reaches the customer's runs (goal, exit_on, wait_for),
    then starts the runs its triggers match — as the in-memory scenario runner does.

    Pass only events stored now (`store_records` refuses duplicates): a run's id comes
    from its trigger's message id, so an event replayed enters nothing twice either way.
    """
    ordered = sorted(events, key=lambda e: e.record.timestamp)
    if not ordered:
        return EventsReport(0, 0, 0, 0, 0, 0, 0, 0)
    customer_ids = sorted({e.customer_id for e in ordered})
    first = ordered[0].record.timestamp
    history = _EventHistory(workspace.events)
    # Every decision below is taken at an event's time (runs catch up to it, entries start
    # at it): none after the last one.
    history.horizon(ordered[-1].record.timestamp)
    with workspace.state.begin() as connection:
        _begin_write(connection)
        batch = _Batch(connection=connection, journeys=journeys, history=history)
        by_customer: dict[int, list[str]] = defaultdict(list)
        # Always loaded, also to only enter: entry rules need the live runs' keys.
        # Live runs, and ended ones whose goal window is still open (late conversions).
        query = select(RUN_STATE_TEXT).where(
            _among(connection, journey_runs.c.customer_id, customer_ids),
            (journey_runs.c.status.in_(RUN_LIVE)) | (journey_runs.c.goal_until >= first),
        )
        if _is_postgres(connection):
            # Wait for a worker holding one of these runs: its step commits first.
            query = query.with_for_update()
        for (data,) in connection.execute(query):
            state = RunState.from_json(orjson.loads(data))
            batch.load(state)
            by_customer[state.customer_id].append(state.run_id)
        matches: dict[int, list[str]] = defaultdict(list)
        if enter_runs:
            records = [e.record for e in ordered if e.journey is None]
            for name, record in journeys.matcher.match(records):
                matches[id(record)].append(name)
            for e in ordered:
                if e.journey is not None and e.journey in journeys.current:
                    matches[id(e.record)].append(e.journey)
        summaries = _summaries(connection, customer_ids) if matches else {}
        existing = _existing_runs(connection, ordered, matches) if matches else set()
        batch.load_profiles(customer_ids)
        touched: set[str] = set()
        for item in ordered:
            now = item.record.timestamp
            # The customer's runs due before the event take their steps first, so a run
            # sees its own timeline in order however far behind the workers are.
            for run_id in by_customer.get(item.customer_id, ()):
                if batch.catch_up(batch.runs[run_id], until=now):
                    touched.add(run_id)
            reached = match and item.journey is None
            for run_id in list(by_customer.get(item.customer_id, ())) if reached else ():
                state = batch.runs[run_id]
                journey = batch.journey_of(state)
                if journey is None:
                    continue  # a version no longer loaded: left for an operator to see
                decision = on_event(journey, state, item.record, now=now)
                if decision.commands:
                    touched.add(run_id)
                    batch.apply(decision, now=now)
            for name in matches.get(id(item.record), ()):
                journey = journeys.current[name]
                run_id = run_id_for(name, item.customer_id, item.record.message_id)
                if run_id in existing:
                    continue
                summary = summaries.get((name, item.customer_id), RunsSummary())
                active = frozenset(
                    batch.runs[r].key
                    for r in by_customer.get(item.customer_id, ())
                    if batch.runs[r].journey == name and not batch.runs[r].ended
                )
                decision = enter(
                    journey,
                    customer=item.customer_id,
                    trigger_event=item.record,
                    now=now,
                    previous_runs_summary=RunsSummary(
                        entries=summary.entries,
                        last_entered_at=summary.last_entered_at,
                        active_keys=active,
                    ),
                )
                if decision.state is None:
                    batch.not_entered += sum(isinstance(c, NotEntered) for c in decision.commands)
                    continue
                assert any(isinstance(c, Entered) for c in decision.commands)
                batch.entered += 1
                existing.add(run_id)
                summaries[(name, item.customer_id)] = RunsSummary(
                    entries=summary.entries + 1, last_entered_at=now
                )
                by_customer[item.customer_id].append(run_id)
                touched.add(run_id)
                batch.apply(decision, now=now, fresh=True)
        batch.write()
    counts = batch.counts()
    return EventsReport(
        events=len(ordered),
        entered=batch.entered,
        not_entered=batch.not_entered,
        runs_touched=len(touched),
        **counts,
    )


def enter_from_events(
    *, workspace: Workspace, journeys: PublishedJourneys, events: Sequence[CustomerEvent]
) -> EventsReport:
    """Only the entries the events' triggers make (see `handle_events`)."""
    return handle_events(workspace=workspace, journeys=journeys, events=events, match=False)


def match_events(
    *, workspace: Workspace, journeys: PublishedJourneys, events: Sequence[CustomerEvent]
) -> EventsReport:
    """Only goal, exit_on and wait_for on the customers' runs (see `handle_events`)."""
    return handle_events(workspace=workspace, journeys=journeys, events=events, enter_runs=False)


def _summaries(
    connection: Connection, customer_ids: Sequence[int]
) -> dict[tuple[str, int], RunsSummary]:
    """Entries per (journey, customer) of the batch's customers, in one grouped query."""
    rows = connection.execute(
        select(
            journey_runs.c.journey,
            journey_runs.c.customer_id,
            func.count(),
            func.max(journey_runs.c.entered_at),
        )
        .where(_among(connection, journey_runs.c.customer_id, customer_ids))
        .group_by(journey_runs.c.journey, journey_runs.c.customer_id)
    )
    result = {}
    for name, customer_id, count, last in rows:
        result[(name, int(customer_id))] = RunsSummary(entries=int(count), last_entered_at=last)
    return result


def _existing_runs(
    connection: Connection, events: Sequence[CustomerEvent], matches: Mapping[int, list[str]]
) -> set[str]:
    wanted = [
        run_id_for(name, e.customer_id, e.record.message_id)
        for e in events
        for name in matches.get(id(e.record), ())
    ]
    if not wanted:
        return set()
    return set(
        connection.execute(
            select(journey_runs.c.run_id).where(_among(connection, journey_runs.c.run_id, wanted))
        ).scalars()
    )


def _begin_write(connection: Connection) -> None:
    """SQLite: take the write lock before reading, so that what we read cannot change
    before we write (PostgreSQL locks the rows it reads instead)."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")


# --- due runs ------------------------------------------------------------------------------


def advance_due(
    *,
    workspace: Workspace,
    journeys: PublishedJourneys,
    now: datetime,
    limit: int = 2000,
    worker_id: str = "worker",
    max_batches: int | None = None,
    connections: int = 1,
) -> AdvanceReport:
    """Advance every run due at `now`, `limit` runs per transaction, earliest first.

    Each run is advanced at its own wake time, not at `now`: the outcome does not depend
    on when a worker got to it, and a simulated clock moved in large steps sends what a
    wall clock would have. PostgreSQL workers share the runs with FOR UPDATE SKIP LOCKED;
    SQLite takes the database's write lock for the batch (one writer at a time).

    `connections` (PostgreSQL): batches in flight at once, one thread and transaction
    each, sharing the runs as separate workers do — the server writes one batch while
    Python decides the next. SQLite has one writer: always 1. `max_batches` is per
    connection.
    """
    if now.tzinfo is None:
        raise InvalidInputError([], summary="advance_due needs an aware datetime")
    if connections < 1:
        raise InvalidInputError([], summary="advance_due needs at least one connection")
    if connections == 1 or workspace.state.dialect.name != "postgresql":
        return _advance_batches(
            workspace=workspace,
            journeys=journeys,
            now=now,
            limit=limit,
            worker_id=worker_id,
            max_batches=max_batches,
            until_empty=False,
        )
    with ThreadPoolExecutor(max_workers=connections) as pool:
        futures = [
            pool.submit(
                _advance_batches,
                workspace=workspace,
                journeys=journeys,
                now=now,
                limit=limit,
                worker_id=worker_id,
                max_batches=max_batches,
                until_empty=True,
            )
            for _ in range(connections)
        ]
        reports = [future.result() for future in futures]
    return AdvanceReport(
        **{
            name: sum(getattr(report, name) for report in reports)
            for name in AdvanceReport.__dataclass_fields__
        }
    )


def _advance_batches(
    *,
    workspace: Workspace,
    journeys: PublishedJourneys,
    now: datetime,
    limit: int,
    worker_id: str,
    max_batches: int | None,
    until_empty: bool,
) -> AdvanceReport:
    """Batches on one connection until nothing is due; `until_empty`: a short batch (the
    rest locked by another connection) does not end the loop, an empty one does."""
    totals = {"claimed": 0, "batches": 0, "messages": 0, "suppressed": 0}
    totals.update(conversions=0, ended=0)
    history = _EventHistory(workspace.events)
    while max_batches is None or totals["batches"] < max_batches:
        with workspace.state.begin() as connection:
            _begin_write(connection)
            query = (
                select(RUN_STATE_TEXT)
                # The partial index's own predicate, as text: SQLite uses a partial index
                # only when the query repeats its condition with constants, not parameters.
                .where(LIVE_RUNS, journey_runs.c.wake_at <= now)
                # wake_at alone: the index gives that order, so LIMIT stops the scan early.
                .order_by(journey_runs.c.wake_at)
                .limit(limit)
            )
            if _is_postgres(connection):
                query = query.with_for_update(skip_locked=True)
            states = [
                RunState.from_json(orjson.loads(data))
                for data in connection.execute(query).scalars()
            ]
            if not states:
                break
            history.horizon(now)
            batch = _Batch(
                connection=connection, journeys=journeys, worker_id=worker_id, history=history
            )
            batch.load_profiles(state.customer_id for state in states)
            for state in states:
                batch.load(state)
            for state in states:
                batch.catch_up(state, until=now)
            batch.write()
        counts = batch.counts()
        if not batch.changed:
            break  # only runs of versions not loaded were due: nothing this worker can do
        totals["claimed"] += len(states)
        totals["batches"] += 1
        for name, value in counts.items():
            totals[name] += value
        if len(states) < limit and not until_empty:
            break
    return AdvanceReport(**totals)
