"""Events in a DuckDB file: the embedded default. One process owns the file at a time."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from orbita.core.errors import StoreLockedError
from orbita.model.events import StoredEvent
from orbita.store.events.base import (
    COLUMNS,
    SELECT_COLUMNS,
    EventCursor,
    Statement,
    stored_event,
    with_cursor,
)
from orbita.store.events.keyset import KeySet

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    message_key UBIGINT NOT NULL,  -- hash(message_id): see `append`
    message_id VARCHAR NOT NULL,
    customer_id BIGINT NOT NULL,
    user_id VARCHAR,
    anonymous_id VARCHAR,
    type VARCHAR NOT NULL,
    name VARCHAR,
    properties JSON NOT NULL,
    context JSON NOT NULL,
    timestamp TIMESTAMPTZ NOT NULL,
    received_at TIMESTAMPTZ NOT NULL
)
"""
# Beside the events: what segment queries join (the profile snapshot, RFM cells, the
# predictions seam) and the current members of each segment and stage, kept here so that a
# refresh diffs a million members inside DuckDB (the state store keeps the history).
_ANALYTIC_SCHEMA = """
CREATE TABLE IF NOT EXISTS customers (
    customer_id BIGINT PRIMARY KEY, user_id VARCHAR, email VARCHAR, phone VARCHAR,
    telegram_chat_id VARCHAR, timezone VARCHAR, locale VARCHAR, traits JSON NOT NULL,
    created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS rfm_cells (
    customer_id BIGINT NOT NULL, r TINYINT, f TINYINT, m TINYINT, cell VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS predictions (
    customer_id BIGINT NOT NULL, ltv DOUBLE, churn_probability DOUBLE
);
CREATE TABLE IF NOT EXISTS segment_members (segment VARCHAR NOT NULL, customer_id BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS derived_marks (name VARCHAR PRIMARY KEY, marked_at TIMESTAMPTZ NOT NULL);
"""
_CUSTOMER_COLUMNS = (
    "customer_id, user_id, email, phone, telegram_chat_id, timezone, locale, "
    "traits::JSON, created_at, updated_at"
)
# DuckDB's own hash: seven times faster than its MD5. A release may change it, so the
# store keeps the hash of a fixed text and rehashes its keys when that changes.
_KEY = "hash(message_id)"
_PROBE = "hash('orbita message key')"
# Until this session, events had a primary key on all 128 bits of the MD5.
_OLD_LAYOUT = (
    "SELECT 1 FROM information_schema.columns WHERE table_name = 'events' "
    "AND column_name = 'message_key' AND data_type = 'UHUGEINT'"
)
_DERIVED_TABLES = ("customers", "rfm_cells", "predictions", "segment_members")
_PID = re.compile(r"PID (\d+)")


# One customer list, one event name and type, a window (start exclusive, end inclusive): what
# journey branches on event aggregates read. Fixed text, values bound as parameters.
EVENTS_OF_DUCKDB = (
    "SELECT customer_id, message_id, type, name, properties::VARCHAR AS properties, timestamp "
    "FROM events "
    "WHERE customer_id IN (SELECT unnest(?::BIGINT[])) AND name = ? AND type = ? "
    "AND timestamp <= ? AND (?::TIMESTAMPTZ IS NULL OR timestamp > ?)"
)


class DuckDBEventStore:
    backend = "duckdb"

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A checkpoint rewrites the table's last row groups: at DuckDB's default (every 16 MB
        # of log) that was half the CPU of appending events; at 128 MB a quarter as often.
        config: dict[str, str | bool | int | float | list[str]] = {"checkpoint_threshold": "128MB"}
        if threads:
            config["threads"] = threads
        try:
            self._con = duckdb.connect(str(path), config=config)
        except duckdb.IOException as error:
            raise _locked(path, error) from None
        self._con.execute("SET TimeZone = 'UTC'")
        if self._con.execute(_OLD_LAYOUT).fetchall():
            _unindex(self._con)
        self._con.execute(_SCHEMA)
        _check_key_hash(self._con)
        self._con.execute(_ANALYTIC_SCHEMA)
        self._path = path
        # DuckDB connections are not thread-safe; each thread gets its own cursor.
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._keys: KeySet | None = None  # every stored message_key, loaded at the first append

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._con.cursor()
            cursor.execute("SET TimeZone = 'UTC'")
            self._local.cursor = cursor
        return cursor

    def append(self, events: pa.Table) -> set[str]:
        """Deduplication without an index: the table has none, because keeping an ART
        primary key up to date was most of the cost of an append (and grew with the table).
        Instead the store holds every stored event's 64-bit key in memory (`KeySet`): a new
        event whose key is not there is new for certain; one whose key is there (a retry, or
        rarely another id with the same 64 bits, or an erased event sent again) is checked
        against the stored message ids. The set is read from the table when the store is
        first written, so it holds across restarts."""
        if events.num_rows == 0:
            return set()
        cur = self._cursor()
        with self._write_lock:
            known = self._known(cur)
            cur.register("incoming", events)
            try:
                keys: np.ndarray[Any, np.dtype[np.uint64]] = cur.execute(
                    f"SELECT {_KEY} AS k FROM incoming"
                ).fetchnumpy()["k"]
                keep = self._new(cur, events, keys, known)
                columns = ", ".join(COLUMNS)
                if keep is None:
                    cur.execute(f"INSERT INTO events SELECT {_KEY}, {columns} FROM incoming")
                else:
                    events, keys = events.filter(pa.array(keep)), keys[keep]
                    if not len(keys):
                        return set()
                    cur.register("fresh", events)
                    try:
                        cur.execute(f"INSERT INTO events SELECT {_KEY}, {columns} FROM fresh")
                    finally:
                        cur.unregister("fresh")
            finally:
                cur.unregister("incoming")
            known.add(keys)
        return set(events.column("message_id").to_pylist())

    def _known(self, cur: duckdb.DuckDBPyConnection) -> KeySet:
        if self._keys is None:
            stored = cur.execute("SELECT message_key FROM events").fetchnumpy()["message_key"]
            self._keys = KeySet(np.asarray(stored, dtype=np.uint64))
        return self._keys

    @staticmethod
    def _new(
        cur: duckdb.DuckDBPyConnection,
        events: pa.Table,
        keys: np.ndarray[Any, np.dtype[np.uint64]],
        known: KeySet,
    ) -> list[bool] | None:
        """Which rows to store (the first of each message id not stored yet); None: all."""
        maybe = known.contains(keys)
        twice = len(np.unique(keys)) < len(keys)
        if not maybe.any() and not twice:
            return None
        ids: list[str] = events.column("message_id").to_pylist()
        stored = _stored_ids(cur, keys[maybe].tolist(), {ids[row] for row in np.flatnonzero(maybe)})
        keep, seen = [], set()
        for message_id in ids:
            keep.append(message_id not in stored and message_id not in seen)
            seen.add(message_id)
        return keep

    def existing_message_ids(self, message_ids: Iterable[str]) -> set[str]:
        wanted = set(message_ids)
        if not wanted:
            return set()
        cur = self._cursor()
        keys = cur.execute(
            f"SELECT {_KEY} AS k FROM (SELECT unnest($ids) AS message_id)", {"ids": list(wanted)}
        ).fetchnumpy()["k"]
        with self._write_lock:
            maybe = self._known(cur).contains(np.asarray(keys, dtype=np.uint64))
        if not maybe.any():
            return set()
        return _stored_ids(cur, keys[maybe].tolist(), wanted)

    def count(self, *, customer_id: int | None = None) -> int:
        # fetchall, not fetchone: DuckDB 2 keeps a half-read result open on the cursor, and
        # this thread's next statement on it would fail.
        if customer_id is None:
            rows = self._cursor().execute("SELECT count(*) FROM events").fetchall()
        else:
            rows = (
                self._cursor()
                .execute("SELECT count(*) FROM events WHERE customer_id = ?", [customer_id])
                .fetchall()
            )
        return int(rows[0][0]) if rows else 0

    def page(
        self, *, customer_id: int, limit: int, after: EventCursor | None = None
    ) -> list[tuple[StoredEvent, EventCursor]]:
        params: list[Any] = [customer_id]
        where = "customer_id = ?"
        if after is not None:
            where += " AND (timestamp, message_id) < (?::TIMESTAMPTZ, ?)"
            params += [after.timestamp, after.message_id]
        rows = (
            self._cursor()
            .execute(
                f"SELECT {SELECT_COLUMNS} FROM events WHERE {where} "
                "ORDER BY timestamp DESC, message_id DESC LIMIT ?",
                [*params, limit],
            )
            .fetchall()
        )
        return [with_cursor(stored_event(row)) for row in rows]

    def events_of(
        self,
        *,
        customer_ids: Sequence[int],
        name: str,
        kind: str,
        start: datetime | None,
        end: datetime,
    ) -> pa.Table:
        params = [list(customer_ids), name, kind, end, start, start]
        return self._cursor().sql(EVENTS_OF_DUCKDB, params=params).to_arrow_table()

    def reassign(self, *, moves: Mapping[int, int]) -> int:
        if not moves:
            return 0
        cur = self._cursor()
        cur.register(
            "moves",
            pa.table(
                {"source": list(moves), "target": list(moves.values())},
                schema=pa.schema([("source", pa.int64()), ("target", pa.int64())]),
            ),
        )
        try:
            with self._write_lock:
                rows = cur.execute(
                    "UPDATE events SET customer_id = moves.target FROM moves "
                    "WHERE events.customer_id = moves.source"
                ).fetchall()
        finally:
            cur.unregister("moves")
        return int(rows[0][0]) if rows else 0

    def delete_customers(self, *, customer_ids: Sequence[int]) -> int:
        if not customer_ids:
            return 0
        cur = self._cursor()
        with self._write_lock:
            row = cur.execute(
                "DELETE FROM events WHERE customer_id IN (SELECT unnest($ids))",
                {"ids": list(customer_ids)},
            ).fetchall()
            # Everything derived from the customer goes with their events (GDPR erasure).
            for table in _DERIVED_TABLES:
                cur.execute(
                    f"DELETE FROM {table} WHERE customer_id IN (SELECT unnest($ids))",
                    {"ids": list(customer_ids)},
                ).fetchall()
        return int(row[0][0]) if row else 0

    def counts_by_name(self) -> dict[str, int]:
        rows = (
            self._cursor()
            .execute("SELECT coalesce(name, type), count(*) FROM events GROUP BY 1 ORDER BY 2 DESC")
            .fetchall()
        )
        return {str(name): int(n) for name, n in rows}

    def ibis(self) -> Any:
        import ibis

        return ibis.duckdb.from_connection(self._cursor())

    def read_with_setup(
        self, *, setup: Sequence[Statement], queries: Sequence[Statement]
    ) -> list[pa.Table]:
        cur = self._cursor()
        cur.execute("BEGIN TRANSACTION")
        try:
            for sql, params in setup:
                cur.execute(sql, dict(params))
            return [cur.sql(sql, params=dict(params)).to_arrow_table() for sql, params in queries]
        finally:
            cur.execute("ROLLBACK")

    def sync_customers(self, customers: pa.Table, *, mark: datetime | None = None) -> None:
        self._replace("customers", _CUSTOMER_COLUMNS, customers, mark=mark)

    def update_customers(self, customers: pa.Table, *, remove: pa.Array, mark: datetime) -> None:
        cur = self._cursor()
        cur.register("incoming", customers)
        cur.register("removed", pa.table({"customer_id": pa.array(remove, pa.int64())}))
        try:
            with self._write_lock:
                cur.execute("BEGIN")
                try:
                    cur.execute(
                        "DELETE FROM customers WHERE customer_id IN "
                        "(SELECT customer_id FROM removed UNION ALL "
                        "SELECT customer_id FROM incoming)"
                    )
                    cur.execute(f"INSERT INTO customers SELECT {_CUSTOMER_COLUMNS} FROM incoming")
                    _set_mark(cur, "customers", mark)
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
        finally:
            cur.unregister("incoming")
            cur.unregister("removed")

    def snapshot_mark(self) -> datetime | None:
        rows = (
            self._cursor()
            .execute("SELECT marked_at FROM derived_marks WHERE name = 'customers'")
            .fetchall()
        )
        return rows[0][0] if rows else None

    def put_rfm_cells(self, cells: pa.Table) -> None:
        self._replace("rfm_cells", "customer_id, r, f, m, cell", cells)

    def _replace(
        self, table: str, columns: str, rows: pa.Table, *, mark: datetime | None = None
    ) -> None:
        cur = self._cursor()
        cur.register("incoming", rows)
        try:
            with self._write_lock:
                cur.execute("BEGIN")
                try:
                    cur.execute(f"DELETE FROM {table}")
                    cur.execute(f"INSERT INTO {table} SELECT {columns} FROM incoming")
                    if mark is not None:
                        _set_mark(cur, table, mark)
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
        finally:
            cur.unregister("incoming")

    def apply_members(self, *, key: str, entered: pa.Array, exited: pa.Array) -> None:
        self._members(key=key, entered=entered, exited=exited, everything=False)

    def apply_member_changes(self, changes: pa.Table) -> None:
        if changes.num_rows == 0:
            return
        cur = self._cursor()
        cur.register("changes", changes.select(["segment", "customer_id", "side"]))
        try:
            with self._write_lock:
                cur.execute("BEGIN")
                try:
                    cur.execute(
                        "DELETE FROM segment_members USING changes "
                        "WHERE changes.side = 2 AND segment_members.segment = changes.segment "
                        "AND segment_members.customer_id = changes.customer_id"
                    )
                    cur.execute(
                        "INSERT INTO segment_members "
                        "SELECT segment, customer_id FROM changes WHERE side = 1"
                    )
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
        finally:
            cur.unregister("changes")

    def replace_members(self, *, key: str, members: pa.Array) -> None:
        self._members(key=key, entered=members, exited=pa.array([], pa.int64()), everything=True)

    def _members(self, *, key: str, entered: pa.Array, exited: pa.Array, everything: bool) -> None:
        cur = self._cursor()
        cur.register("entered", pa.table({"customer_id": pa.array(entered, pa.int64())}))
        cur.register("exited", pa.table({"customer_id": pa.array(exited, pa.int64())}))
        try:
            with self._write_lock:
                cur.execute("BEGIN")
                try:
                    if everything:
                        cur.execute("DELETE FROM segment_members WHERE segment = ?", [key])
                    elif len(exited):
                        cur.execute(
                            "DELETE FROM segment_members WHERE segment = ? "
                            "AND customer_id IN (SELECT customer_id FROM exited)",
                            [key],
                        )
                    if len(entered):
                        cur.execute(
                            "INSERT INTO segment_members SELECT ?, customer_id FROM entered",
                            [key],
                        )
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
        finally:
            cur.unregister("entered")
            cur.unregister("exited")

    def close(self) -> None:
        self._con.close()


def _set_mark(cur: duckdb.DuckDBPyConnection, name: str, at: datetime) -> None:
    cur.execute("INSERT OR REPLACE INTO derived_marks VALUES (?, ?)", [name, at])


def _stored_ids(cur: duckdb.DuckDBPyConnection, keys: list[int], ids: set[str]) -> set[str]:
    """Which of `ids` (whose keys are `keys`) are stored: a scan of the key column, done
    only for keys the key set knows (retries, mostly)."""
    if not keys:
        return set()
    rows = cur.execute(
        "SELECT DISTINCT message_id FROM events WHERE message_key IN (SELECT unnest($keys))",
        {"keys": keys},
    ).fetchall()
    return {str(row[0]) for row in rows} & ids


def _check_key_hash(con: duckdb.DuckDBPyConnection) -> None:
    """Rehash the stored keys if this DuckDB release hashes differently from the last."""
    con.execute("CREATE TABLE IF NOT EXISTS event_key_hash (probe UBIGINT NOT NULL)")
    rows = con.execute(f"SELECT probe = {_PROBE} FROM event_key_hash").fetchall()
    if rows and rows[0][0]:
        return
    con.execute("BEGIN")
    try:
        if rows:
            con.execute(f"UPDATE events SET message_key = {_KEY}")
        con.execute("DELETE FROM event_key_hash")
        con.execute(f"INSERT INTO event_key_hash SELECT {_PROBE}")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _unindex(con: duckdb.DuckDBPyConnection) -> None:
    """Move a store of the earlier layout (a primary key on 128 bits of MD5) to this one."""
    columns = ", ".join(COLUMNS)
    con.execute("BEGIN")
    try:
        con.execute("ALTER TABLE events RENAME TO events_before_unindex")
        con.execute(_SCHEMA)
        con.execute(
            f"INSERT INTO events SELECT {_KEY}, {columns} FROM events_before_unindex ORDER BY rowid"
        )
        con.execute("DROP TABLE events_before_unindex")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _locked(path: Path, error: duckdb.IOException) -> StoreLockedError:
    pid = _PID.search(str(error))
    holder = f"process {pid.group(1)}" if pid else "another process"
    return StoreLockedError(
        f"the event store {path} is in use by {holder} (probably `orbita serve`); "
        "DuckDB lets one process open it: stop that process, or send the work to its API"
    )
