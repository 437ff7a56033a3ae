"""Events in PostgreSQL: the second backend, for teams that already run one."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine.url import make_url

from orbita.model.events import StoredEvent
from orbita.store.events.base import (
    COLUMNS,
    EVENTS_OF_SCHEMA,
    SELECT_COLUMNS,
    EventCursor,
    Statement,
    stored_event,
    with_cursor,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    message_key uuid PRIMARY KEY,  -- md5(message_id)::uuid: the deduplication key
    message_id text NOT NULL,
    customer_id bigint NOT NULL,
    user_id text,
    anonymous_id text,
    type text NOT NULL,
    name text,
    properties jsonb NOT NULL,
    context jsonb NOT NULL,
    timestamp timestamptz NOT NULL,
    received_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_events_customer_time
    ON events (customer_id, timestamp DESC, message_id DESC);
CREATE INDEX IF NOT EXISTS ix_events_name_time ON events (name, timestamp);
CREATE INDEX IF NOT EXISTS ix_events_time_brin ON events USING brin (timestamp);
CREATE TABLE IF NOT EXISTS rfm_cells (
    customer_id bigint NOT NULL, r smallint, f smallint, m smallint, cell text NOT NULL
);
CREATE TABLE IF NOT EXISTS predictions (
    customer_id bigint NOT NULL, ltv double precision, churn_probability double precision
);
CREATE TABLE IF NOT EXISTS segment_members (segment text NOT NULL, customer_id bigint NOT NULL);
CREATE INDEX IF NOT EXISTS ix_segment_members ON segment_members (segment, customer_id);
CREATE TABLE IF NOT EXISTS derived_marks (name text PRIMARY KEY, marked_at timestamptz NOT NULL);
"""
# The profile snapshot, for an event database apart from the state database; in the state
# database itself, segment queries read the state's own `customers` table (same columns).
_CUSTOMERS = """
CREATE TABLE IF NOT EXISTS customers (
    customer_id bigint PRIMARY KEY, user_id text, email text, phone text,
    telegram_chat_id text, timezone text, locale text, traits jsonb NOT NULL,
    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL
)
"""


class PostgresEventStore:
    backend = "postgres"

    def __init__(self, url: str) -> None:
        self._url = url
        self._engine: Engine = create_engine(url, pool_pre_ping=True, pool_size=8)
        with self._connection() as conn:
            # Two processes starting at once must not race on CREATE TABLE IF NOT EXISTS.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('orbita.events.schema'))")
            conn.execute(_SCHEMA)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        raw = self._engine.raw_connection()
        try:
            driver = raw.driver_connection
            assert isinstance(driver, psycopg.Connection)
            yield driver
            raw.commit()
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()

    def append(self, events: pa.Table) -> set[str]:
        if events.num_rows == 0:
            return set()
        columns = ", ".join(COLUMNS)
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming "
                "(LIKE events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            cur.execute("ALTER TABLE incoming ALTER COLUMN message_key DROP NOT NULL")
            with cur.copy(f"COPY incoming ({columns}) FROM STDIN") as copy:
                for row in zip(*(events.column(c).to_pylist() for c in COLUMNS), strict=True):
                    copy.write_row(row)
            cur.execute(
                f"INSERT INTO events (message_key, {columns}) "
                f"SELECT DISTINCT ON (md5(message_id)) md5(message_id)::uuid, {columns} "
                "FROM incoming ON CONFLICT (message_key) DO NOTHING RETURNING message_id"
            )
            return {str(row[0]) for row in cur.fetchall()}

    def existing_message_ids(self, message_ids: Iterable[str]) -> set[str]:
        wanted = list(message_ids)
        if not wanted:
            return set()
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT message_id FROM events WHERE message_key IN "
                "(SELECT md5(unnest(%s::text[]))::uuid)",
                [wanted],
            ).fetchall()
        return {str(row[0]) for row in rows}

    def count(self, *, customer_id: int | None = None) -> int:
        with self._connection() as conn:
            if customer_id is None:
                row = conn.execute("SELECT count(*) FROM events").fetchone()
            else:
                row = conn.execute(
                    "SELECT count(*) FROM events WHERE customer_id = %s", [customer_id]
                ).fetchone()
        return int(row[0]) if row else 0

    def page(
        self, *, customer_id: int, limit: int, after: EventCursor | None = None
    ) -> list[tuple[StoredEvent, EventCursor]]:
        params: list[Any] = [customer_id]
        where = "customer_id = %s"
        if after is not None:
            where += " AND (timestamp, message_id) < (%s, %s)"
            params += [after.timestamp, after.message_id]
        with self._connection() as conn:
            rows = conn.execute(
                f"SELECT {SELECT_COLUMNS} FROM events WHERE {where} "
                "ORDER BY timestamp DESC, message_id DESC LIMIT %s",
                [*params, limit],
            ).fetchall()
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
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT customer_id, message_id, type, name, properties::text, timestamp "
                "FROM events WHERE customer_id = ANY(%s) AND name = %s AND type = %s "
                "AND timestamp <= %s AND (%s::timestamptz IS NULL OR timestamp > %s)",
                [list(customer_ids), name, kind, end, start, start],
            ).fetchall()
        return pa.Table.from_pylist(
            [dict(zip(EVENTS_OF_SCHEMA.names, row, strict=True)) for row in rows],
            schema=EVENTS_OF_SCHEMA,
        )

    def reassign(self, *, moves: Mapping[int, int]) -> int:
        if not moves:
            return 0
        with self._connection() as conn:
            cur = conn.execute(
                "UPDATE events SET customer_id = moves.target "
                "FROM unnest(%s::bigint[], %s::bigint[]) AS moves(source, target) "
                "WHERE events.customer_id = moves.source",
                [list(moves), list(moves.values())],
            )
            return cur.rowcount

    def delete_customers(self, *, customer_ids: Sequence[int]) -> int:
        if not customer_ids:
            return 0
        ids = list(customer_ids)
        with self._connection() as conn:
            removed = conn.execute("DELETE FROM events WHERE customer_id = ANY(%s)", [ids]).rowcount
            # Everything derived from the customer goes with their events (GDPR erasure); the
            # customers table is the state store's own when both share a database.
            for table in ("rfm_cells", "predictions", "segment_members"):
                conn.execute(f"DELETE FROM {table} WHERE customer_id = ANY(%s)", [ids])
            copied = conn.execute("SELECT to_regclass('customers') IS NOT NULL").fetchone()
            if copied and copied[0] and not _shares_state(conn):
                conn.execute("DELETE FROM customers WHERE customer_id = ANY(%s)", [ids])
            return removed

    def counts_by_name(self) -> dict[str, int]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT coalesce(name, type), count(*) FROM events GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        return {str(name): int(n) for name, n in rows}

    def ibis(self) -> Any:
        import ibis

        url = make_url(self._url)
        return ibis.postgres.connect(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
        )

    def read_with_setup(
        self, *, setup: Sequence[Statement], queries: Sequence[Statement]
    ) -> list[pa.Table]:
        with self._connection() as conn:
            try:
                for sql, params in setup:
                    conn.execute(sql, params)
                return [_rows_as_table(conn.execute(sql, params)) for sql, params in queries]
            finally:
                conn.rollback()  # a read: the temporary tables go with the transaction

    def sync_customers(self, customers: pa.Table, *, mark: datetime | None = None) -> None:
        with self._connection() as conn, conn.cursor() as cur:
            if not _shares_state(conn):  # else the state store's own table: always current
                cur.execute(_CUSTOMERS)
                cur.execute("DELETE FROM customers")
                self._copy(cur, "customers", customers)
            if mark is not None:
                _set_mark(cur, "customers", mark)

    def update_customers(self, customers: pa.Table, *, remove: pa.Array, mark: datetime) -> None:
        with self._connection() as conn, conn.cursor() as cur:
            if not _shares_state(conn):
                gone = pa.array(remove, pa.int64()).to_pylist()
                gone += customers.column("customer_id").to_pylist()
                cur.execute("DELETE FROM customers WHERE customer_id = ANY(%s)", [gone])
                self._copy(cur, "customers", customers)
            _set_mark(cur, "customers", mark)

    def snapshot_mark(self) -> datetime | None:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT marked_at FROM derived_marks WHERE name = 'customers'"
            ).fetchone()
        return row[0] if row else None

    def put_rfm_cells(self, cells: pa.Table) -> None:
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM rfm_cells")
            self._copy(cur, "rfm_cells", cells)

    @staticmethod
    def _copy(cur: psycopg.Cursor[Any], table: str, rows: pa.Table) -> None:
        columns = rows.column_names
        with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in zip(*(rows.column(c).to_pylist() for c in columns), strict=True):
                copy.write_row(row)

    def apply_members(self, *, key: str, entered: pa.Array, exited: pa.Array) -> None:
        with self._connection() as conn:
            if len(exited):
                conn.execute(
                    "DELETE FROM segment_members WHERE segment = %s AND customer_id = ANY(%s)",
                    [key, pa.array(exited, pa.int64()).to_pylist()],
                )
            if len(entered):
                conn.execute(
                    "INSERT INTO segment_members SELECT %s, unnest(%s::bigint[])",
                    [key, pa.array(entered, pa.int64()).to_pylist()],
                )

    def apply_member_changes(self, changes: pa.Table) -> None:
        if changes.num_rows == 0:
            return
        by_side = {side: changes.filter(pc.equal(changes.column("side"), side)) for side in (1, 2)}
        with self._connection() as conn:
            gone = by_side[2]
            if gone.num_rows:
                conn.execute(
                    "DELETE FROM segment_members m "
                    "USING unnest(%s::text[], %s::bigint[]) AS c(segment, customer_id) "
                    "WHERE m.segment = c.segment AND m.customer_id = c.customer_id",
                    [gone.column("segment").to_pylist(), gone.column("customer_id").to_pylist()],
                )
            new = by_side[1]
            if new.num_rows:
                conn.execute(
                    "INSERT INTO segment_members SELECT * FROM unnest(%s::text[], %s::bigint[])",
                    [new.column("segment").to_pylist(), new.column("customer_id").to_pylist()],
                )

    def replace_members(self, *, key: str, members: pa.Array) -> None:
        with self._connection() as conn:
            conn.execute("DELETE FROM segment_members WHERE segment = %s", [key])
            if len(members):
                conn.execute(
                    "INSERT INTO segment_members SELECT %s, unnest(%s::bigint[])",
                    [key, pa.array(members, pa.int64()).to_pylist()],
                )

    def close(self) -> None:
        self._engine.dispose()


def _set_mark(cur: psycopg.Cursor[Any], name: str, at: datetime) -> None:
    cur.execute(
        "INSERT INTO derived_marks VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET marked_at = excluded.marked_at",
        [name, at],
    )


def _shares_state(conn: psycopg.Connection[Any]) -> bool:
    """Whether this database is also the state store (its `customers` is the state's)."""
    row = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _rows_as_table(cursor: psycopg.Cursor[Any]) -> pa.Table:
    names = [column.name for column in cursor.description or ()]
    rows = cursor.fetchall()
    return pa.table({name: [row[at] for row in rows] for at, name in enumerate(names)})
