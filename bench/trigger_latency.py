"""Trigger latency: from an event posted to a running server to the email it triggers
arriving at an SMTP server, under a steady load of events.

    .venv/bin/python bench/trigger_latency.py [--rate 1000] [--seconds 30] [--trigger-share 0.1]

`orbita serve` runs as its own process on a fresh workspace (SQLite + DuckDB) with its own
sender on (ORBITA_DELIVER_INTERVAL); the strategy has one journey whose trigger, `Order
Completed`, sends a receipt at once. Events go to `/v1/batch` at `--rate` a second, on a
fixed schedule (a slow answer does not hold the next batch back), in batches of `--batch`;
`--trigger-share` of them are `Order Completed` (each with a sequence number), the rest
`Product Viewed`. The aiosmtpd server, in its own process, notes the wall-clock time each
receipt arrives (its subject carries the sequence number); a trigger's latency is that
time minus the moment its batch was posted. Goal (DESIGN.md): p99 under one second at
1,000 events a second.

The peer measured in the same run: the same receipt sent by a bare aiosmtplib call to the
same server while the server is idle — the floor of any latency here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx

# bench/delivery.py: the same loopback helpers.
from delivery import free_port, load_average
from orbita.core.settings import Settings
from orbita.model.messages import parse_batch
from orbita.model.strategy import parse_strategy
from orbita.services.apply import apply_strategy
from orbita.services.ingest import store_records
from orbita.services.workspace import init_workspace, open_workspace

STRATEGY = """workspace: latency
timezone: UTC
channels:
  email:
    type: smtp
    host: 127.0.0.1
    port: {port}
    from: "Shop <shop@example.com>"
    concurrency: 8
templates:
  receipt:
    channel: email
    topic: transactional
    subject: "Receipt {{{{ event.seq }}}}"
    html: >-
      <html><body><p>Thanks {{{{ customer.first_name | default: 'there' }}}},</p>
      <p>order {{{{ event.order_id }}}}: {{{{ event.total | money }}}}.</p>
      <a href="https://shop.example.com/orders/{{{{ event.order_id }}}}">Your order</a>
      </body></html>
journeys:
  receipts:
    trigger: {{event: "Order Completed"}}
    steps:
      - send: receipt
"""
SUBJECT = re.compile(rb"Subject: Receipt (\d+)")


# --- the SMTP server, in its own process ----------------------------------------------------


class Arrivals:
    def __init__(self) -> None:
        self.at: dict[int, float] = {}
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        arrived = time.time()
        content: bytes = envelope.original_content or envelope.content
        self.count += 1
        found = SUBJECT.search(content)
        if found is not None:
            self.at.setdefault(int(found.group(1)), arrived)
        return "250 OK"


def smtp_process(port: int, control: Connection) -> None:
    from aiosmtpd.controller import Controller

    arrivals = Arrivals()
    controller = Controller(arrivals, hostname="127.0.0.1", port=port, data_size_limit=0)
    controller.start()
    control.send("ready")
    while (command := control.recv()) != "stop":
        if command == "arrivals":
            control.send((arrivals.count, dict(arrivals.at)))
    controller.stop()


# --- the workspace and the server -----------------------------------------------------------


def prepare(folder: Path, smtp_port: int, customers: int) -> Settings:
    """A workspace with the strategy applied and the customers identified."""
    settings = Settings(workspace=folder / "ws")
    init_workspace(settings=settings)
    text = STRATEGY.format(port=smtp_port)
    source = folder / "strategy.yaml"
    source.write_text(text)
    now = datetime.now(UTC)
    with open_workspace(settings=settings) as workspace:
        strategy = parse_strategy(text, source=str(source))
        apply_strategy(workspace=workspace, strategy=strategy, content=text, source=str(source))
        identifies = [
            {
                "type": "identify",
                "userId": f"c{i:06d}",
                "messageId": f"id-{i}",
                "timestamp": now.isoformat(),
                "traits": {"email": f"c{i:06d}@example.org", "first_name": f"C{i}"},
            }
            for i in range(customers)
        ]
        store_records(
            workspace=workspace, records=parse_batch({"batch": identifies}, received_at=now)
        )
    return settings


def start_server(settings: Settings, interval: float) -> tuple[subprocess.Popen[bytes], str]:
    env = {
        **os.environ,
        "ORBITA_DELIVER_INTERVAL": str(interval),
        "ORBITA_REFRESH_INTERVAL": "0",
    }
    orbita = Path(sys.executable).with_name("orbita")
    process = subprocess.Popen(
        [str(orbita), "serve", "--workspace", str(settings.workspace), "--port", "0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    info = settings.workspace / "server.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if info.exists():
            return process, str(json.loads(info.read_text())["url"])
        if process.poll() is not None:
            raise SystemExit("orbita serve stopped before it listened")
        time.sleep(0.1)
    process.kill()
    raise SystemExit("orbita serve did not start within 120 s")


# --- the load -------------------------------------------------------------------------------


async def post_events(
    url: str,
    *,
    auth: tuple[str, str],
    rate: int,
    seconds: float,
    batch: int,
    share: float,
    customers: int,
) -> tuple[dict[int, float], int, int]:
    """Batches on a fixed schedule; (trigger seq -> posted at, events accepted, failures)."""
    posted: dict[int, float] = {}
    accepted = failures = 0
    batches = int(rate * seconds / batch)
    every = batch / rate
    triggers_per_batch = max(1, round(batch * share))
    seq = 0

    async def send(client: httpx.AsyncClient, body: dict[str, Any], seqs: list[int]) -> None:
        nonlocal accepted, failures
        at = time.time()
        for s in seqs:
            posted[s] = at
        try:
            response = await client.post("/v1/batch", json=body)
            if response.status_code == 200:
                accepted += len(body["batch"])
            else:
                failures += 1
                if failures == 1:
                    print(f"a request failed: {response.status_code} {response.text[:300]}")
        except httpx.HTTPError as error:
            failures += 1
            if failures == 1:
                print(f"a request failed: {type(error).__name__} {error}")

    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, auth=auth, timeout=30, limits=limits) as client:
        start = time.monotonic()
        tasks = []
        for n in range(batches):
            events = []
            seqs = []
            for k in range(batch):
                customer = (n * batch + k) % customers
                if k < triggers_per_batch:
                    seq += 1
                    seqs.append(seq)
                    events.append(
                        {
                            "type": "track",
                            "event": "Order Completed",
                            "userId": f"c{(seq * 7919) % customers:06d}",
                            "messageId": f"order-{seq}",
                            "properties": {"seq": seq, "order_id": f"o{seq}", "total": 42.5},
                        }
                    )
                else:
                    events.append(
                        {
                            "type": "track",
                            "event": "Product Viewed",
                            "userId": f"c{customer:06d}",
                            "messageId": f"view-{n}-{k}",
                            "properties": {"sku": f"SKU-{k}"},
                        }
                    )
            delay = start + n * every - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(client, {"batch": events}, seqs)))
        await asyncio.gather(*tasks)
    return posted, accepted, failures


async def bare_floor(port: int, samples: int) -> list[float]:
    """The same receipt sent straight to the server: seconds per send, one at a time."""
    raw = (
        b"From: shop@example.com\r\nTo: floor@example.org\r\nSubject: Floor\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Thanks</p>\r\n"
    )
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
    await smtp.connect()
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        await smtp.sendmail("shop@example.com", ["floor@example.org"], raw)
        times.append(time.perf_counter() - started)
    await smtp.quit()
    return times


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=int, default=1000, help="events a second")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--batch", type=int, default=50, help="events per /v1/batch request")
    parser.add_argument("--trigger-share", type=float, default=0.1)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--interval", type=float, default=0.05, help="ORBITA_DELIVER_INTERVAL")
    args = parser.parse_args()

    port = free_port()
    control, child = multiprocessing.Pipe()
    smtp = multiprocessing.Process(target=smtp_process, args=(port, child), daemon=True)
    smtp.start()
    assert control.recv() == "ready"
    floor = asyncio.run(bare_floor(port, 200))

    with tempfile.TemporaryDirectory(prefix="orbita-latency-") as tmp:
        settings = prepare(Path(tmp), port, args.customers)
        keys = json.loads(settings.keys_path.read_text())
        auth = (keys["write_key"], "")
        server, url = start_server(settings, args.interval)
        try:
            # Requests first: the first write, and each parse worker, load what they load
            # lazily (seconds each on a busy machine).
            def warm_up(_n: int) -> int:
                return httpx.post(
                    f"{url}/v1/batch",
                    json={"batch": [{"type": "track", "userId": "c000000", "event": "Warm Up"}]},
                    auth=auth,
                    timeout=300,
                ).status_code

            with ThreadPoolExecutor(4) as pool:
                assert set(pool.map(warm_up, range(8))) == {200}
            print(
                f"rate {args.rate:,} events/s for {args.seconds:g} s, batches of {args.batch}, "
                f"{args.trigger_share:.0%} triggers; deliver interval {args.interval} s"
            )
            print(f"load average before: {' '.join(load_average())}")
            started = time.monotonic()
            posted, accepted, failures = asyncio.run(
                post_events(
                    url,
                    auth=auth,
                    rate=args.rate,
                    seconds=args.seconds,
                    batch=args.batch,
                    share=args.trigger_share,
                    customers=args.customers,
                )
            )
            elapsed = time.monotonic() - started
            # Wait for the stragglers (up to 30 s after the last post).
            deadline = time.monotonic() + 30
            while True:
                control.send("arrivals")
                _count, arrivals = control.recv()
                if len(arrivals) >= len(posted) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            print(f"load average after: {' '.join(load_average())}")
        finally:
            server.terminate()
            try:
                server.wait(timeout=120)  # it drains the ingestor and checkpoints DuckDB
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    control.send("stop")
    smtp.join(timeout=10)

    latencies = [arrivals[s] - posted[s] for s in posted if s in arrivals]
    missing = len(posted) - len(latencies)
    print(
        f"posted {accepted:,} events in {elapsed:.1f} s = {accepted / elapsed:,.0f} events/s "
        f"({failures} failed requests); {len(posted):,} triggers, "
        f"{len(arrivals):,} receipts arrived, {missing} missing"
    )
    if not latencies:
        raise SystemExit("no receipt arrived")
    p50, p90, p99 = (percentile(latencies, p) for p in (50, 90, 99))
    print(
        f"event posted -> email at the server: p50 {p50 * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms, "
        f"mean {statistics.fmean(latencies) * 1000:.0f} ms"
    )
    print(
        f"floor (bare aiosmtplib send of one receipt, idle server): "
        f"p50 {percentile(floor, 50) * 1000:.1f} ms, p99 {percentile(floor, 99) * 1000:.1f} ms"
    )
    met = p50 < 1 and p99 < 1 and missing == 0
    print(f"p99 / goal (1 s): {p99:.2f} ({'MET' if met else 'MISSED'})")


if __name__ == "__main__":
    main()
