"""Durable journeys at scale: 1 M customers due on one wait -> branch -> send step.

    .venv/bin/python bench/journeys.py [--customers 1000000] [--events 20000]
                                       [--backends postgres,sqlite] [--limit N]

Setup (untimed): a fresh workspace per backend — PostgreSQL (a new database on
127.0.0.1:5432, user postgres) and the embedded default (SQLite state) — with the journey
below published, N customers (a quarter on plan `pro`) and one run per customer waiting at
the `wait` step and due, inserted set-based in SQL (one INSERT ... SELECT per table).

Timed: `advance_due` until nothing is due, in worker processes started beforehand (journeys
loaded, then a common start signal): one worker; on PostgreSQL also one worker with two
connections (`advance_due(connections=2)`: two batches in flight) and two worker processes
sharing the runs with FOR UPDATE SKIP LOCKED (SQLite has one writer). After each run it checks
that every run left its wait exactly once and completed, that each customer has exactly one
outbox row (a send, or a suppressed row for the 10 % holdout) on the arm its plan picks,
three step rows, and that the workers' claims add up.

Then the trigger path: `--events` events of bench/journey_triggers.py (15 names, 50 triggers
over 12 of them, half with `where` filters) spread over the customers, played through
`handle_events` in 500-event batches against the 50 triggers published as journeys (a match
enters a run waiting one hour): events/s, with the pure compiled matcher on the same events
as the peer.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import queue
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Connection

from journey_triggers import best_rate, build_events, build_rules
from orbita.core.settings import Settings
from orbita.model.journeys import Journey, parse_journey
from orbita.services.journeys import (
    CustomerEvent,
    advance_due,
    handle_events,
    load_journeys,
    publish_journeys,
)
from orbita.services.workspace import init_workspace, open_workspace

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
JOURNEY = "bench"
SPEC: dict[str, Any] = {
    "trigger": {"event": "Signed Up"},
    "holdout": "10%",
    "steps": [
        {"wait": "1d"},
        {
            "branch": [{"when": {"trait": "plan", "eq": "pro"}, "then": [{"send": "pro_offer"}]}],
            "else": [{"send": "offer"}],
        },
    ],
}
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=2)  # every run is due: wake times spread over T0 .. T0 + 1 h
EVENT_BATCH = 500


# --- setup ---------------------------------------------------------------------------------
# Customer g: plan `pro` when g % 4 == 0; in the holdout when g % 10 == 0 (runs are inserted
# directly, so the arm is the bench's choice, not the entry's hash); due at T0 + g % 3600 s.


def _postgres_setup(connection: Connection, customers: int, *, with_customers: bool) -> None:
    if with_customers:
        connection.exec_driver_sql(
            "INSERT INTO customers (customer_id, user_id, traits, created_at, updated_at) "
            "SELECT g, 'u' || g, jsonb_build_object('plan', "
            "CASE WHEN mod(g, 4) = 0 THEN 'pro' ELSE 'basic' END), %(t0)s, %(t0)s "
            "FROM generate_series(1, %(n)s) AS g",
            {"t0": T0, "n": customers},
        )
    connection.exec_driver_sql(
        """
        INSERT INTO journey_runs (run_id, journey, version, customer_id, run_key, node, status,
            holdout, wake_at, goal_until, state, entered_at, updated_at)
        SELECT 'run' || g, 'bench', 1, g, '', 'steps.0', 'waiting', mod(g, 10) = 0, w,
            NULL, jsonb_build_object(
                'journey', 'bench', 'version', 1, 'run_id', 'run' || g, 'key', NULL,
                'customer_id', g, 'node', 'steps.0', 'status', 'waiting',
                'wake_at', to_char(w AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                'entered_at', to_char(e AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                'holdout', mod(g, 10) = 0, 'converted_at', NULL, 'ended_at', NULL,
                'exit_reason', NULL,
                'context', jsonb_build_object(
                    'trigger_message_id', 'signup-' || g, 'trigger_event', 'Signed Up',
                    'properties', '{}'::jsonb, 'correlation', '{}'::jsonb,
                    'variants', '{}'::jsonb, 'visits', jsonb_build_object('steps.0', 1))),
            e, e
        FROM generate_series(1, %(n)s) AS g,
            LATERAL (SELECT %(t0)s::timestamptz + make_interval(secs => mod(g, 3600)) AS w,
                            %(t0)s::timestamptz - interval '1 day'
                                + make_interval(secs => mod(g, 3600)) AS e) AS t
        """,
        {"n": customers, "t0": T0},
    )
    connection.exec_driver_sql("ANALYZE")


def _sqlite_setup(connection: Connection, customers: int, *, with_customers: bool) -> None:
    # SQLAlchemy's SQLite datetimes: naive UTC text with six fractional digits.
    series = "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < ?) "
    if with_customers:
        connection.exec_driver_sql(
            series + "INSERT INTO customers (customer_id, user_id, traits, created_at, updated_at) "
            "SELECT g, 'u' || g, json_object('plan', CASE WHEN g % 4 = 0 THEN 'pro' "
            "ELSE 'basic' END), '2026-03-02 10:00:00.000000', '2026-03-02 10:00:00.000000' "
            "FROM s",
            (customers,),
        )
    connection.exec_driver_sql(
        series
        + """
        INSERT INTO journey_runs (run_id, journey, version, customer_id, run_key, node, status,
            holdout, wake_at, goal_until, state, entered_at, updated_at)
        SELECT 'run' || g, ?, 1, g, '', 'steps.0', 'waiting', g % 10 = 0,
            strftime('%Y-%m-%d %H:%M:%S.000000', w), NULL, json_object(
                'journey', ?, 'version', 1, 'run_id', 'run' || g, 'key', NULL,
                'customer_id', g, 'node', 'steps.0', 'status', 'waiting',
                'wake_at', strftime('%Y-%m-%dT%H:%M:%S+00:00', w),
                'entered_at', strftime('%Y-%m-%dT%H:%M:%S+00:00', e),
                'holdout', json(CASE WHEN g % 10 = 0 THEN 'true' ELSE 'false' END),
                'converted_at', NULL, 'ended_at', NULL, 'exit_reason', NULL,
                'context', json_object(
                    'trigger_message_id', 'signup-' || g, 'trigger_event', 'Signed Up',
                    'properties', json('{}'), 'correlation', json('{}'),
                    'variants', json('{}'), 'visits', json_object('steps.0', 1))),
            strftime('%Y-%m-%d %H:%M:%S.000000', e), strftime('%Y-%m-%d %H:%M:%S.000000', e)
        FROM (SELECT g, datetime('2026-03-02 10:00:00', '+' || (g % 3600) || ' seconds') AS w,
                     datetime('2026-03-01 10:00:00', '+' || (g % 3600) || ' seconds') AS e
              FROM s)
        """,
        (customers, JOURNEY, JOURNEY),
    )
    connection.exec_driver_sql("ANALYZE")


def setup_runs(settings: Settings, customers: int, *, with_customers: bool) -> float:
    began = time.perf_counter()
    with open_workspace(settings=settings) as workspace, workspace.state.begin() as connection:
        if connection.dialect.name == "postgresql":
            if not with_customers:
                connection.exec_driver_sql("TRUNCATE journey_runs, outbox, journey_steps")
            _postgres_setup(connection, customers, with_customers=with_customers)
        else:
            if not with_customers:
                for table in ("journey_runs", "outbox", "journey_steps"):
                    connection.exec_driver_sql(f"DELETE FROM {table}")
            _sqlite_setup(connection, customers, with_customers=with_customers)
    return time.perf_counter() - began


def _server_cpu(database: str | None, seen: dict[int, float]) -> None:
    """CPU seconds of each PostgreSQL backend connected to `database` (this machine)."""
    if database is None:
        return
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f" {database} ".encode() not in (entry / "cmdline").read_bytes():
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        seen[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick


# --- timed advance -------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerResult:
    worker_id: str
    claimed: int
    batches: int
    started: float
    finished: float
    cpu: float


def _worker(
    settings: Settings,
    worker_id: str,
    limit: int | None,
    connections: int,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    with open_workspace(settings=settings) as workspace:
        journeys = load_journeys(workspace=workspace)
        ready.put(worker_id)
        go.wait()
        started, cpu = time.time(), time.process_time()
        kwargs = {"limit": limit} if limit else {}
        report = advance_due(
            workspace=workspace,
            journeys=journeys,
            now=NOW,
            worker_id=worker_id,
            connections=connections,
            **kwargs,
        )
        results.put(
            WorkerResult(
                worker_id,
                report.claimed,
                report.batches,
                started,
                time.time(),
                time.process_time() - cpu,
            )
        )


def run_workers(
    settings: Settings, workers: int, connections: int, limit: int | None
) -> tuple[list[WorkerResult], float]:
    """The workers' results and the CPU seconds of the PostgreSQL backends serving them."""
    context = multiprocessing.get_context("spawn")
    ready, results, go = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(
            target=_worker,
            args=(settings, f"w{i + 1}", limit, connections, ready, go, results),
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    database = settings.database_url.rpartition("/")[2] if settings.database_url else None
    server: dict[int, float] = {}
    _server_cpu(database, server)
    before = dict(server)
    go.set()
    found: list[WorkerResult] = []
    while len(found) < len(processes):
        with contextlib.suppress(queue.Empty):
            found.append(results.get(timeout=0.5))
        _server_cpu(database, server)  # sampled while the backends live
    server_cpu = sum(cpu - before.get(pid, 0.0) for pid, cpu in server.items())
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise SystemExit(f"a worker failed (exit code {process.exitcode})")
    return found, server_cpu


def check(settings: Settings, customers: int, results: Sequence[WorkerResult]) -> None:
    """Every run advanced exactly once; one outbox row per customer, on the right arm."""
    held = customers // 10
    pro_sent = customers // 4 - customers // 20  # g % 4 == 0 and not g % 10 == 0
    with open_workspace(settings=settings) as workspace, workspace.state.connect() as connection:

        def one(query: str) -> Any:
            return connection.exec_driver_sql(query).one()

        statuses = dict(
            connection.exec_driver_sql(
                "SELECT status, count(*) FROM journey_runs GROUP BY status"
            ).all()
        )
        assert statuses == {"completed": customers}, statuses
        rows, run_ids, keys = one(
            "SELECT count(*), count(DISTINCT run_id), count(DISTINCT idempotency_key) FROM outbox"
        )
        assert rows == run_ids == keys == customers, (rows, run_ids, keys)
        kinds = dict(
            connection.exec_driver_sql(
                "SELECT kind || ':' || template, count(*) FROM outbox GROUP BY kind, template"
            ).all()
        )
        suppressed = sum(v for k, v in kinds.items() if k.startswith("suppressed"))
        assert suppressed == held, kinds
        assert kinds.get("send:pro_offer") == pro_sent, kinds
        assert kinds.get("send:offer") == customers - held - pro_sent, kinds
        steps, stepped_runs = one("SELECT count(*), count(DISTINCT run_id) FROM journey_steps")
        assert (steps, stepped_runs) == (3 * customers, customers), (steps, stepped_runs)
        (twice,) = one(
            "SELECT count(*) FROM (SELECT run_id FROM journey_steps WHERE node = 'steps.0' "
            "GROUP BY run_id HAVING count(*) <> 1) AS t"
        )
        assert twice == 0, f"{twice} runs left their wait more than once"
        claimed = dict(
            connection.exec_driver_sql(
                "SELECT claimed_by, count(*) FROM journey_runs GROUP BY claimed_by"
            ).all()
        )
    assert claimed == {r.worker_id: r.claimed for r in results}, (claimed, results)
    assert sum(r.claimed for r in results) == customers


def advance_figures(
    name: str,
    settings: Settings,
    customers: int,
    workers: int,
    connections: int,
    limit: int | None,
) -> float:
    results, server_cpu = run_workers(settings, workers, connections, limit)
    wall = max(r.finished for r in results) - min(r.started for r in results)
    check(settings, customers, results)
    rate = customers / wall
    client = sum(r.cpu for r in results)
    cpu = f"CPU per run: workers {client / customers * 1e6:.0f} µs"
    if server_cpu:
        cpu += f" + PostgreSQL {server_cpu / customers * 1e6:.0f} µs"
    shares = ", ".join(
        f"{r.worker_id} {r.claimed:,} runs in {r.batches:,} batches, "
        f"{r.finished - r.started:.1f} s, CPU {r.cpu:.1f} s"
        for r in sorted(results, key=lambda r: r.worker_id)
    )
    setup = f"{workers} worker{'s' if workers > 1 else ''} x {connections} conn."
    print(
        f"{name:<10} {setup:<19} {customers:,} runs in "
        f"{wall:6.1f} s = {rate:>9,.0f} runs/s  [{shares}; {cpu}]  checked",
        flush=True,
    )
    return rate


# --- trigger path --------------------------------------------------------------------------


def trigger_figures(name: str, settings: Settings, customers: int, count: int) -> None:
    rng = random.Random(7)
    rules = build_rules(50, rng)
    records = build_events(count, rng)
    journeys: dict[str, Journey] = {
        rule: parse_journey(
            {
                **rule_journey.model_dump(mode="json", include={"trigger"}),
                "steps": [{"wait": "1h"}, {"send": "hello"}],
            },
            name=rule,
        )
        for rule, rule_journey in rules.items()
    }
    events = [
        CustomerEvent(customer_id=(index * 7919) % customers + 1, record=record)
        for index, record in enumerate(records)
    ]
    with open_workspace(settings=settings) as workspace:
        published = publish_journeys(workspace=workspace, journeys=journeys).journeys
        began, cpu = time.perf_counter(), time.process_time()
        entered = matched = 0
        for start in range(0, len(events), EVENT_BATCH):
            report = handle_events(
                workspace=workspace, journeys=published, events=events[start : start + EVENT_BATCH]
            )
            entered += report.entered
            matched += report.entered + report.not_entered
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
    pure, _ = best_rate(published.matcher.match, records, 3)
    print(
        f"{name:<10} trigger path: {count:,} events x 50 triggers in {EVENT_BATCH}-event "
        f"batches: {count / wall:,.0f} events/s through handle_events ({entered:,} runs "
        f"entered, CPU {cpu:.1f} s); pure matcher {pure:,.0f} events/s; "
        f"handle_events / matcher {count / wall / pure:.3f}",
        flush=True,
    )


# --- main ----------------------------------------------------------------------------------


def bench_backend(
    name: str, settings: Settings, customers: int, events: int, limit: int | None
) -> None:
    init_workspace(settings=settings)
    with open_workspace(settings=settings) as workspace:
        publish_journeys(workspace=workspace, journeys={JOURNEY: parse_journey(SPEC, name=JOURNEY)})
    # (worker processes, connections each): SQLite has one writer.
    shapes = [(1, 1), (1, 2), (2, 1)] if name == "postgres" else [(1, 1)]
    for index, (workers, connections) in enumerate(shapes):
        took = setup_runs(settings, customers, with_customers=index == 0)
        print(
            f"{name:<10} setup: {customers:,} customers' runs due in {took:.1f} s (untimed)",
            flush=True,
        )
        advance_figures(name, settings, customers, workers, connections, limit)
    if events:
        trigger_figures(name, settings, customers, events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--limit", type=int, default=None, help="runs per batch")
    args = parser.parse_args()
    backends = args.backends.split(",")
    print(f"cpus: {os.cpu_count()}, load average: {Path('/proc/loadavg').read_text().strip()}")
    with tempfile.TemporaryDirectory(prefix="orbita-bench-journeys-") as folder:
        if "postgres" in backends:
            database = f"orbita_bench_journeys_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            url = ADMIN_URL.rpartition("/")[0] + "/" + database
            try:
                settings = Settings(workspace=Path(folder) / "pg", database_url=url, events_url=url)
                bench_backend("postgres", settings, args.customers, args.events, args.limit)
            finally:
                with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
                    admin.execute(
                        sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(database)
                        )
                    )
        if "sqlite" in backends:
            settings = Settings(workspace=Path(folder) / "embedded")
            bench_backend("sqlite", settings, args.customers, args.events, args.limit)
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
