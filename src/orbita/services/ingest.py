"""Ingestion: validated messages in, customers resolved, events stored once, traits applied.

`store_records` is the one function through which events enter a workspace (API, import,
generators). `Ingestor` puts a group commit in front of it for the HTTP API: concurrent
requests are coalesced into large writes, which the event store takes far faster than many
small ones, and each request is answered once its events are durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import multiprocessing
import os
import queue
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast, overload

import orjson
import pyarrow as pa
from sqlalchemy import Connection, bindparam, select, update

from orbita.core.zones import is_time_zone
from orbita.model.customers import PROFILE_TRAITS
from orbita.model.events import EventRecord
from orbita.model.messages import parse_batch_json
from orbita.services.identity import IdentityRef, IdentityResolver, follow_merges
from orbita.services.journeys import CustomerEvent
from orbita.services.workspace import Workspace
from orbita.store.events.base import EVENT_SCHEMA, event_table
from orbita.store.state import customers

T = TypeVar("T")
log = logging.getLogger("orbita.ingest")

OnStored = Callable[[Sequence[CustomerEvent]], None]
"""Called by the `Ingestor` after each group commit with the events it stored newly."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    received: int
    stored: int
    duplicates: int

    def __add__(self, other: IngestResult) -> IngestResult:
        return IngestResult(
            received=self.received + other.received,
            stored=self.stored + other.stored,
            duplicates=self.duplicates + other.duplicates,
        )


@dataclass(frozen=True, slots=True)
class PreparedEvents:
    """A batch made ready for the writer: validated, normalised, and already in Arrow.

    Building it is most of the Python work of ingestion, so the HTTP API builds it in worker
    processes (`prepare_batch_json`) and the single writer only resolves customers and
    appends. It pickles cheaply (an Arrow table, plus the rare identify records).
    """

    table: pa.Table  # EVENT_SCHEMA without customer_id, plus previous_id and group_id
    identifies: tuple[tuple[int, EventRecord], ...]  # (row, record): traits to apply

    def __len__(self) -> int:
        return int(self.table.num_rows)

    @classmethod
    def of(cls, records: Sequence[EventRecord]) -> PreparedEvents:
        table = event_table(records, [0] * len(records)).drop_columns(["customer_id"])
        table = table.append_column(
            "previous_id", pa.array([r.previous_id for r in records], pa.string())
        ).append_column("group_id", pa.array([r.group_id for r in records], pa.string()))
        identifies = tuple((row, r) for row, r in enumerate(records) if r.type == "identify")
        return cls(table=table, identifies=identifies)

    @classmethod
    def concat(cls, batches: Sequence[PreparedEvents]) -> PreparedEvents:
        if len(batches) == 1:
            return batches[0]
        identifies: list[tuple[int, EventRecord]] = []
        offset = 0
        for batch in batches:
            identifies += [(offset + row, record) for row, record in batch.identifies]
            offset += len(batch)
        return cls(table=pa.concat_tables([b.table for b in batches]), identifies=tuple(identifies))

    def message_ids(self) -> list[str]:
        return cast(list[str], self.table.column("message_id").to_pylist())

    def records(self, rows: Sequence[int]) -> list[EventRecord]:
        """These rows as records again (for the few consumers that want them whole)."""
        if not rows:
            return []
        picked = self.table.take(pa.array(rows, pa.int64())).to_pylist()
        return [
            EventRecord(
                message_id=row["message_id"],
                type=row["type"],
                name=row["name"],
                user_id=row["user_id"],
                anonymous_id=row["anonymous_id"],
                properties=orjson.loads(row["properties"]),
                context=orjson.loads(row["context"]),
                timestamp=row["timestamp"],
                received_at=row["received_at"],
                previous_id=row["previous_id"],
                group_id=row["group_id"],
            )
            for row in picked
        ]

    def identities(self) -> list[IdentityRef]:
        columns = [
            self.table.column(name).to_pylist()
            for name in ("type", "user_id", "anonymous_id", "previous_id")
        ]
        # Times as integers: a datetime is only built for the few customers created.
        micros = self.table.column("timestamp").cast(pa.int64()).to_pylist()
        return [IdentityRef(*row) for row in zip(*columns, micros, strict=True)]


def prepare_batch_json(
    body: bytes, *, received_at: datetime, max_message_bytes: int | None
) -> PreparedEvents:
    """Parse and prepare a `/v1/batch` body (runs in the API's parse worker processes)."""
    records = parse_batch_json(body, received_at=received_at, max_message_bytes=max_message_bytes)
    return PreparedEvents.of(records)


def store_records(
    *,
    workspace: Workspace,
    records: Sequence[EventRecord],
    resolver: IdentityResolver | None = None,
) -> IngestResult:
    """Resolve customers, store the events not stored before, apply identify traits.

    Idempotent on messageId: a retried delivery stores nothing and changes no profile.
    Profiles are written before events, so a crash in between leaves at worst a profile
    without the events, which the client's retry then stores.
    """
    return store_prepared(workspace=workspace, events=PreparedEvents.of(records), resolver=resolver)


def store_prepared(
    *,
    workspace: Workspace,
    events: PreparedEvents,
    resolver: IdentityResolver | None = None,
) -> IngestResult:
    """`store_records` for a batch prepared elsewhere."""
    keys = events.message_ids()
    stored = _store(workspace=workspace, events=events, keys=keys, resolver=resolver)
    return _result(keys, stored)


def _result(keys: Sequence[str], stored: set[str]) -> IngestResult:
    new = sum(_first_stored(keys, stored))
    return IngestResult(received=len(keys), stored=new, duplicates=len(keys) - new)


def _first_stored(keys: Sequence[str], stored: set[str]) -> list[bool]:
    """Per message, whether it was stored now (a message twice in one write counts once)."""
    seen: set[str] = set()
    flags = []
    for key in keys:
        flags.append(key in stored and key not in seen)
        seen.add(key)
    return flags


def _store(
    *,
    workspace: Workspace,
    events: PreparedEvents,
    keys: Sequence[str],
    resolver: IdentityResolver | None,
) -> set[str]:
    resolved = _resolve(workspace=workspace, events=events, resolver=resolver)
    return _write(workspace=workspace, resolved=resolved, keys=keys)


@dataclass(frozen=True, slots=True)
class _Resolved:
    """A batch whose customers are known: what remains is to write it."""

    events: PreparedEvents
    customer_ids: list[int]
    moves: dict[int, int]  # merged customer → the one it now is
    table: pa.Table  # the events as the store takes them (EVENT_SCHEMA)


def _resolve(
    *, workspace: Workspace, events: PreparedEvents, resolver: IdentityResolver | None
) -> _Resolved:
    if not len(events):
        return _Resolved(events=events, customer_ids=[], moves={}, table=EVENT_SCHEMA.empty_table())
    resolver = resolver or IdentityResolver()
    try:
        with workspace.state.begin() as connection:
            customer_ids, merges = resolver.resolve(connection, events.identities())
    except BaseException:
        resolver.forget()  # the cache may name customers the rollback removed
        raise
    moves = {source: follow_merges(merges, source) for source in merges}
    # Built here, not by the writer: in the `Ingestor` this runs beside the previous write.
    table = events.table.drop_columns(["previous_id", "group_id"]).add_column(
        2, "customer_id", pa.array(customer_ids, pa.int64())
    )
    return _Resolved(
        events=events,
        customer_ids=customer_ids,
        moves=moves,
        table=table.select(list(EVENT_SCHEMA.names)),
    )


def _write(*, workspace: Workspace, resolved: _Resolved, keys: Sequence[str]) -> set[str]:
    events, customer_ids = resolved.events, resolved.customer_ids
    if not len(events):
        return set()
    # Merged profiles' events follow them: one statement for the whole write (each is a
    # scan of the events table, so never one per merge).
    workspace.events.reassign(moves=resolved.moves)
    stored = workspace.events.append(resolved.table)
    profile_updates = [
        (record, customer_ids[row]) for row, record in events.identifies if keys[row] in stored
    ]
    if profile_updates:
        with workspace.state.begin() as connection:
            _apply_traits(connection, profile_updates)
    return stored


def _apply_traits(connection: Connection, updates: Iterable[tuple[EventRecord, int]]) -> None:
    """Merge identify traits into profiles, in arrival order (the last write wins)."""
    by_customer: dict[int, list[EventRecord]] = defaultdict(list)
    for record, customer_id in updates:
        by_customer[customer_id].append(record)
    current = {
        row.customer_id: row
        for row in connection.execute(
            select(customers).where(customers.c.customer_id.in_(list(by_customer)))
        )
    }
    rows: list[dict[str, Any]] = []
    for customer_id, records in by_customer.items():
        row = current.get(customer_id)
        if row is None:
            continue  # erased meanwhile
        values: dict[str, Any] = {
            "email": row.email,
            "phone": row.phone,
            "telegram_chat_id": row.telegram_chat_id,
            "timezone": row.timezone,
            "locale": row.locale,
            "created_at": row.created_at,
        }
        traits = dict(row.traits or {})
        updated_at: datetime = row.updated_at
        for record in records:
            traits.update(record.properties)
            values.update(_profile_fields(record))
            updated_at = max(updated_at, record.timestamp)
        rows.append({"cid": customer_id, **values, "traits": traits, "updated_at": updated_at})
    if rows:
        statement = (
            update(customers)
            .where(customers.c.customer_id == bindparam("cid"))
            .values({name: bindparam(name) for name in rows[0] if name != "cid"})
        )
        connection.execute(statement, rows)


def _profile_fields(record: EventRecord) -> dict[str, Any]:
    """Profile fields an identify sets: reserved traits, else the SDK's context."""
    fields: dict[str, Any] = {}
    for trait, column in PROFILE_TRAITS.items():
        value = record.properties.get(trait)
        if value is not None and value != "":
            fields[column] = str(value)
    for column in ("timezone", "locale"):
        if column not in fields and isinstance(record.context.get(column), str):
            fields[column] = record.context[column]
    if "timezone" in fields and not is_time_zone(fields["timezone"]):
        del fields["timezone"]  # kept as a trait, but never used to schedule a send
    created = record.properties.get("createdAt") or record.properties.get("created_at")
    if isinstance(created, str):
        with contextlib.suppress(ValueError):
            parsed = datetime.fromisoformat(created)
            if parsed.tzinfo is not None:
                fields["created_at"] = parsed
    return fields


class BatchPreparer:
    """Prepares `/v1/batch` bodies in worker processes, so that validation — most of the
    Python work of ingestion — runs beside the writer instead of taking turns with it for
    the GIL. With no workers it prepares in the caller's process."""

    def __init__(self, *, workers: int | None) -> None:
        count = (os.cpu_count() or 1) if workers is None else workers
        self._pool = (
            ProcessPoolExecutor(
                max_workers=count,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
            )
            if count > 0
            else None
        )

    async def prepare(
        self, body: bytes, *, received_at: datetime, max_message_bytes: int | None
    ) -> PreparedEvents:
        if self._pool is None:
            return prepare_batch_json(
                body, received_at=received_at, max_message_bytes=max_message_bytes
            )
        work = functools.partial(
            prepare_batch_json, body, received_at=received_at, max_message_bytes=max_message_bytes
        )
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _start_worker() -> None:
    """A parse worker holds nothing between batches, but the modules it imported are a few
    hundred thousand objects that every full garbage collection walked: a batch creates
    enough objects to set one off often. Frozen, and with collections rarer, preparing a
    batch took about 40 % less CPU (13.9–17.8 → 8.1–8.7 µs an event)."""
    prepare_batch_json(b'{"batch": []}', received_at=datetime.now(UTC), max_message_bytes=None)
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


@dataclass(slots=True)
class _Job:
    events: PreparedEvents
    done: Future[IngestResult]


@dataclass(slots=True)
class _Exclusive:
    work: Callable[[], object]
    done: Future[object]


@dataclass(slots=True)
class _Write:
    jobs: list[_Job]
    keys: list[str]
    resolved: _Resolved


class Ingestor:
    """Group commit in front of `store_records`, in two stages of one thread each.

    The first coalesces waiting requests and resolves their customers; the second writes
    the events. The event store works without the GIL, so the next batch is resolved while
    this one is written; a stage waits for the other rather than run ahead, which keeps
    writes large when requests pile up and keeps them in arrival order. The next batch is
    formed when the writer starts on the last one, so it holds what came during a write.

    `on_stored`, when given, is called in the writer after each write with the events stored
    newly by it (never duplicates), in arrival order, before their requests are answered.
    """

    def __init__(
        self,
        *,
        workspace: Workspace,
        max_batch_events: int = 20_000,
        on_stored: OnStored | None = None,
    ) -> None:
        self._workspace = workspace
        self._max = max_batch_events
        self._on_stored = on_stored
        self._queue: queue.SimpleQueue[_Job | _Exclusive | None] = queue.SimpleQueue()
        self._writes: queue.Queue[_Write | _Exclusive | None] = queue.Queue(maxsize=1)
        self._taken = threading.Condition()  # the writer took what was handed over
        self._resolver = IdentityResolver()
        self._thread = threading.Thread(target=self._run, name="orbita-ingest", daemon=True)
        self._writer = threading.Thread(
            target=self._write_loop, name="orbita-ingest-writer", daemon=True
        )
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._writer.start()
            self._thread.start()

    def close(self) -> None:
        if self._started:
            self._queue.put(None)
            self._thread.join()
            self._writer.join()
            self._started = False

    def exclusive(self, work: Callable[[], T]) -> T:
        """Run `work` in the writer thread, between writes; cached ids are dropped after it.

        Erasures go through here so that no write in flight resurrects what they removed.
        """
        if not self._started:
            raise RuntimeError("the ingestor is not started")
        task = _Exclusive(work=work, done=Future())
        self._queue.put(task)
        return cast(T, task.done.result())

    def ingest(self, records: Sequence[EventRecord] | PreparedEvents) -> IngestResult:
        """Store the events; returns once they are durable."""
        return self._submit(records).result()

    async def ingest_async(self, records: Sequence[EventRecord] | PreparedEvents) -> IngestResult:
        return await asyncio.wrap_future(self._submit(records))

    def _submit(self, records: Sequence[EventRecord] | PreparedEvents) -> Future[IngestResult]:
        if not self._started:
            raise RuntimeError("the ingestor is not started")
        events = records if isinstance(records, PreparedEvents) else PreparedEvents.of(records)
        job = _Job(events=events, done=Future())
        self._queue.put(job)
        return job.done

    def _run(self) -> None:
        stopping = False
        pending: _Job | _Exclusive | None = None
        while not stopping:
            first = pending or self._queue.get()
            pending = None
            if first is None:
                break
            if isinstance(first, _Exclusive):
                # Run by the writer once every earlier write is done; nothing is resolved
                # meanwhile, and the cached ids are dropped after it.
                self._writes.put(first)
                with contextlib.suppress(BaseException):
                    first.done.result()
                self._resolver.forget()
                continue
            jobs, size = [first], len(first.events)
            while size < self._max:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                if isinstance(job, _Exclusive):
                    pending = job  # after this write, in arrival order
                    break
                jobs.append(job)
                size += len(job.events)
            self._resolve(jobs)
        self._writes.put(None)

    def _resolve(self, jobs: list[_Job]) -> None:
        events = PreparedEvents.concat([job.events for job in jobs])
        try:
            resolved = _resolve(workspace=self._workspace, events=events, resolver=self._resolver)
        except BaseException as error:
            for job in jobs:
                job.done.set_exception(error)
            return
        self._writes.put(_Write(jobs=jobs, keys=events.message_ids(), resolved=resolved))
        # The next group forms once the writer has started on this one: then it holds every
        # request that came during a write, not the one or two that came during a resolve.
        with self._taken:
            while not self._writes.empty():
                self._taken.wait()

    def _write_loop(self) -> None:
        while (item := self._get_write()) is not None:
            if isinstance(item, _Exclusive):
                try:
                    item.done.set_result(item.work())
                except BaseException as error:
                    item.done.set_exception(error)
            else:
                self._commit(item)

    def _get_write(self) -> _Write | _Exclusive | None:
        item = self._writes.get()
        with self._taken:
            self._taken.notify_all()
        return item

    def _commit(self, write: _Write) -> None:
        jobs, keys = write.jobs, write.keys
        try:
            stored = _write(workspace=self._workspace, resolved=write.resolved, keys=keys)
        except BaseException as error:
            for job in jobs:
                job.done.set_exception(error)
            return
        new = _first_stored(keys, stored)
        if self._on_stored is not None:
            self._notify(write.resolved, new)
        start = 0
        for job in jobs:
            end = start + len(job.events)
            stored_now = sum(new[start:end])
            job.done.set_result(
                IngestResult(
                    received=end - start, stored=stored_now, duplicates=end - start - stored_now
                )
            )
            start = end

    def _notify(self, resolved: _Resolved, new: Sequence[bool]) -> None:
        """Hand the newly stored events to `on_stored`. They are stored whatever it does, so
        a failure is logged and the requests are still answered as stored."""
        on_stored = self._on_stored
        assert on_stored is not None
        rows = [row for row, is_new in enumerate(new) if is_new]
        if not rows:
            return
        try:
            on_stored(_StoredEvents(resolved, rows))
        except Exception:
            log.exception("on_stored failed for %d stored events; they stay stored", len(rows))


class _StoredEvents(Sequence[CustomerEvent]):
    """The events a write stored, made into records only when first read: a callback that
    has nothing to do (no journeys applied) asks only for the length, and building records
    for every event had been a quarter of the server's CPU."""

    def __init__(self, resolved: _Resolved, rows: list[int]) -> None:
        self._resolved = resolved
        self._rows = rows
        self._events: list[CustomerEvent] | None = None

    def _built(self) -> list[CustomerEvent]:
        if self._events is None:
            ids = self._resolved.customer_ids
            records = self._resolved.events.records(self._rows)
            self._events = [
                CustomerEvent(customer_id=ids[row], record=record)
                for row, record in zip(self._rows, records, strict=True)
            ]
        return self._events

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> CustomerEvent: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[CustomerEvent]: ...

    def __getitem__(self, index: int | slice) -> CustomerEvent | Sequence[CustomerEvent]:
        return self._built()[index]

    def __iter__(self) -> Iterator[CustomerEvent]:
        return iter(self._built())
