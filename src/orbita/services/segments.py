"""Segment refresh: members computed by the compiler, diffed, recorded, announced as events.

Where membership lives (measured on 1 M customers, bench/segments.py): the state store keeps
the record — one row per stay with entered_at / exited_at, and a row per refresh that changed
something. The analytic store (DuckDB by default) keeps a copy of the current members
(`segment_members`), because the diff then runs where the new members are computed: one
FULL OUTER JOIN returns only the customers who entered or left, and a refresh of a segment of
a million members that did not change moves no rows into Python at all. Copying the current
members out of SQLite for each refresh costs more than computing the segment itself.

Each refresh row records the size and a checksum of the members; the analytic copy is
checked against them at the start of every refresh and rebuilt from the record when they
disagree (a crash between the two writes), so the record is always what decides.

Write order: each segment's analytic copy as it is computed (segments and stages later in
the refresh read it), then every segment's events in one append, then the record of all of
them in one transaction. A crash before the record leaves copies that disagree with it: the
next refresh rebuilds them from the record, computes the same differences and emits them
again; with the same `as_of` their messageIds are the same and the store keeps them once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import ibis
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection, Table, and_, delete, func, insert, select, text, update

from orbita.core.errors import NotFoundError, UserError
from orbita.engine.rfm import rfm_expr, rfm_from_features, rfm_orders
from orbita.engine.segments.compile import compile_segment, feature_tables, to_sql
from orbita.engine.segments.features import FeaturePlan, plan_features
from orbita.engine.segments.prepared import PreparedQuery, prepare
from orbita.engine.segments.tables import DIALECTS, Dialect, segment_tables
from orbita.model.segments import RfmCell, Segment, dependency_order, referenced_segments, walk
from orbita.model.strategy import Strategy
from orbita.services.identity import ANONYMOUS
from orbita.services.ltv import refresh_ltv_traits
from orbita.services.workspace import Workspace
from orbita.store.events.base import CUSTOMER_SCHEMA, EVENT_SCHEMA
from orbita.store.state import (
    customers,
    identities,
    segment_memberships,
    segment_refreshes,
    stage_history,
)

SEGMENT_ENTERED = "Segment Entered"
SEGMENT_EXITED = "Segment Exited"
STAGE_PREFIX = "stage:"


def segment_event_id(segment: str, direction: str, customer_id: int, as_of: datetime) -> str:
    """The messageId of a refresh's `Segment Entered` / `Segment Exited` event: a re-run
    of the same refresh stores each once, and journeys started by it start once."""
    return f"segment:{segment}:{direction}:{customer_id}:{as_of.isoformat()}"


FEATURES = "segment_features"  # the event store's tables of per-customer event features
CHECKSUM_MODULUS = 2**61 - 1
# Bound parameters per statement: SQLite allows 32 766; chunks keep statements short.
_CHUNK = 5_000
Kind = Literal["segment", "stage"]
Expr = Any


@dataclass(frozen=True, slots=True)
class RefreshReport:
    """What one refresh of one segment (or stage) found and wrote."""

    name: str
    kind: Kind
    as_of: datetime
    size: int
    entered: int
    exited: int
    definition_hash: str
    changed: bool  # False: nothing was written
    seconds: float


@dataclass(frozen=True, slots=True)
class SegmentSummary:
    """A segment as `orbita segments list` shows it."""

    name: str
    size: int | None  # None: never refreshed
    entered: int  # in the last refresh that changed something
    exited: int
    refreshed_as_of: datetime | None
    definition_changed: bool  # the strategy's definition differs from the one last refreshed


@dataclass(frozen=True, slots=True)
class Member:
    customer_id: int
    user_id: str | None
    entered_at: datetime


@dataclass(frozen=True, slots=True)
class SegmentPreview:
    name: str
    as_of: datetime
    size: int
    sample: tuple[Member, ...]  # entered_at is as_of: nothing is recorded by a preview


# --- the analytic store's inputs -------------------------------------------------------------


# Profiles are written just after their events (services/ingest.py): customers whose
# events arrived this long before the last snapshot are read again, so a profile committed
# a moment after the snapshot read it is not missed.
SNAPSHOT_LAG = timedelta(minutes=5)
_OWN_EVENTS = (SEGMENT_ENTERED, SEGMENT_EXITED)


def sync_customer_snapshot(*, workspace: Workspace, full: bool = True) -> int:
    """Bring the event store's `customers` table (the profiles segment queries join) up to
    date with the state store; the number of profiles copied.

    `full` copies every profile (seconds at 1 M profiles). Otherwise only what changed since
    the last copy: a profile changes through the events that carry its identify traits,
    aliases and merges, so the customers with events received since then (less
    SNAPSHOT_LAG) are copied again, with every customer newer than the snapshot; profiles
    that are gone (merged away, erased) are found by count and dropped. Trait updates that
    come with no event (a journey's `update` step) wait for the next full copy, which
    every on-demand refresh makes.
    """
    mark = _latest_received(workspace)
    since = None if full else workspace.events.snapshot_mark()
    if since is None:
        table = _read_profiles(workspace, where="", params={})
        workspace.events.sync_customers(table, mark=mark or _EPOCH)
        return int(table.num_rows)
    changed = _customers_with_events_since(workspace, since - SNAPSHOT_LAG)
    top = _snapshot_top(workspace)
    parts = [_read_profiles(workspace, where="WHERE customer_id > :top", params={"top": top})]
    for chunk in _chunks([cid for cid in changed.to_pylist() if cid <= top]):
        marks = {f"c{i}": cid for i, cid in enumerate(chunk)}
        where = f"WHERE customer_id IN ({', '.join(':' + m for m in marks)})"
        parts.append(_read_profiles(workspace, where=where, params=marks))
    table = pa.concat_tables(parts)
    workspace.events.update_customers(table, remove=changed, mark=mark or since)
    copied = int(table.num_rows)
    stale = _stale_snapshot_ids(workspace)
    if len(stale):
        workspace.events.update_customers(
            table.schema.empty_table(), remove=stale, mark=mark or since
        )
    return copied


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _events_table() -> Expr:
    return ibis.table(
        {"customer_id": "int64", "name": "string", "received_at": "timestamp('UTC')"},
        name="events",
    )


def _latest_received(workspace: Workspace) -> datetime | None:
    events = _events_table()
    found = workspace.events.ibis().to_pyarrow(events.received_at.max()).as_py()
    return found if isinstance(found, datetime) else None


def _customers_with_events_since(workspace: Workspace, since: datetime) -> pa.Array:
    events = _events_table()
    recent = events.filter(
        events.received_at > ibis.literal(since, type="timestamp('UTC')"),
        events.name.isnull() | ~events.name.isin(list(_OWN_EVENTS)),
    )
    rows = workspace.events.ibis().to_pyarrow(recent.select("customer_id").distinct())
    return rows.column("customer_id").combine_chunks()


def _snapshot_top(workspace: Workspace) -> int:
    snapshot = ibis.table({"customer_id": "int64"}, name="customers")
    found = workspace.events.ibis().to_pyarrow(snapshot.customer_id.max()).as_py()
    return int(found or 0)


def _stale_snapshot_ids(workspace: Workspace) -> pa.Array:
    """Snapshot customers the state store no longer has (merged away, erased elsewhere):
    none when the counts agree, which is the rule."""
    snapshot = ibis.table({"customer_id": "int64"}, name="customers")
    backend = workspace.events.ibis()
    in_snapshot = int(backend.to_pyarrow(snapshot.count()).as_py())
    with workspace.state.connect() as connection:
        in_state = int(connection.execute(select(func.count()).select_from(customers)).scalar_one())
        if in_snapshot == in_state:
            return pa.array([], pa.int64())
        kept = pa.array(
            connection.execute(select(customers.c.customer_id)).scalars().all(), pa.int64()
        )
    ids = backend.to_pyarrow(snapshot.select("customer_id")).column("customer_id")
    return ids.filter(pc.invert(pc.is_in(ids, value_set=kept))).combine_chunks()


def _read_profiles(workspace: Workspace, *, where: str, params: dict[str, Any]) -> pa.Table:
    columns = ", ".join(CUSTOMER_SCHEMA.names[:-3])
    statement = text(
        f"SELECT {columns}, CAST(traits AS TEXT), created_at, updated_at FROM customers "
        f"{where} ORDER BY customer_id"
    )
    batches: list[pa.RecordBatch] = []
    with workspace.state.connect() as connection:
        result = connection.execute(statement, params)
        while rows := result.fetchmany(100_000):
            batches.append(_customer_batch(rows))
    return pa.Table.from_batches(batches, schema=CUSTOMER_SCHEMA)


def _customer_batch(rows: Sequence[Any]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    arrays: list[pa.Array] = []
    for index, field in enumerate(CUSTOMER_SCHEMA):
        values = columns[index]
        if pa.types.is_timestamp(field.type):
            arrays.append(_timestamps(values, field.type))
        else:
            arrays.append(pa.array(values, field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=CUSTOMER_SCHEMA)


def _timestamps(values: Sequence[Any], kind: pa.DataType) -> pa.Array:
    # SQLite hands back UTC text ("2025-11-01 05:35:21.164000"); PostgreSQL, datetimes.
    if values and isinstance(values[0], str):
        return pa.array(values, pa.string()).cast(pa.timestamp("us")).cast(kind)
    return pa.array(values, kind)


def materialise_rfm(
    *,
    workspace: Workspace,
    strategy: Strategy,
    as_of: datetime,
    features: FeaturePlan | None = None,
    backend: Any = None,
    prepared: PreparedRefresh | None = None,
) -> int:
    """Score every customer with orders in the window and write `rfm_cells`; the count.
    With `features` (materialised on `backend`'s connection, holding the RFM orders) the
    scores read them instead of the events. `prepared` keeps the query compiled for the
    next refresh (DuckDB)."""
    dialect = _dialect(workspace)
    backend = backend or workspace.events.ibis()
    if features is not None and features.column(rfm_orders(strategy.rfm)) is not None:
        plan = features
        query = (
            prepared.query(
                strategy,
                ("rfm", tuple(plan.table_names())),
                lambda _at: rfm_from_features(strategy.rfm, plan=plan),
                as_of=as_of,
                dialect=dialect,
            )
            if prepared is not None and dialect == "duckdb"
            else None
        )
        if query is not None:
            backend.truncate_table("rfm_cells")
            query.insert_into(backend, "rfm_cells", as_of)
            return int(backend.con.execute(_RFM_COUNT).fetchall()[0][0])
        cells = rfm_from_features(strategy.rfm, plan=features)
    else:
        cells = rfm_expr(strategy.rfm, as_of=as_of, tables=segment_tables(dialect))
    # Computed where the events are: no million rows through Python and back.
    backend.insert("rfm_cells", cells, overwrite=True)
    return int(backend.to_pyarrow(_RFM_CELLS.count()).as_py())


_RFM_COUNT = 'SELECT count(*) FROM "rfm_cells"'


class PreparedRefresh:
    """The refresh's queries compiled once, for a run that refreshes at many `as_of`s
    (services/runner.py): building and printing them through Ibis costs about a second a
    refresh whatever the store's size. Each is compiled with `as_of` a parameter
    (engine/segments/prepared.py); a query that cannot take it so is compiled per refresh.
    Kept for one strategy: another one empties it."""

    def __init__(self) -> None:
        self._strategy: Strategy | None = None
        self._queries: dict[tuple[object, ...], PreparedQuery | None] = {}

    def query(
        self,
        strategy: Strategy,
        key: tuple[object, ...],
        build: Callable[[datetime], Expr],
        *,
        as_of: datetime,
        dialect: Dialect,
    ) -> PreparedQuery | None:
        if self._strategy is not strategy:
            self._strategy = strategy
            self._queries = {}
        full = (dialect, *key)
        if full not in self._queries:
            self._queries[full] = prepare(build, as_of=as_of, dialect=dialect)
        return self._queries[full]


_RFM_CELLS = ibis.table({"customer_id": "int64"}, name="rfm_cells")


def uses_rfm(strategy: Strategy) -> bool:
    conditions = [s.condition for s in strategy.segments.values()]
    conditions += [s.condition for s in strategy.stage_segments().values()]
    return any(isinstance(node, RfmCell) for c in conditions for node in walk(c))


# --- refresh -----------------------------------------------------------------------------------


def refresh_segments(
    *,
    workspace: Workspace,
    strategy: Strategy,
    as_of: datetime | None = None,
    names: Sequence[str] | None = None,
    inline_references: bool = False,
    stages: bool | None = None,
    full_snapshot: bool = True,
    features: bool = True,
    timings: Callable[[str, float], None] | None = None,
    prepared: PreparedRefresh | None = None,
) -> list[RefreshReport]:
    """Refresh segments (all, or `names` and what they refer to) and, when all are refreshed
    (or `stages` says so), the lifecycle stages; RFM cells first when anything uses them.

    References read the referenced segment's freshly materialised members, unless
    `inline_references` compiles each referenced definition into the query (bench/segments.py
    measures both). `full_snapshot=False` copies the profiles only when they look changed
    (the schedule's choice, see `sync_customer_snapshot`). With `features` (the default) the
    event conditions of all of them are first computed per customer in one scan per event
    name (engine/segments/features.py) and each segment reads those tables. `prepared`
    (one per run of many refreshes) keeps the queries compiled from one refresh to the next.
    """
    moment = _as_of(workspace, as_of)
    note = timings or (lambda _what, _seconds: None)
    unknown = [name for name in names or () if name not in strategy.segments]
    if unknown:
        raise NotFoundError(f"unknown segment {unknown[0]!r}{_known(strategy.segments)}")
    if not names and refresh_ltv_traits(workspace=workspace, strategy=strategy, as_of=moment):
        # The traits came with no event, which the incremental copy would not see.
        full_snapshot = True
    started = time.perf_counter()
    sync_customer_snapshot(workspace=workspace, full=full_snapshot)
    note("customers snapshot", time.perf_counter() - started)
    wanted = _with_dependencies(strategy, names) if names else set(strategy.segments)
    order = [name for name in dependency_order(strategy.segments) if name in wanted]
    keys = order + ([_stage_key(s.name) for s in strategy.stages] if stages is not False else [])
    _no_going_back(workspace, keys, moment)
    _repair_copies(workspace, keys)
    refresher = _Refresher(workspace=workspace, strategy=strategy, as_of=moment, prepared=prepared)
    reports = []
    with_stages = bool(stages or (stages is None and not names))
    try:
        rfm = uses_rfm(strategy)
        if features:
            started = time.perf_counter()
            refresher.materialise_features(order, stages=with_stages, rfm=rfm)
            note("event features", time.perf_counter() - started)
        if rfm:
            started = time.perf_counter()
            materialise_rfm(
                workspace=workspace,
                strategy=strategy,
                as_of=moment,
                features=refresher.features,
                backend=refresher.backend,
                prepared=prepared,
            )
            note("rfm", time.perf_counter() - started)
        if features:
            reports = refresher.together(order, stages=with_stages)
            for report in reports:
                note(report.name, report.seconds)
        else:
            for name in order:
                reports.append(refresher.segment(name, inline=inline_references))
                note(name, reports[-1].seconds)
            if with_stages:
                for report in refresher.stages():
                    reports.append(report)
                    note(report.name, report.seconds)
    finally:
        # Nothing keeps per-customer figures between refreshes (an erasure need not look).
        refresher.drop_features()
    refresher.commit(note)
    return reports


def _as_of(workspace: Workspace, as_of: datetime | None) -> datetime:
    moment = as_of or workspace.clock.now()
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UserError("as_of needs a time zone, such as 2026-03-01T00:00:00Z")
    return moment


def _no_going_back(workspace: Workspace, keys: Sequence[str], as_of: datetime) -> None:
    """Stays are recorded in time order: a refresh before the last one would rewrite it."""
    last = _last_refreshes(workspace)
    latest = max((last[key].as_of for key in keys if key in last), default=None)
    if latest is not None and as_of < latest:
        raise UserError(
            f"segments were refreshed as of {latest.isoformat()}: a refresh cannot go back "
            f"to {as_of.isoformat()} (replay history in a fresh workspace)"
        )


def _with_dependencies(strategy: Strategy, names: Iterable[str]) -> set[str]:
    wanted: set[str] = set()
    pending = list(names)
    while pending:
        name = pending.pop()
        if name in wanted or name not in strategy.segments:
            continue
        wanted.add(name)
        pending.extend(referenced_segments(strategy.segments[name].condition))
    return wanted


def _stage_key(name: str) -> str:
    return STAGE_PREFIX + name


def definition_hash(segment: Segment, *, salt: str = "") -> str:
    text_form = salt + segment.model_dump_json()
    return hashlib.sha256(text_form.encode()).hexdigest()[:16]


def _dialect(workspace: Workspace) -> Dialect:
    backend = workspace.events.backend
    if backend not in DIALECTS:
        raise UserError(f"segments cannot run on the {backend} event store yet")
    return backend


def _members_table() -> Expr:
    return ibis.table({"segment": "string", "customer_id": "int64"}, name="segment_members")


def _current(key: str) -> Expr:
    # A view: two unbound tables of one name are equal to Ibis, and a diff (or a segment
    # reading two others) joins this table with itself.
    table = _members_table().view()
    return table.filter(table.segment == key).select("customer_id")


class _Refresher:
    def __init__(
        self,
        *,
        workspace: Workspace,
        strategy: Strategy,
        as_of: datetime,
        prepared: PreparedRefresh | None = None,
    ) -> None:
        self.workspace = workspace
        self.prepared = prepared
        self.strategy = strategy
        self.as_of = as_of
        self.dialect = _dialect(workspace)
        self.tables = segment_tables(self.dialect)
        self.backend = workspace.events.ibis()
        self.last = _last_refreshes(workspace)
        self.pending: list[_Change] = []
        self.features: FeaturePlan | None = None

    def compile(
        self,
        segment: Segment,
        *,
        name: str | None,
        inline: bool,
        as_of: datetime | None = None,
    ) -> Expr:
        resolve = None if inline else self._resolve
        return compile_segment(
            segment,
            as_of=as_of or self.as_of,
            tables=self.tables,
            segments=self.strategy.segments,
            computed_traits=self.strategy.computed_traits,
            resolve=resolve,
            name=name,
            features=self.features,
        )

    def materialise_features(self, names: Sequence[str], *, stages: bool, rfm: bool) -> None:
        """The per-customer event features of these segments (and of the stages, and RFM's
        orders), written as tables of the event store for the segment queries to read."""
        conditions = [self.strategy.segments[name].condition for name in names]
        if stages:
            conditions += [s.condition for s in self.strategy.stage_segments().values()]
        plan = plan_features(conditions, segments=self.strategy.segments, prefix=FEATURES)
        if rfm:
            plan.add_latest(rfm_orders(self.strategy.rfm))
        key = ("features", tuple(names), stages, rfm)
        for table in plan.table_names():
            # Temporary (this connection's, never written to the store's file): dropped by
            # the end of the refresh; the refresh's queries all run on this connection.
            query = self._prepared((*key, table), self._feature_table(plan, table))
            if query is not None:
                query.create_temp_table(self.backend, table, self.as_of)
                continue
            expr = feature_tables(plan, as_of=self.as_of, tables=self.tables)[table]
            self.backend.drop_table(table, force=True)
            self.backend.create_table(table, expr, temp=True)
        self.features = plan

    def _feature_table(self, plan: FeaturePlan, table: str) -> Callable[[datetime], Expr]:
        return lambda at: feature_tables(plan, as_of=at, tables=self.tables)[table]

    def _prepared(
        self, key: tuple[object, ...], build: Callable[[datetime], Expr]
    ) -> PreparedQuery | None:
        """The query `build` makes, compiled once per run (None: compile it now)."""
        if self.prepared is None or self.dialect not in ("duckdb", "postgres"):
            return None
        return self.prepared.query(
            self.strategy, key, build, as_of=self.as_of, dialect=self.dialect
        )

    def drop_features(self) -> None:
        if self.features is not None:
            for table in self.features.table_names():
                self.backend.drop_table(table, force=True)
            self.features = None

    def _resolve(self, name: str) -> Expr:
        return _current(name)

    def segment(self, name: str, *, inline: bool) -> RefreshReport:
        segment = self.strategy.segments[name]
        new = self.compile(segment, name=name, inline=inline)
        return self._apply(name, "segment", new, definition_hash(segment))

    def stages(self) -> list[RefreshReport]:
        """Each stage holds its segment's members minus those of every earlier stage."""
        reports = []
        earlier: list[str] = []
        for stage in self.strategy.stages:
            segment = stage.condition_segment(self.strategy.segments)
            if isinstance(stage.segment, str):
                members = _current(stage.segment)
            else:
                members = self.compile(segment, name=None, inline=False)
            for key in earlier:
                members = members.anti_join(_current(key), "customer_id")
            salt = "|".join(earlier) + "|"
            digest = definition_hash(segment, salt=salt)
            reports.append(self._apply(stage.name, "stage", members.select("customer_id"), digest))
            earlier.append(_stage_key(stage.name))
        return reports

    def together(self, names: Sequence[str], *, stages: bool) -> list[RefreshReport]:
        """Segments and stages in one query: each compiled with its references inlined
        (over the feature tables they cost little), each stage as its segment minus the
        segments of every earlier stage, all diffed against the current members at once."""
        started = time.perf_counter()
        meta = self._together_meta(names, stages=stages)
        if not meta:
            return []
        if self.dialect != "duckdb":
            # PostgreSQL: Ibis puts the shared parts of one big query in CTEs, where the
            # printer leaves anti-joins as ANTI JOIN, which PostgreSQL lacks: a query each.
            items = self._together_items(names, stages=stages, as_of=self.as_of)
            return [self._apply(name, kind, new, digest) for name, kind, new, digest in items]
        keys = [name if kind == "segment" else _stage_key(name) for name, kind, _ in meta]
        query = self._prepared(
            ("together", tuple(names), stages),
            lambda at: self._together_diff(self._together_items(names, stages=stages, as_of=at)),
        )
        if query is not None:
            rows = query.to_pyarrow(self.backend, self.as_of)
        else:
            items = self._together_items(names, stages=stages, as_of=self.as_of)
            rows = self.backend.to_pyarrow(self._together_diff(items))
        # Every analytic copy in one write (nothing later in this refresh reads them).
        self.workspace.events.apply_member_changes(rows)
        share = (time.perf_counter() - started) / len(meta)
        reports = []
        for key, (name, kind, digest) in zip(keys, meta, strict=True):
            own = rows.filter(pc.equal(rows.column("segment"), key))
            report = self._take(name, kind, own, digest, time.perf_counter(), applied=True)
            reports.append(replace(report, seconds=share))
        return reports

    def _together_meta(self, names: Sequence[str], *, stages: bool) -> list[tuple[str, Kind, str]]:
        """(name, kind, definition hash) of each item of `_together_items`, built cheaply."""
        meta: list[tuple[str, Kind, str]] = [
            (name, "segment", definition_hash(self.strategy.segments[name])) for name in names
        ]
        if stages and self.strategy.stages:
            earlier_keys: list[str] = []
            for stage in self.strategy.stages:
                segment = stage.condition_segment(self.strategy.segments)
                digest = definition_hash(segment, salt="|".join(earlier_keys) + "|")
                meta.append((stage.name, "stage", digest))
                earlier_keys.append(_stage_key(stage.name))
        return meta

    def _together_items(
        self, names: Sequence[str], *, stages: bool, as_of: datetime
    ) -> list[tuple[str, Kind, Expr, str]]:
        """(name, kind, members at `as_of`, definition hash) of each segment and stage."""
        items: list[tuple[str, Kind, Expr, str]] = []
        for name in names:
            segment = self.strategy.segments[name]
            new = self.compile(segment, name=name, inline=True, as_of=as_of)
            items.append((name, "segment", new, definition_hash(segment)))
        if stages and self.strategy.stages:
            # First match wins: each customer's stage is the first whose segment holds them.
            ranked = ibis.union(
                *(
                    self.compile(
                        stage.condition_segment(self.strategy.segments),
                        name=stage.segment if isinstance(stage.segment, str) else None,
                        inline=True,
                        as_of=as_of,
                    ).select("customer_id", rank=ibis.literal(index, "int16"))
                    for index, stage in enumerate(self.strategy.stages)
                ),
                distinct=False,
            )
            first = ranked.group_by("customer_id").aggregate(rank=ranked["rank"].min())
            earlier_keys: list[str] = []
            for index, stage in enumerate(self.strategy.stages):
                segment = stage.condition_segment(self.strategy.segments)
                digest = definition_hash(segment, salt="|".join(earlier_keys) + "|")
                mine = first.filter(first["rank"] == index).select("customer_id")
                items.append((stage.name, "stage", mine, digest))
                earlier_keys.append(_stage_key(stage.name))
        return items

    def _together_diff(self, items: Sequence[tuple[str, Kind, Expr, str]]) -> Expr:
        """(segment, customer_id, side) of every member who entered (1) or left (2)."""
        keys = [name if kind == "segment" else _stage_key(name) for name, kind, _, _ in items]
        current = _members_table().view()
        marked = ibis.union(
            *(
                new.select(
                    segment=ibis.literal(key, "string"),
                    customer_id=new.customer_id,
                    side=ibis.literal(1, "int8"),
                )
                for key, (_, _, new, _) in zip(keys, items, strict=True)
            ),
            current.filter(current.segment.isin(keys)).select(
                "segment", "customer_id", side=ibis.literal(2, "int8")
            ),
            distinct=False,
        )
        sides = marked.group_by("segment", "customer_id").aggregate(side=marked.side.sum())
        return sides.filter(sides.side != 3)

    def _apply(self, name: str, kind: Kind, new: Expr, digest: str) -> RefreshReport:
        started = time.perf_counter()
        key = name if kind == "segment" else _stage_key(name)
        current = _current(key)
        # Only the differences leave the engine: new members marked 1, current ones 2, summed
        # per customer; 1 entered, 2 exited. (A FULL OUTER JOIN says the same, but Ibis 12
        # hoists a semi-join of `new` above the outer join, which changes its meaning.)
        marked = ibis.union(
            new.select("customer_id", side=ibis.literal(1, "int8")),
            current.select("customer_id", side=ibis.literal(2, "int8")),
            distinct=False,
        )
        sides = marked.group_by("customer_id").aggregate(side=marked.side.sum())
        rows = self.backend.to_pyarrow(sides.filter(sides.side != 3))
        return self._take(name, kind, rows, digest, started)

    def _take(
        self,
        name: str,
        kind: Kind,
        rows: pa.Table,
        digest: str,
        started: float,
        *,
        applied: bool = False,
    ) -> RefreshReport:
        """Book one segment's or stage's differences (customer_id, side: 1 entered, 2
        exited): its analytic copy now, its events and record at `commit`."""
        key = name if kind == "segment" else _stage_key(name)
        side = rows.column("side")
        ids = rows.column("customer_id")
        entered = ids.filter(pc.equal(side, 1)).combine_chunks()
        exited = ids.filter(pc.equal(side, 2)).combine_chunks()
        previous = self.last.get(key)
        size = (previous.size if previous else 0) + len(entered) - len(exited)
        checksum = _checksum_after(previous, entered, exited)
        changed = bool(len(entered) or len(exited)) or previous is None or previous.hash != digest
        if changed:
            # The analytic copy first: segments and stages later in this refresh read it.
            # The events and the record follow for all of them at once (`commit`); a crash
            # before then leaves copies that disagree with the record, which the next
            # refresh rebuilds from the record before it computes (and emits) again.
            if (len(entered) or len(exited)) and not applied:
                self.workspace.events.apply_members(key=key, entered=entered, exited=exited)
            self.pending.append(
                _Change(
                    name=name,
                    kind=kind,
                    entered=entered,
                    exited=exited,
                    size=size,
                    checksum=checksum,
                    digest=digest,
                )
            )
        return RefreshReport(
            name=name,
            kind=kind,
            as_of=self.as_of,
            size=size,
            entered=len(entered),
            exited=len(exited),
            definition_hash=digest,
            changed=changed,
            seconds=time.perf_counter() - started,
        )

    def commit(self, note: Callable[[str, float], None]) -> None:
        """Every segment's `Segment Entered/Exited` events in one append, then the record
        of every segment and stage in one transaction."""
        if not self.pending:
            return
        started = time.perf_counter()
        events = self._events([c for c in self.pending if c.kind == "segment"])
        if events.num_rows:
            self.workspace.events.append(events)
        note("events", time.perf_counter() - started)
        started = time.perf_counter()
        now = self.workspace.clock.now()
        with self.workspace.state.begin() as connection:
            for change in self.pending:
                if change.kind == "segment":
                    _record_segment(
                        connection, change.name, self.as_of, change.entered, change.exited
                    )
                else:
                    _record_stage(
                        connection, change.name, self.as_of, change.entered, change.exited
                    )
            connection.execute(
                insert(segment_refreshes),
                [
                    {
                        "segment": change.key,
                        "as_of": self.as_of,
                        "size": change.size,
                        "entered": len(change.entered),
                        "exited": len(change.exited),
                        "definition_hash": change.digest,
                        "checksum": change.checksum,
                        "refreshed_at": now,
                    }
                    for change in self.pending
                ],
            )
        self.pending = []
        note("record", time.perf_counter() - started)

    def _events(self, changes: Sequence[_Change]) -> pa.Table:
        """`Segment Entered` / `Segment Exited` for journeys to trigger on, built as one
        Arrow table (the customers are known: no identity resolution). The messageId is
        (segment, customer, direction, as_of), so a re-run stores each one once."""
        every = [c.entered for c in changes] + [c.exited for c in changes]
        ids = _ids_of(
            self.workspace,
            pa.concat_arrays(every).to_pylist() if every else [],
        )
        message_ids: list[str] = []
        customer_ids: list[int] = []
        user_ids: list[str | None] = []
        anonymous_ids: list[str | None] = []
        names: list[str] = []
        properties: list[str] = []
        for change in changes:
            segment = orjson.dumps({"segment": change.name}).decode()
            for direction, event, members in (
                ("entered", SEGMENT_ENTERED, change.entered),
                ("exited", SEGMENT_EXITED, change.exited),
            ):
                for customer_id in members.to_pylist():
                    found = ids.get(customer_id)
                    if found is None:
                        continue  # erased or merged since: nobody to tell
                    message_ids.append(
                        segment_event_id(change.name, direction, customer_id, self.as_of)
                    )
                    customer_ids.append(customer_id)
                    user_ids.append(found[0])
                    anonymous_ids.append(found[1])
                    names.append(event)
                    properties.append(segment)
        rows = len(message_ids)
        return pa.table(
            {
                "message_id": message_ids,
                "customer_id": customer_ids,
                "user_id": user_ids,
                "anonymous_id": anonymous_ids,
                "type": ["track"] * rows,
                "name": names,
                "properties": properties,
                "context": [_CONTEXT] * rows,
                "timestamp": [self.as_of] * rows,
                "received_at": [self.workspace.clock.now()] * rows,
            },
            schema=EVENT_SCHEMA,
        )


_CONTEXT = orjson.dumps({"library": {"name": "orbita"}}).decode()


@dataclass(frozen=True, slots=True)
class _Change:
    """One segment's or stage's difference, waiting for its events and record."""

    name: str
    kind: Kind
    entered: pa.Array
    exited: pa.Array
    size: int
    checksum: int
    digest: str

    @property
    def key(self) -> str:
        return self.name if self.kind == "segment" else _stage_key(self.name)


def _ids_of(
    workspace: Workspace, customer_ids: list[int]
) -> dict[int, tuple[str | None, str | None]]:
    """(user_id, anonymous_id) to address each customer's event; anonymous only without a
    user id."""
    found: dict[int, tuple[str | None, str | None]] = {}
    anonymous: list[int] = []
    with workspace.state.connect() as connection:
        for chunk in _chunks(customer_ids):
            for customer_id, user_id in connection.execute(
                select(customers.c.customer_id, customers.c.user_id).where(
                    customers.c.customer_id.in_(chunk)
                )
            ):
                if user_id is None:
                    anonymous.append(int(customer_id))
                else:
                    found[int(customer_id)] = (user_id, None)
        for chunk in _chunks(anonymous):
            for customer_id, value in connection.execute(
                select(identities.c.customer_id, func.min(identities.c.value))
                .where(identities.c.kind == ANONYMOUS, identities.c.customer_id.in_(chunk))
                .group_by(identities.c.customer_id)
            ):
                found[int(customer_id)] = (None, value)
    return found


def _chunks(values: Sequence[int]) -> Iterable[list[int]]:
    for start in range(0, len(values), _CHUNK):
        yield list(values[start : start + _CHUNK])


def _record_segment(
    connection: Connection, name: str, as_of: datetime, entered: pa.Array, exited: pa.Array
) -> None:
    _close_stays(
        connection, segment_memberships, segment_memberships.c.segment == name, as_of, exited
    )
    if len(entered):
        connection.execute(
            insert(segment_memberships),
            [
                {"segment": name, "customer_id": cid, "entered_at": as_of, "exited_at": None}
                for cid in sorted(entered.to_pylist())
            ],
        )


def _record_stage(
    connection: Connection, name: str, as_of: datetime, entered: pa.Array, exited: pa.Array
) -> None:
    _close_stays(connection, stage_history, stage_history.c.stage == name, as_of, exited)
    if len(entered):
        connection.execute(
            insert(stage_history),
            [
                {"customer_id": cid, "stage": name, "entered_at": as_of, "exited_at": None}
                for cid in sorted(entered.to_pylist())
            ],
        )


def _close_stays(
    connection: Connection, table: Table, which: Any, as_of: datetime, exited: pa.Array
) -> None:
    for chunk in _chunks(sorted(exited.to_pylist())):
        connection.execute(
            update(table)
            .where(which, table.c.exited_at.is_(None), table.c.customer_id.in_(chunk))
            .values(exited_at=as_of)
        )


# --- the record and its analytic copy ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Last:
    size: int
    checksum: int
    hash: str
    as_of: datetime
    entered: int
    exited: int


def _last_refreshes(workspace: Workspace) -> dict[str, _Last]:
    """The latest refresh row of every segment and stage (one query)."""
    latest = (
        select(segment_refreshes.c.segment, func.max(segment_refreshes.c.refresh_id).label("id"))
        .group_by(segment_refreshes.c.segment)
        .subquery()
    )
    statement = select(segment_refreshes).join(
        latest,
        and_(
            segment_refreshes.c.segment == latest.c.segment,
            segment_refreshes.c.refresh_id == latest.c.id,
        ),
    )
    with workspace.state.connect() as connection:
        rows = connection.execute(statement).all()
    return {
        row.segment: _Last(
            size=int(row.size),
            checksum=int(row.checksum),
            hash=row.definition_hash,
            as_of=row.as_of,
            entered=int(row.entered),
            exited=int(row.exited),
        )
        for row in rows
    }


def _checksum_after(previous: _Last | None, entered: pa.Array, exited: pa.Array) -> int:
    total = previous.checksum if previous else 0
    total += sum(entered.to_pylist()) - sum(exited.to_pylist())
    return int(total % CHECKSUM_MODULUS)


def _repair_copies(workspace: Workspace, keys: Sequence[str]) -> None:
    """Rebuild the analytic copy of any segment or stage whose members disagree with the
    record (size and checksum): the record decides."""
    last = _last_refreshes(workspace)
    table = _members_table()
    stats = table.group_by("segment").aggregate(size=table.count(), total=table.customer_id.sum())
    found = {
        row["segment"]: (int(row["size"]), int(row["total"] or 0) % CHECKSUM_MODULUS)
        for row in workspace.events.ibis().to_pyarrow(stats).to_pylist()
    }
    for key in keys:
        record = last.get(key)
        want = (record.size, record.checksum) if record else (0, 0)
        if found.get(key, (0, 0)) != want:
            workspace.events.replace_members(key=key, members=_recorded_members(workspace, key))


def _recorded_members(workspace: Workspace, key: str) -> pa.Array:
    with workspace.state.connect() as connection:
        if key.startswith(STAGE_PREFIX):
            which = stage_history.c.stage == key.removeprefix(STAGE_PREFIX)
            statement = select(stage_history.c.customer_id).where(
                which, stage_history.c.exited_at.is_(None)
            )
        else:
            statement = select(segment_memberships.c.customer_id).where(
                segment_memberships.c.segment == key, segment_memberships.c.exited_at.is_(None)
            )
        return pa.array(connection.execute(statement).scalars().all(), pa.int64())


# --- reading -----------------------------------------------------------------------------------


def list_segments(*, workspace: Workspace, strategy: Strategy) -> list[SegmentSummary]:
    """Every segment of the strategy with its size and change at the last refresh."""
    last = _last_refreshes(workspace)
    summaries = []
    for name, segment in strategy.segments.items():
        found = last.get(name)
        summaries.append(
            SegmentSummary(
                name=name,
                size=found.size if found else None,
                entered=found.entered if found else 0,
                exited=found.exited if found else 0,
                refreshed_as_of=found.as_of if found else None,
                definition_changed=found is not None and found.hash != definition_hash(segment),
            )
        )
    return summaries


def segment_summary(*, workspace: Workspace, strategy: Strategy, name: str) -> SegmentSummary:
    for summary in list_segments(workspace=workspace, strategy=strategy):
        if summary.name == name:
            return summary
    raise NotFoundError(f"unknown segment {name!r}{_known(strategy.segments)}")


def segment_members(
    *, workspace: Workspace, name: str, limit: int | None = None, offset: int = 0
) -> list[Member]:
    """The current members as recorded by the last refresh, by customer id."""
    statement = (
        select(
            segment_memberships.c.customer_id,
            customers.c.user_id,
            segment_memberships.c.entered_at,
        )
        .join(
            customers,
            customers.c.customer_id == segment_memberships.c.customer_id,
            isouter=True,
        )
        .where(segment_memberships.c.segment == name, segment_memberships.c.exited_at.is_(None))
        .order_by(segment_memberships.c.customer_id)
        .offset(offset)
    )
    if limit is not None:
        statement = statement.limit(limit)
    with workspace.state.connect() as connection:
        rows = connection.execute(statement).all()
    return [
        Member(customer_id=int(row.customer_id), user_id=row.user_id, entered_at=row.entered_at)
        for row in rows
    ]


def preview_segment(
    *,
    workspace: Workspace,
    strategy: Strategy,
    name: str,
    as_of: datetime | None = None,
    sample: int = 10,
) -> SegmentPreview:
    """Size and a sample of the members at `as_of`, computed now; nothing is saved (the
    customers snapshot is brought up to date, which is no membership change)."""
    segment = _segment(strategy, name)
    moment = _as_of(workspace, as_of)
    sync_customer_snapshot(workspace=workspace)
    if uses_rfm(strategy):
        materialise_rfm(workspace=workspace, strategy=strategy, as_of=moment)
    expr = compile_segment(
        segment,
        as_of=moment,
        tables=segment_tables(_dialect(workspace)),
        segments=strategy.segments,
        computed_traits=strategy.computed_traits,
        name=name,
    )
    backend = workspace.events.ibis()
    size = int(backend.to_pyarrow(expr.count()).as_py())
    picked = backend.to_pyarrow(expr.order_by("customer_id").limit(sample))
    ids = picked.column("customer_id").to_pylist()
    users = _ids_of(workspace, ids)
    return SegmentPreview(
        name=name,
        as_of=moment,
        size=size,
        sample=tuple(
            Member(customer_id=cid, user_id=users.get(cid, (None, None))[0], entered_at=moment)
            for cid in ids
        ),
    )


def explain_segment(*, strategy: Strategy, name: str, dialect: str, as_of: datetime) -> str:
    """The SQL one engine runs for the segment (references inlined)."""
    if dialect not in DIALECTS:
        raise UserError(f"unknown dialect {dialect!r}: use one of {', '.join(DIALECTS)}")
    expr = compile_segment(
        _segment(strategy, name),
        as_of=as_of,
        tables=segment_tables(dialect),
        segments=strategy.segments,
        computed_traits=strategy.computed_traits,
        name=name,
    )
    return to_sql(expr, dialect=dialect)


def _segment(strategy: Strategy, name: str) -> Segment:
    segment = strategy.segments.get(name)
    if segment is None:
        raise NotFoundError(f"unknown segment {name!r}{_known(strategy.segments)}")
    return segment


def _known(names: Mapping[str, Any]) -> str:
    return f" (known: {', '.join(sorted(names))})" if names else " (the strategy has none)"


__all__ = [
    "SEGMENT_ENTERED",
    "SEGMENT_EXITED",
    "Member",
    "RefreshReport",
    "SegmentPreview",
    "SegmentSummary",
    "explain_segment",
    "list_segments",
    "materialise_rfm",
    "preview_segment",
    "refresh_segments",
    "segment_members",
    "segment_summary",
    "sync_customer_snapshot",
]


def erase_memberships(*, connection: Connection, customer_id: int, now: datetime) -> int:
    """Remove a customer from every segment and stage (GDPR erasure), keeping the record's
    size and checksum true: each segment they were in gets a refresh row without them (an
    erasure, not an exit: no `Segment Exited` event). Returns the rows removed."""
    current = [
        row.segment
        for row in connection.execute(
            select(segment_memberships.c.segment).where(
                segment_memberships.c.customer_id == customer_id,
                segment_memberships.c.exited_at.is_(None),
            )
        )
    ]
    current += [
        _stage_key(row.stage)
        for row in connection.execute(
            select(stage_history.c.stage).where(
                stage_history.c.customer_id == customer_id, stage_history.c.exited_at.is_(None)
            )
        )
    ]
    for key in current:
        last = connection.execute(
            select(segment_refreshes)
            .where(segment_refreshes.c.segment == key)
            .order_by(segment_refreshes.c.refresh_id.desc())
            .limit(1)
        ).one_or_none()
        if last is None:
            continue
        connection.execute(
            insert(segment_refreshes).values(
                segment=key,
                as_of=last.as_of,
                size=int(last.size) - 1,
                entered=0,
                exited=0,
                definition_hash=last.definition_hash,
                checksum=(int(last.checksum) - customer_id) % CHECKSUM_MODULUS,
                refreshed_at=now,
            )
        )
    return sum(
        connection.execute(delete(table).where(table.c.customer_id == customer_id)).rowcount
        for table in (segment_memberships, stage_history)
    )
