"""Segment refresh on a generated clothing store: Orbita vs hand-written DuckDB SQL vs pandas.

    .venv/bin/python bench/segments.py [--customers 1000000] [--days 365] [--repeat 3]

Generates the store once (bench/out/clothing-<N>/, reused), loads it into a workspace once
(bench/out/ws-<N>/, reused), then, with the segments of tests/fixtures/clothing_segments.yaml:

1. refreshes everything cold (every member enters: the first refresh of a workspace),
2. refreshes everything again a day later (the steady state: only the differences are
   written) — the figure the goal of DESIGN.md is about — and once more with references
   inlined instead of read from the materialised members,
3. times each segment's compiled query alone (count of members) beside the best
   hand-written DuckDB SQL for it, and beside a straightforward pandas implementation.

Loading: profiles go into the state store and events into the DuckDB event store through
their bulk paths, customer ids taken from the generator's message ids. The importer (the
path users take) validates and resolves identities row by row, which at 55 M events takes
hours on this machine; its throughput is bench/ingest.py's business, not this one's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import insert

from orbita.core.clock import SimulatedClock
from orbita.core.settings import Settings
from orbita.engine.segments.compile import compile_segment, to_sql
from orbita.engine.segments.tables import segment_tables
from orbita.model.strategy import Strategy, parse_strategy
from orbita.services.generate import generate_store
from orbita.services.segments import refresh_segments, sync_customer_snapshot
from orbita.services.workspace import Workspace, init_workspace, open_workspace
from orbita.store.events.base import EVENT_SCHEMA
from orbita.store.state import customers, identities

ROOT = Path(__file__).resolve().parent
# The generated store and its workspace are large (≈ 10 GB at 1 M customers): ORBITA_BENCH_OUT
# puts them elsewhere (e.g. /tmp/segbench) and reuses them across runs.
OUT = Path(os.environ.get("ORBITA_BENCH_OUT", ROOT / "out"))
STRATEGY = ROOT.parent / "tests" / "fixtures" / "clothing_segments.yaml"
GENERATED_END = datetime(2026, 11, 1, tzinfo=UTC)
AS_OF = GENERATED_END  # the generator's last day
_CUSTOMER_IN_MESSAGE = re.compile(r"-u(?P<customer>\d+)-")


# --- data ------------------------------------------------------------------------------------


def generated(customers_n: int, days: int) -> Path:
    out = OUT / f"clothing-{customers_n}"
    if not (out / "events.parquet").exists():
        started = time.perf_counter()
        generate_store(store="clothing-store", customers=customers_n, days=days, seed=7, out=out)
        print(f"generated {customers_n:,} customers in {time.perf_counter() - started:.0f} s")
    return out


def loaded_workspace(customers_n: int, data: Path) -> Settings:
    settings = Settings(workspace=OUT / f"ws-{customers_n}")
    marker = settings.workspace / "bench-loaded.json"
    if marker.exists():
        return settings
    init_workspace(settings=settings)
    started = time.perf_counter()
    with open_workspace(settings=settings) as workspace:
        profiles = _load_customers(workspace, data / "customers.parquet")
        events = _load_events(workspace, data / "events.parquet")
    seconds = time.perf_counter() - started
    marker.write_text(json.dumps({"customers": profiles, "events": events, "seconds": seconds}))
    print(f"loaded {profiles:,} profiles and {events:,} events in {seconds:.0f} s")
    return settings


def _load_customers(workspace: Workspace, path: Path) -> int:
    table = pq.read_table(path)
    rows = table.to_pylist()
    profile = {"email", "phone", "telegram_chat_id", "timezone", "locale"}
    records = []
    links = []
    for row in rows:
        customer_id = int(row["userId"][1:])
        traits = {k: v for k, v in row.items() if k not in ("userId", "messageId", "timestamp")}
        records.append(
            {
                "customer_id": customer_id,
                "user_id": row["userId"],
                **{k: row[k] for k in profile},
                "traits": traits,
                "created_at": datetime.fromisoformat(row["createdAt"]),
                "updated_at": row["timestamp"],
            }
        )
        links.append({"kind": "user", "value": row["userId"], "customer_id": customer_id})
    with workspace.state.begin() as connection:
        for start in range(0, len(records), 50_000):
            connection.execute(insert(customers), records[start : start + 50_000])
            connection.execute(insert(identities), links[start : start + 50_000])
    return len(records)


def _load_events(workspace: Workspace, path: Path) -> int:
    total = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1_000_000):
        ids = pc.extract_regex(batch.column("messageId"), _CUSTOMER_IN_MESSAGE.pattern)
        customer = pc.struct_field(ids, [0]).cast(pa.int64())
        stamp = batch.column("timestamp").cast(pa.timestamp("us", tz="UTC"))
        table = pa.table(
            {
                "message_id": batch.column("messageId"),
                "customer_id": customer,
                "user_id": batch.column("userId"),
                "anonymous_id": batch.column("anonymousId"),
                "type": batch.column("type"),
                "name": batch.column("event"),
                "properties": batch.column("properties"),
                "context": batch.column("context"),
                "timestamp": stamp,
                "received_at": stamp,
            },
            schema=EVENT_SCHEMA,
        )
        workspace.events.append(table)
        total += table.num_rows
    return total


# --- hand-written DuckDB SQL ----------------------------------------------------------------

_ORDERS = "type = 'track' AND name = 'Order Completed' AND timestamp <= $t"
_NUMBER = "json_type(properties, '$.{k}') IN ('DOUBLE', 'BIGINT', 'UBIGINT')"
_LAPSED = (
    f"SELECT customer_id FROM events WHERE {_ORDERS} "
    "GROUP BY 1 HAVING max(timestamp) <= $t - INTERVAL 30 DAY"
)
_SINCE = "timestamp > $t - INTERVAL {} DAY"
_BUYERS = f"SELECT DISTINCT customer_id FROM events WHERE {_ORDERS}"
HAND_SQL: dict[str, str] = {
    "buyers": _BUYERS,
    "ordered_30d": f"{_BUYERS} AND {_SINCE.format(30)}",
    "ordered_90d": f"{_BUYERS} AND {_SINCE.format(90)}",
    "lapsed_30d": _LAPSED,
    "shoe_browsers": (
        "SELECT customer_id FROM events WHERE type = 'track' AND name = 'Product Viewed' "
        "AND timestamp > $t - INTERVAL 30 DAY AND timestamp <= $t "
        "AND properties->>'$.category' = 'shoes' "
        "AND json_type(properties, '$.category') = 'VARCHAR' "
        "GROUP BY 1 HAVING count(*) >= 2 "
        "INTERSECT SELECT customer_id FROM customers WHERE traits->>'$.country' IN ('UA', 'PL') "
        f"EXCEPT {_LAPSED}"
    ),
    "new_customers": (
        "SELECT customer_id FROM customers "
        "WHERE created_at > $t - INTERVAL 30 DAY AND created_at <= $t"
    ),
    "vip": (
        f"SELECT customer_id FROM events WHERE {_ORDERS} AND {_SINCE.format(365)} "
        f"GROUP BY 1 HAVING coalesce(sum(CASE WHEN {_NUMBER.format(k='revenue')} "
        "THEN (properties->>'$.revenue')::DOUBLE END), 0) >= 400"
    ),
    "big_baskets": (
        f"SELECT DISTINCT customer_id FROM events WHERE {_ORDERS} AND {_SINCE.format(90)} "
        f"AND (properties->>'$.revenue')::DOUBLE >= 150 AND {_NUMBER.format(k='revenue')}"
    ),
    "at_risk_buyers": (
        f"SELECT customer_id FROM events WHERE {_ORDERS} GROUP BY 1 "
        "HAVING count(*) >= 2 AND max(timestamp) <= $t - INTERVAL 60 DAY"
    ),
    "cart_abandoners": (
        "SELECT DISTINCT a.customer_id FROM events a "
        "WHERE a.type = 'track' AND a.name = 'Product Added' "
        "AND a.timestamp > $t - INTERVAL 7 DAY AND a.timestamp <= $t - INTERVAL 4 HOUR "
        "AND NOT EXISTS (SELECT 1 FROM events o WHERE o.customer_id = a.customer_id "
        "AND o.type = 'track' AND o.name = 'Order Completed' "
        "AND o.timestamp > a.timestamp AND o.timestamp <= a.timestamp + INTERVAL 4 HOUR)"
    ),
}


def _count(con: Any, sql: str, params: dict[str, Any]) -> int:
    return int(con.execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0])


def best_of(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def compare_queries(
    workspace: Workspace, strategy: Strategy, as_of: datetime, repeat: int
) -> dict[str, dict[str, float]]:
    """Each segment's compiled query (inlined references) against its hand-written SQL:
    both counted in DuckDB, best of `repeat`; the member counts must agree."""
    con = workspace.events._con.cursor()  # type: ignore[attr-defined]  # the bench reads DuckDB directly
    con.execute("SET TimeZone = 'UTC'")
    figures: dict[str, dict[str, float]] = {}
    for name, hand in HAND_SQL.items():
        expr = compile_segment(
            strategy.segments[name],
            as_of=as_of,
            tables=segment_tables("duckdb"),
            segments=strategy.segments,
            computed_traits=strategy.computed_traits,
            name=name,
        )
        orbita_sql = to_sql(expr, dialect="duckdb")
        t_orbita, n_orbita = best_of(repeat, lambda sql=orbita_sql: _count(con, sql, {}))
        t_hand, n_hand = best_of(repeat, lambda sql=hand: _count(con, sql, {"t": as_of}))
        if n_orbita != n_hand:
            print(f"  !! {name}: Orbita {n_orbita:,} members, hand-written SQL {n_hand:,}")
        figures[name] = {"orbita": t_orbita, "hand": t_hand, "members": float(n_orbita)}
    return figures


# --- pandas ----------------------------------------------------------------------------------


def pandas_frames(workspace: Workspace) -> dict[str, pd.DataFrame]:
    """The columns the pandas versions need, properties already extracted by DuckDB."""
    con = workspace.events._con.cursor()  # type: ignore[attr-defined]
    con.execute("SET TimeZone = 'UTC'")

    def frame(sql: str) -> pd.DataFrame:
        return con.execute(sql).fetch_df()

    return {
        "orders": frame(
            "SELECT customer_id, timestamp, "
            "TRY_CAST(properties->>'$.revenue' AS DOUBLE) AS revenue "
            "FROM events WHERE type = 'track' AND name = 'Order Completed'"
        ),
        "views": frame(
            "SELECT customer_id, timestamp, properties->>'$.category' AS category "
            "FROM events WHERE type = 'track' AND name = 'Product Viewed'"
        ),
        "adds": frame(
            "SELECT customer_id, timestamp FROM events "
            "WHERE type = 'track' AND name = 'Product Added'"
        ),
        "customers": frame(
            "SELECT customer_id, traits->>'$.country' AS country, created_at FROM customers"
        ),
    }


def pandas_segments(f: dict[str, pd.DataFrame], as_of: datetime) -> dict[str, Callable[[], int]]:
    t = pd.Timestamp(as_of)
    day = pd.Timedelta(days=1)
    orders, views, adds, people = f["orders"], f["views"], f["adds"], f["customers"]

    def upto(frame: pd.DataFrame, days: float | None = None) -> pd.DataFrame:
        mask = frame.timestamp <= t
        if days is not None:
            mask &= frame.timestamp > t - days * day
        return frame[mask]

    def lapsed() -> set[int]:
        last = upto(orders).groupby("customer_id").timestamp.max()
        return set(last[last <= t - 30 * day].index)

    def shoes() -> int:
        v = upto(views, 30)
        counts = v[v.category == "shoes"].groupby("customer_id").size()
        local = set(people[people.country.isin(["UA", "PL"])].customer_id)
        return len((set(counts[counts >= 2].index) & local) - lapsed())

    def abandoners() -> int:
        a = adds[(adds.timestamp > t - 7 * day) & (adds.timestamp <= t - pd.Timedelta(hours=4))]
        o = upto(orders)[["customer_id", "timestamp"]].rename(columns={"timestamp": "ordered"})
        pairs = a.reset_index().merge(o, on="customer_id")
        followed = pairs[
            (pairs.ordered > pairs.timestamp)
            & (pairs.ordered <= pairs.timestamp + pd.Timedelta(hours=4))
        ]
        return a.drop(index=followed["index"].unique()).customer_id.nunique()

    def vip() -> int:
        total = upto(orders, 365).groupby("customer_id").revenue.sum()
        return int((total >= 400).sum())

    def at_risk() -> int:
        g = upto(orders).groupby("customer_id").timestamp.agg(["count", "max"])
        return int(((g["count"] >= 2) & (g["max"] <= t - 60 * day)).sum())

    return {
        "buyers": lambda: upto(orders).customer_id.nunique(),
        "ordered_30d": lambda: upto(orders, 30).customer_id.nunique(),
        "ordered_90d": lambda: upto(orders, 90).customer_id.nunique(),
        "lapsed_30d": lambda: len(lapsed()),
        "shoe_browsers": shoes,
        "new_customers": lambda: int(
            ((people.created_at > t - 30 * day) & (people.created_at <= t)).sum()
        ),
        "vip": vip,
        "big_baskets": lambda: (
            upto(orders, 90).loc[lambda o: o.revenue >= 150].customer_id.nunique()
        ),
        "at_risk_buyers": at_risk,
        "cart_abandoners": abandoners,
    }


# --- the run ---------------------------------------------------------------------------------


def refresh_run(
    workspace: Workspace,
    strategy: Strategy,
    as_of: datetime,
    *,
    inline: bool = False,
    features: bool = True,
) -> tuple[float, dict[str, float], list[Any]]:
    """One refresh of everything as the schedule makes it (`full_snapshot=False`), in an
    open workspace (the server's process stays open between refreshes)."""
    seconds: dict[str, float] = {}
    workspace.clock.set(as_of)  # type: ignore[attr-defined]  # a SimulatedClock
    started = time.perf_counter()
    reports = refresh_segments(
        workspace=workspace,
        strategy=strategy,
        as_of=as_of,
        inline_references=inline,
        full_snapshot=False,
        features=features,
        timings=lambda what, took: seconds.__setitem__(what, seconds.get(what, 0) + took),
    )
    return time.perf_counter() - started, seconds, reports


def _print_run(title: str, total: float, seconds: dict[str, float], reports: list[Any]) -> None:
    changes = sum(r.entered + r.exited for r in reports)
    print(f"\n{title} ({changes:,} entries + exits): {total:.2f} s")
    shares = {k: v for k, v in seconds.items() if k in _STEPS}
    segments = sum(v for k, v in seconds.items() if k not in _STEPS)
    for what, took in shares.items():
        print(f"  {what:24s} {took:7.3f} s")
    print(f"  {'segments and stages':24s} {segments:7.3f} s ({len(reports)} diffs)")
    slowest = sorted(((v, k) for k, v in seconds.items() if k not in _STEPS), reverse=True)[:4]
    print("    slowest: " + ", ".join(f"{k} {v:.3f} s" for v, k in slowest))


_STEPS = ("customers snapshot", "rfm", "event features", "events", "record")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--fresh", action="store_true", help="forget earlier refreshes first")
    args = parser.parse_args()
    data = generated(args.customers, args.days)
    settings = loaded_workspace(args.customers, data)
    strategy = parse_strategy(STRATEGY.read_text(), source=str(STRATEGY))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    with open_workspace(settings=settings) as workspace:
        refreshed_before = workspace.events._con.execute(  # type: ignore[attr-defined]
            "SELECT count(*) FROM segment_members"
        ).fetchone()[0]
        started = time.perf_counter()
        snapshot = sync_customer_snapshot(workspace=workspace)
        print(
            f"customers snapshot: {snapshot:,} profiles, full copy "
            f"{time.perf_counter() - started:.2f} s"
        )

    # 1. cold (only when nothing was refreshed before), 2. steady state a day later, then
    # the next scheduled refreshes in the same process: with event features (the default),
    # then without (one scan per condition), then with references inlined.
    base = AS_OF - timedelta(days=2)
    last = _last_as_of(settings)
    first = max(base, last + timedelta(hours=1)) if last else base
    with open_workspace(settings=settings, clock=SimulatedClock(first)) as workspace:
        if not refreshed_before:
            total, seconds, reports = refresh_run(workspace, strategy, first)
            _print_run("cold refresh (everyone enters)", total, seconds, reports)
            first += timedelta(hours=1)
        steady = first + timedelta(days=1)
        run = refresh_run(workspace, strategy, steady)
        _print_run("steady refresh a day later, first in this process", *run)
        run = refresh_run(workspace, strategy, steady + timedelta(hours=1))
        _print_run("next scheduled refresh, an hour later", *run)
        run = refresh_run(workspace, strategy, steady + timedelta(hours=2), features=False)
        _print_run("an hour later again, without event features", *run)
        run = refresh_run(workspace, strategy, steady + timedelta(hours=3), inline=True)
        _print_run("an hour later again, references inlined", *run)
        print(f"load average now {os.getloadavg()[0]:.2f}")

    with open_workspace(settings=settings) as workspace:
        figures = compare_queries(workspace, strategy, steady, args.repeat)
        started = time.perf_counter()
        frames = pandas_frames(workspace)
        load = time.perf_counter() - started
    panda = pandas_segments(frames, steady)
    print(f"\nqueries alone, best of {args.repeat} (pandas: load {load:.1f} s, then per segment)")
    print(
        f"  {'segment':18s} {'members':>9s} {'orbita':>8s} {'hand SQL':>9s} {'ratio':>6s}"
        f" {'pandas':>8s} {'ratio':>6s}"
    )
    for name, f in figures.items():
        t_pandas, n_pandas = best_of(1, panda[name])
        flag = "" if int(n_pandas) == int(f["members"]) else f"  (pandas {int(n_pandas):,})"
        print(
            f"  {name:18s} {int(f['members']):9,d} {f['orbita']:8.3f} {f['hand']:9.3f} "
            f"{f['orbita'] / f['hand']:6.2f} {t_pandas:8.3f} {t_pandas / f['orbita']:6.1f}{flag}"
        )
    ratios = [f["orbita"] / f["hand"] for f in figures.values()]
    median, worst = statistics.median(ratios), max(ratios)
    print(f"  ratio orbita / hand SQL: median {median:.2f}, worst {worst:.2f}")


def _last_as_of(settings: Settings) -> datetime | None:
    from sqlalchemy import func, select

    from orbita.store.state import segment_refreshes

    with open_workspace(settings=settings) as workspace, workspace.state.connect() as connection:
        return connection.execute(select(func.max(segment_refreshes.c.as_of))).scalar_one()  # type: ignore[no-any-return]


if __name__ == "__main__":
    main()
