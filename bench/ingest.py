"""Ingestion throughput: `/v1/batch` into the embedded store, beside the raw insert rate.

    .venv/bin/python bench/ingest.py [--seconds 20] [--clients 8] [--batch 500]

Starts `orbita serve` on a fresh workspace on 127.0.0.1, sends pre-built `/v1/batch` bodies
from several concurrent clients for a bounded time, and prints events/s. Then, in the same
run, measures the raw rate of the same event store: the same events, already validated and
in Arrow with their customers resolved, given to `DuckDBEventStore.append` of a fresh store
— the store's own fastest bulk path, deduplication included (what the server's writer
calls), without HTTP, validation or identity resolution. Goal (DESIGN.md): at least 50,000
events/s, and at least half the raw rate (of the 20,000-event batches: the largest write the
server makes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from orbita.core.settings import Settings
from orbita.model.messages import parse_batch
from orbita.services.workspace import init_workspace, open_workspace
from orbita.store.events.base import event_table
from orbita.store.events.duckdb_store import DuckDBEventStore

GOAL_EVENTS_PER_SECOND = 50_000
EVENTS = [
    ("Product Viewed", 0.55),
    ("Product Added", 0.2),
    ("Checkout Started", 0.1),
    ("Order Completed", 0.05),
    ("Email Opened", 0.1),
]
CATEGORIES = ["shoes", "dresses", "shirts", "bags", "jackets"]


def build_bodies(*, events: int, batch: int, users: int, seed: int) -> list[bytes]:
    """`/v1/batch` bodies, serialised ahead: the clients spend no CPU building them."""
    rng = random.Random(seed)
    names = [name for name, _ in EVENTS]
    weights = [weight for _, weight in EVENTS]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    bodies = []
    for offset in range(0, events, batch):
        messages: list[dict[str, Any]] = []
        for i in range(offset, min(offset + batch, events)):
            name = rng.choices(names, weights)[0]
            properties: dict[str, Any] = {
                "sku": f"SKU-{rng.randrange(5000):05d}",
                "category": rng.choice(CATEGORIES),
                "price": round(rng.uniform(5, 200), 2),
            }
            if name == "Order Completed":
                properties["revenue"] = round(rng.uniform(20, 400), 2)
            messages.append(
                {
                    "type": "track",
                    "messageId": str(uuid.UUID(int=rng.getrandbits(128))),
                    "userId": f"user-{rng.randrange(users):07d}",
                    "event": name,
                    "timestamp": (start + timedelta(seconds=i)).isoformat(),
                    "properties": properties,
                    "context": {"library": {"name": "bench", "version": "1"}},
                }
            )
        bodies.append(orjson.dumps({"batch": messages}))
    return bodies


def identify_bodies(*, users: int, batch: int) -> list[bytes]:
    """One identify per user: sent before timing, so the timed events find known customers."""
    return [
        orjson.dumps(
            {
                "batch": [
                    {
                        "type": "identify",
                        "messageId": f"warm-{u}",
                        "userId": f"user-{u:07d}",
                        "traits": {"email": f"user{u}@example.com"},
                    }
                    for u in range(start, min(start + batch, users))
                ]
            }
        )
        for start in range(0, users, batch)
    ]


def start_server(workspace: Path) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "orbita.cli.main", "serve", "--port", "0", "-w", str(workspace)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    info = workspace / "server.json"
    deadline = time.monotonic() + 60
    while not info.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"orbita serve did not start: {process.communicate()[1].decode()}")
        time.sleep(0.05)
    return process, json.loads(info.read_text())["url"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The server's parse worker processes."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def send_all(
    *, url: str, write_key: str, bodies: list[bytes], clients: int, seconds: float
) -> tuple[int, int, float]:
    """Send bodies from `clients` concurrent connections until done or time is up."""
    queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait((body, body.count(b'"messageId"')))
    sent_events = 0
    requests = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal sent_events, requests
        async with httpx.AsyncClient(
            base_url=url,
            auth=(write_key, ""),
            headers={"Content-Type": "application/json"},
            timeout=60,
        ) as http:
            while time.perf_counter() < deadline:
                try:
                    body, count = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                response = await http.post("/v1/batch", content=body)
                if response.status_code != 200:
                    raise SystemExit(f"/v1/batch answered {response.status_code}: {response.text}")
                sent_events += count
                requests += 1

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return sent_events, requests, time.perf_counter() - started


def raw_rate(*, bodies: list[bytes], batch_events: int, directory: Path) -> tuple[float, int]:
    """Events/s appending pre-built Arrow batches of the same events to a fresh DuckDB store
    through its `append` (the deduplicating path the server uses)."""
    received_at = datetime.now(UTC)
    records = [
        r for body in bodies for r in parse_batch(orjson.loads(body), received_at=received_at)
    ]
    # Customer ids as the server would resolve them: one per user id.
    ids: dict[str, int] = {}
    customer_ids = [ids.setdefault(r.user_id or "", len(ids) + 1) for r in records]
    tables = [
        event_table(records[i : i + batch_events], customer_ids[i : i + batch_events])
        for i in range(0, len(records), batch_events)
    ]
    store = DuckDBEventStore(directory / "raw.duckdb")
    try:
        started = time.perf_counter()
        for table in tables:
            store.append(table)
        elapsed = time.perf_counter() - started
        stored = store.count()
    finally:
        store.close()
    return stored / elapsed, stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="Sending time limit.")
    parser.add_argument("--events", type=int, default=1_500_000, help="Events built (upper bound).")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent HTTP clients.")
    parser.add_argument("--batch", type=int, default=500, help="Events per /v1/batch request.")
    parser.add_argument("--users", type=int, default=100_000, help="Distinct user ids.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--cold",
        action="store_true",
        help="Skip the warm-up: every user id is new to the workspace when its events arrive.",
    )
    args = parser.parse_args()
    if not 1 <= args.batch <= 1000:
        parser.error("--batch must be 1..1000 (a request is at most 500 KB)")

    print(f"building {args.events:,} events in bodies of {args.batch} …", flush=True)
    bodies = build_bodies(events=args.events, batch=args.batch, users=args.users, seed=args.seed)

    with tempfile.TemporaryDirectory(prefix="orbita-bench-") as tmp:
        directory = Path(tmp)
        settings = Settings(workspace=directory / "workspace")
        keys = init_workspace(settings=settings)
        process, url = start_server(settings.workspace)
        try:
            if not args.cold:
                started = time.perf_counter()
                warm, _, _ = asyncio.run(
                    send_all(
                        url=url,
                        write_key=keys.write_key,
                        bodies=identify_bodies(users=args.users, batch=args.batch),
                        clients=args.clients,
                        seconds=600,
                    )
                )
                print(
                    f"warm-up: {warm:,} customers identified in "
                    f"{time.perf_counter() - started:.1f} s (not timed below)",
                    flush=True,
                )
            workers = {pid: cpu_seconds(pid) for pid in children(process.pid)}
            server_cpu = cpu_seconds(process.pid)
            client_cpu = time.process_time()
            sent, requests, elapsed = asyncio.run(
                send_all(
                    url=url,
                    write_key=keys.write_key,
                    bodies=bodies,
                    clients=args.clients,
                    seconds=args.seconds,
                )
            )
            server_cpu = cpu_seconds(process.pid) - server_cpu
            # Workers start with the first batch (before the timed part unless --cold).
            workers |= {pid: 0.0 for pid in children(process.pid) if pid not in workers}
            workers_cpu = sum(cpu_seconds(pid) - before for pid, before in workers.items())
            client_cpu = time.process_time() - client_cpu
        finally:
            stop_server(process)
        with open_workspace(settings=settings) as workspace:
            stored = workspace.events.count() - (0 if args.cold else args.users)
        api_rate = sent / elapsed
        used = bodies[:requests]
        raw_500, _ = raw_rate(bodies=used, batch_events=args.batch, directory=directory / "a")
        raw_big, _ = raw_rate(
            bodies=used, batch_events=settings.ingest_max_batch_events, directory=directory / "b"
        )

    ratio = api_rate / raw_big
    print(
        f"cpus: {os.cpu_count()}, clients: {args.clients}, events per request: {args.batch}, "
        f"user ids: {args.users:,} ({'new' if args.cold else 'known'})"
    )
    print(
        f"/v1/batch:  {sent:,} events in {requests:,} requests in {elapsed:.1f} s "
        f"= {api_rate:,.0f} events/s (stored: {stored:,})"
    )
    print(
        f"CPU while sending: server {server_cpu:.1f} s ({server_cpu / elapsed:.2f} cores), "
        f"{len(workers)} parse workers {workers_cpu:.1f} s ({workers_cpu / elapsed:.2f} cores), "
        f"clients {client_cpu:.1f} s ({client_cpu / elapsed:.2f} cores); "
        f"server + workers {(server_cpu + workers_cpu) / sent * 1e6:.1f} µs of CPU an event"
    )
    print(f"raw append, {args.batch}-event Arrow batches:    {raw_500:,.0f} events/s")
    print(
        f"raw append, {settings.ingest_max_batch_events:,}-event Arrow batches: "
        f"{raw_big:,.0f} events/s"
    )
    print(
        f"API / raw ({settings.ingest_max_batch_events:,}-event batches): {ratio:.2f}; "
        f"API / raw ({args.batch}-event batches): {api_rate / raw_500:.2f}"
    )
    goal = api_rate >= GOAL_EVENTS_PER_SECOND and ratio >= 0.5
    print(
        f"goal (>= {GOAL_EVENTS_PER_SECOND:,} events/s and >= 0.5 of raw): "
        f"{'met' if goal else 'MISSED'}"
    )
    if stored != sent:
        raise SystemExit(f"stored {stored:,} events but {sent:,} were acknowledged")


if __name__ == "__main__":
    main()
