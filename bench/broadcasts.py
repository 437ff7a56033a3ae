"""A 1 M-recipient broadcast: time from `send` to every outbox row written.

    .venv/bin/python bench/broadcasts.py [--customers 1000000] [--backends postgres,sqlite]

Setup (untimed): a fresh workspace per backend — PostgreSQL (a new database on
127.0.0.1:5432, user postgres, state and events) and the embedded default (SQLite state,
DuckDB events) — with N customers inserted set-based in SQL: customer g subscribed unless
g % 10 == 0, VIP when g % 20 == 1, in one of four time zones (g % 4); the event store's
copy of the profiles brought up to date, as a running workspace keeps it.

Timed: `send_broadcast` of the broadcast below — the audience resolved in one segment query
(subscribers less the VIP segment), checked against the state store, holdout (5 %) and
the two subject-line variants assigned with the sticky hash, a local-time send moment per
zone, and every outbox row written in bulk (rendering is the sender's, at send time).

Peer, in the same run: the same number of outbox rows, built in advance, written by the same
bulk insert (`_bulk_insert` with the same conflict key) into an empty outbox: the floor of
the write alone. The ratio says what resolution and assignment add to it.

After each run it checks one row per audience member, the holdout and variant shares, and
that a second `send` writes nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from orbita.core.settings import Settings
from orbita.model.strategy import parse_strategy
from orbita.services.broadcasts import send_broadcast
from orbita.services.journeys import OUTBOX_COLUMNS, _bulk_insert
from orbita.services.segments import sync_customer_snapshot
from orbita.services.workspace import init_workspace, open_workspace
from orbita.store.state import outbox

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
ZONES = ("Europe/Kyiv", "America/New_York", "Asia/Tokyo", "Europe/London")
STRATEGY = """workspace: bench
timezone: Europe/Kyiv
segments:
  subscribers: {trait: subscribed, eq: true}
  vip: {trait: vip, eq: true}
channels:
  email: {type: smtp, host: 127.0.0.1, port: 2525, from: "shop@example.com"}
templates:
  sale:
    channel: email
    subject: "Winter sale"
    text: "Hi {{ customer.first_name }}"
    variants: {B: {subject: "Winter sale: 30% off"}}
broadcasts:
  winter_sale:
    audience: {segment: subscribers, exclude: [vip]}
    template: sale
    variants: {A: {weight: 50}, B: {variant: B, weight: 50}}
    holdout: 5%
    schedule: {at: "2026-11-21 09:00", local_time: true}
"""


def _expected(customers: int) -> int:
    return sum(1 for g in range(1, customers + 1) if g % 10 != 0 and g % 20 != 1)


def _zone_case(column: str) -> str:
    arms = " ".join(f"WHEN {i} THEN '{zone}'" for i, zone in enumerate(ZONES))
    return f"CASE {column} {arms} END"


def setup(settings: Settings, customers: int) -> float:
    began = time.perf_counter()
    init_workspace(settings=settings)
    with open_workspace(settings=settings) as workspace:
        with workspace.state.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.exec_driver_sql(
                    "INSERT INTO customers (customer_id, user_id, email, timezone, traits, "
                    "created_at, updated_at) SELECT g, 'u' || g, 'u' || g || '@example.org', "
                    f"{_zone_case('mod(g, 4)')}, jsonb_build_object('subscribed', mod(g, 10) <> 0, "
                    "'vip', mod(g, 20) = 1, 'first_name', 'U' || g), %(t0)s, %(t0)s "
                    "FROM generate_series(1, %(n)s) AS g",
                    {"t0": T0, "n": customers},
                )
                connection.exec_driver_sql("ANALYZE customers")
            else:
                connection.exec_driver_sql(
                    "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < ?) "
                    "INSERT INTO customers (customer_id, user_id, email, timezone, traits, "
                    "created_at, updated_at) SELECT g, 'u' || g, 'u' || g || '@example.org', "
                    f"{_zone_case('g % 4')}, json_object('subscribed', json(CASE WHEN g % 10 <> 0 "
                    "THEN 'true' ELSE 'false' END), 'vip', json(CASE WHEN g % 20 = 1 THEN 'true' "
                    "ELSE 'false' END), 'first_name', 'U' || g), '2026-11-20 08:00:00.000000', "
                    "'2026-11-20 08:00:00.000000' FROM s",
                    (customers,),
                )
        sync_customer_snapshot(workspace=workspace, full=True)
    return time.perf_counter() - began


def _clear_outbox(workspace: Any) -> None:
    with workspace.state.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("TRUNCATE outbox")
        else:
            connection.exec_driver_sql("DELETE FROM outbox")


def bare_write(settings: Settings, rows: int) -> float:
    """The peer: the same number of outbox rows, prepared beforehand, bulk-written."""
    at = T0 + timedelta(days=1)
    payload = {"broadcast": "peer", "occurrence": "x"}
    prepared = [
        (f"p:{g}", "peer", "broadcast:peer", g, "A", "send", "email", "sale", None, payload,
         "queued", 0, at, T0, None)
        for g in range(1, rows + 1)
    ]  # fmt: skip
    with open_workspace(settings=settings) as workspace:
        _clear_outbox(workspace)
        began = time.perf_counter()
        for start in range(0, rows, 100_000):
            with workspace.state.begin() as connection:
                _bulk_insert(
                    connection,
                    outbox,
                    columns=OUTBOX_COLUMNS,
                    rows=prepared[start : start + 100_000],
                    conflict="idempotency_key",
                )
        took = time.perf_counter() - began
        _clear_outbox(workspace)
    return took


def bench_backend(name: str, settings: Settings, customers: int) -> None:
    took = setup(settings, customers)
    print(f"{name:<10} setup: {customers:,} customers in {took:.1f} s (untimed)")
    expected = _expected(customers)
    strategy = parse_strategy(STRATEGY, source="bench")
    with open_workspace(settings=settings) as workspace:
        began = time.perf_counter()
        report = send_broadcast(workspace=workspace, strategy=strategy, name="winter_sale", now=T0)
        send_seconds = time.perf_counter() - began
        assert report.audience == expected == report.written, (report.audience, expected)
        with workspace.state.connect() as connection:
            rows, keys = connection.exec_driver_sql(
                "SELECT count(*), count(DISTINCT customer_id) FROM outbox"
            ).one()
            by_node = dict(
                connection.exec_driver_sql("SELECT node, count(*) FROM outbox GROUP BY node").all()
            )
            moments = connection.exec_driver_sql(
                "SELECT count(DISTINCT next_attempt_at) FROM outbox"
            ).scalar_one()
        assert rows == keys == expected, (rows, keys, expected)
        assert abs(by_node["holdout"] / expected - 0.05) < 0.005, by_node
        assert abs(by_node["A"] / by_node["B"] - 1) < 0.02, by_node
        assert moments == len(ZONES), moments  # one local 09:00 per zone
        again = send_broadcast(workspace=workspace, strategy=strategy, name="winter_sale", now=T0)
        assert again.written == 0
    bare = bare_write(settings, expected)
    print(
        f"{name:<10} send: {expected:,} outbox rows in {send_seconds:.1f} s "
        f"({expected / send_seconds:,.0f} rows/s; goal 30 s); bare bulk write of as many rows "
        f"{bare:.1f} s; ratio {send_seconds / bare:.2f}x"
    )
    print(f"{name:<10} arms: {dict(sorted(by_node.items()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--backends", default="postgres,sqlite")
    args = parser.parse_args()
    backends = args.backends.split(",")
    print(f"cpus: {os.cpu_count()}, load average: {Path('/proc/loadavg').read_text().strip()}")
    with tempfile.TemporaryDirectory(prefix="orbita-bench-broadcasts-") as folder:
        if "postgres" in backends:
            database = f"orbita_bench_broadcasts_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            url = ADMIN_URL.rpartition("/")[0] + "/" + database
            try:
                settings = Settings(workspace=Path(folder) / "pg", database_url=url, events_url=url)
                bench_backend("postgres", settings, args.customers)
            finally:
                with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                    admin.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(database)
                        )
                    )
        if "sqlite" in backends:
            settings = Settings(workspace=Path(folder) / "embedded")
            bench_backend("sqlite", settings, args.customers)
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
