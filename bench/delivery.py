"""Delivery speed: personalised MJML emails from the outbox into a local SMTP server, against
a bare aiosmtplib loop sending pre-rendered messages over the same connections.

    .venv/bin/python bench/delivery.py [--emails 100000] [--connections 8] [--postgres URL]

Queues `--emails` cart reminders the real way (customers identified, `Product Added`
ingested, the journey advanced: one outbox row each), then, in the same run and against the
same aiosmtpd server (its own process, so it has its own GIL), times:

- bare: an aiosmtplib loop, `--connections` connections, sending pre-built messages (one
  rendered 20 KB HTML body, headers per message) — the ceiling;
- orbita: `deliver_due` on the workspace with the same number of SMTP connections:
  claiming, consent and suppression checks, Liquid over the compiled MJML (six cart lines,
  money in the customer's locale), the plain-text part, link tracking (every link through
  the click redirect, the open pixel, the message's links stored before it is sent), MIME,
  the per-message commit before the final dot, the outbox bookkeeping, and the message
  events (`Email Sent`, `Email Delivered`) appended to the event store.

The server counts messages and distinct Message-IDs, so the run also checks that nothing
was sent twice. DESIGN.md: the bare loop reached about 800 emails/s with 8 connections
here; the goal is at least 70 % of it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiosmtplib

from orbita.channels import close_channels, open_channels
from orbita.channels.email.client import SmtpClient
from orbita.core.settings import Settings
from orbita.model.delivery import OutgoingMessage
from orbita.model.messages import parse_batch
from orbita.model.strategy import Strategy, parse_strategy
from orbita.services.delivery import DeliveryPolicy, deliver_due, prepare_delivery
from orbita.services.ingest import store_records
from orbita.services.journeys import (
    advance_due,
    handle_events,
    publish_journeys,
    resolve_customers,
)
from orbita.services.tracking import LinkTracker, track_message
from orbita.services.workspace import Workspace, init_workspace, open_workspace

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LINK_SECRET = b"bench"
PUBLIC_URL = "https://t.shop.example.com"

PRODUCT = """
    <mj-section padding="8px 0"><mj-column width="35%">
      <mj-image src="https://shop.example.com/img/{{ line.sku }}.jpg" alt="{{ line.name }}"
        width="160px" border-radius="6px" />
    </mj-column><mj-column width="65%">
      <mj-text font-size="17px" font-weight="bold">{{ line.name }}</mj-text>
      <mj-text color="#555555">Size {{ line.size }} · colour {{ line.colour }} ·
        {{ line.price | money }}</mj-text>
      <mj-button background-color="#1f6feb"
        href="https://shop.example.com/p/{{ line.sku }}?utm_source=orbita">
        Back to {{ line.name }}</mj-button>
    </mj-column></mj-section>"""

MJML = f"""<mjml>
  <mj-head>
    <mj-title>Your cart is waiting</mj-title>
    <mj-attributes><mj-all font-family="Helvetica, Arial, sans-serif" /></mj-attributes>
  </mj-head>
  <mj-body background-color="#f4f4f4">
    <mj-section background-color="#ffffff"><mj-column>
      <mj-image src="https://shop.example.com/logo.png" width="140px" alt="Shop" />
      <mj-text font-size="22px">Hi {{{{ customer.first_name | default: "there" }}}},</mj-text>
      <mj-text>You left {{{{ event.products | size }}}} things in your cart. We kept them for
        you — sizes run out fast this season, so have another look before they are gone.
      </mj-text>
    </mj-column></mj-section>
    {{% for line in event.products %}}{PRODUCT}
    {{% endfor %}}
    <mj-section background-color="#ffffff"><mj-column>
      <mj-text font-size="18px">Total: {{{{ event.total | money }}}}</mj-text>
      <mj-button href="https://shop.example.com/cart">Finish my order</mj-button>
      <mj-divider border-color="#dddddd" />
      <mj-text font-size="12px" color="#888888">Free delivery over 50 · returns within 30
        days · questions? Reply to this email. Shop Ltd, 1 Main Street, Kyiv.</mj-text>
      <mj-text font-size="12px"><a href="{{{{ message.unsubscribe_url }}}}">Unsubscribe</a>
      </mj-text>
    </mj-column></mj-section>
  </mj-body>
</mjml>
"""

COLOURS = ["navy", "sand", "olive", "black", "white", "rust"]


def strategy_text(port: int, connections: int) -> str:
    return f"""workspace: bench
channels:
  email:
    type: smtp
    host: 127.0.0.1
    port: {port}
    from: "Shop <shop@example.com>"
    concurrency: {connections}
    unsubscribe_url: "https://shop.example.com/u/{{token}}"
templates:
  cart_reminder:
    channel: email
    subject: "{{{{ customer.first_name | default: 'Hi' }}}}, your cart is waiting"
    preheader: "{{{{ event.products | size }}}} things, kept for you"
    mjml: cart.mjml
journeys:
  abandoned_cart:
    trigger: {{event: "Product Added"}}
    steps:
      - send: cart_reminder
"""


# --- the server, in its own process ---------------------------------------------------------


class Counter:
    def __init__(self) -> None:
        self.count = 0
        self.ids: set[bytes] = set()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        self.count += 1
        start = content.find(b"Message-ID: ")
        if start >= 0:
            self.ids.add(content[start : content.find(b"\r\n", start)])
        return "250 OK"


def serve(port: int, control: Connection) -> None:
    from aiosmtpd.controller import Controller

    counter = Counter()
    controller = Controller(counter, hostname="127.0.0.1", port=port, data_size_limit=0)
    controller.start()
    control.send("ready")
    while True:
        command = control.recv()
        if command == "stop":
            break
        if command == "reset":
            counter.count, counter.ids = 0, set()
        control.send((counter.count, len(counter.ids), os.times()))
    controller.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the queue ------------------------------------------------------------------------------


def queue(workspace: Workspace, strategy: Strategy, emails: int) -> None:
    journeys = publish_journeys(workspace=workspace, journeys=strategy.journeys).journeys
    chunk = 5_000
    for start in range(0, emails, chunk):
        users = [f"c{i:07d}" for i in range(start, min(emails, start + chunk))]
        identifies = [
            {
                "type": "identify",
                "userId": user,
                "messageId": f"id-{user}",
                "timestamp": T0.isoformat(),
                "traits": {
                    "email": f"{user}@example.org",
                    "first_name": f"Customer{user[-4:]}",
                    "locale": ["en-US", "de-DE", "uk-UA"][int(user[1:]) % 3],
                    "currency": ["USD", "EUR", "UAH"][int(user[1:]) % 3],
                },
            }
            for user in users
        ]
        store_records(
            workspace=workspace, records=parse_batch({"batch": identifies}, received_at=T0)
        )
        adds = [
            {
                "type": "track",
                "event": "Product Added",
                "userId": user,
                "messageId": f"add-{user}",
                "timestamp": T0.isoformat(),
                "properties": {
                    "products": [
                        {
                            "name": f"Linen shirt {k}",
                            "size": "SMLX"[k % 4],
                            "colour": COLOURS[k],
                            "price": 29.5 + 10 * k,
                            "sku": f"SKU-{n}-{k}",
                        }
                        for k in range(6)
                    ],
                    "total": 6 * 29.5 + 150,
                },
            }
            for n, user in enumerate(users)
        ]
        records = parse_batch({"batch": adds}, received_at=T0)
        store_records(workspace=workspace, records=records)
        events = resolve_customers(workspace=workspace, records=records)
        handle_events(workspace=workspace, journeys=journeys, events=events)
    advance_due(workspace=workspace, journeys=journeys, now=T0, limit=5_000)


# --- the two senders ------------------------------------------------------------------------


async def bare_loop(
    port: int, indexes: range, connections: int, raw: bytes, options: list[str]
) -> float:
    """Pre-built messages (Orbita's own bytes for one customer, the Message-ID changed per
    message) over `connections` new connections."""
    pending = iter(indexes)

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await smtp.connect()
        for index in pending:
            message = raw.replace(b"<preview@", f"<bare-{index}@".encode(), 1)
            await smtp.sendmail(
                "shop@example.com", [f"c{index:07d}@example.org"], message, mail_options=options
            )
        await smtp.quit()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=10, help="bare / orbita alternations")
    parser.add_argument("--postgres", help="state in this PostgreSQL database (default SQLite)")
    args = parser.parse_args()

    port = free_port()
    control, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(port, child), daemon=True)
    server.start()
    assert control.recv() == "ready"

    def server_state() -> tuple[int, int, Any]:
        control.send("count")
        return control.recv()  # type: ignore[no-any-return]

    def server_cpu() -> float:
        times = server_state()[2]
        return float(times[0] + times[1])

    with tempfile.TemporaryDirectory(prefix="orbita-bench-") as tmp:
        folder = Path(tmp)
        (folder / "cart.mjml").write_text(MJML)
        text = strategy_text(port, args.connections)
        (folder / "strategy.yaml").write_text(text)
        strategy = parse_strategy(text, source=str(folder / "strategy.yaml"))
        settings = Settings(workspace=folder / "ws", database_url=args.postgres)
        init_workspace(settings=settings)
        with open_workspace(settings=settings) as workspace:
            started = time.perf_counter()
            queue(workspace, strategy, args.emails)
            backend = "postgres" if args.postgres else "sqlite"
            print(
                f"queued {args.emails:,} cart emails the real way in "
                f"{time.perf_counter() - started:.1f} s (state: {backend})"
            )
            # One rendered body for the bare loop: what Orbita sends to customer 0.
            from orbita.services.delivery import preview_message

            sample = preview_message(
                workspace=workspace,
                strategy=strategy,
                base_dir=folder,
                template="cart_reminder",
                customer="c0000000",
                properties={
                    "products": [
                        {"name": f"Linen shirt {k}", "size": "M", "colour": "navy",
                         "price": 29.5, "sku": f"SKU-0-{k}"}
                        for k in range(6)
                    ],
                    "total": 327,
                },
            )  # fmt: skip
            html = sample.message.html or ""
            print(f"rendered HTML per email: {len(html.encode()):,} bytes")
            result = asyncio.run(
                measure(args, port, workspace, strategy, folder, sample, server_cpu)
            )
    control.send("stop")
    server.join(timeout=10)
    sys.exit(result)


async def measure(
    args: argparse.Namespace,
    port: int,
    workspace: Workspace,
    strategy: Strategy,
    folder: Path,
    sample: Any,
    server_cpu: Any,
) -> int:
    """Rounds of a bare chunk then an Orbita chunk, so that both see the same load."""
    clients = open_channels(strategy.channels, env={})
    smtp = clients["email"]
    assert isinstance(smtp, SmtpClient)
    message = sample.message
    # The bare loop sends what Orbita sends: links tracked, the open pixel in.
    tracked, _links = track_message(
        LinkTracker(secret=LINK_SECRET, public_url=PUBLIC_URL),
        OutgoingMessage(
            key="preview",
            channel="email",
            to="c0000000@example.org",
            at=datetime.now(UTC),
            subject=message.subject,
            html=message.html,
            text=message.text,
            unsubscribe_url="https://shop.example.com/u/token",
        ),
    )
    _sender, raw, options = smtp.envelope(tracked, eight_bit=True)
    print(f"message size: {len(raw):,} bytes (text + HTML; MAIL options {options})")
    delivery = prepare_delivery(
        strategy=strategy,
        base_dir=folder,
        clients=clients,
        worker_id="bench",
        policy=DeliveryPolicy(batch_size=500),
        link_secret=LINK_SECRET,
        public_url=PUBLIC_URL,  # tracking on: links rewritten, pixel, links stored
    )
    chunk = max(500, args.emails // args.rounds // 500 * 500)
    totals = {"bare": [0.0, 0.0, 0.0, 0], "orbita": [0.0, 0.0, 0.0, 0]}
    print(f"load average before: {load_average()}")
    sent_bare = 0
    try:
        while totals["orbita"][3] < args.emails:
            size = min(chunk, args.emails - totals["orbita"][3])
            cpu, server0 = time.process_time(), server_cpu()
            seconds = await bare_loop(
                port, range(sent_bare, sent_bare + size), args.connections, raw, options
            )
            sent_bare += size
            add(totals["bare"], seconds, time.process_time() - cpu, server_cpu() - server0, size)
            cpu, server0 = time.process_time(), server_cpu()
            started = time.perf_counter()
            report = await deliver_due(
                workspace=workspace,
                delivery=delivery,
                now=datetime.now(UTC),
                max_batches=size // 500,
            )
            seconds = time.perf_counter() - started
            add(
                totals["orbita"],
                seconds,
                time.process_time() - cpu,
                server_cpu() - server0,
                report.sent,
            )
    finally:
        await close_channels(clients)
    print(f"load average after: {load_average()}")
    names = workspace.events.counts_by_name()
    print(
        f"message events stored: {names.get('Email Sent', 0):,} Email Sent, "
        f"{names.get('Email Delivered', 0):,} Email Delivered"
    )
    rates = {}
    for name, (seconds, client, served, emails) in totals.items():
        rates[name] = emails / seconds
        print(
            f"{name:<7} {emails:>8,} emails in {seconds:6.1f} s = {rates[name]:6,.0f} emails/s; "
            f"CPU per email: client {client / emails * 1000:.2f} ms, "
            f"server {served / emails * 1000:.2f} ms"
        )
    ratio = rates["orbita"] / rates["bare"]
    print(f"orbita / bare: {ratio:.2f} (goal >= 0.70: {'MET' if ratio >= 0.7 else 'MISSED'})")
    return 0


def load_average() -> list[str]:
    with open("/proc/loadavg") as file:
        return file.read().split()[:3]


def add(total: list[Any], seconds: float, client: float, served: float, emails: int) -> None:
    total[0] += seconds
    total[1] += client
    total[2] += served
    total[3] += emails


if __name__ == "__main__":
    main()
