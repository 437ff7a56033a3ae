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

import numpy as np
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
OUT = ROOT / "out"
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = generated(args.customers, args.days)
    settings = loaded_workspace(args.customers, data)
    print(settings)


if __name__ == "__main__":
    main()
