"""`orbita worker` killed with SIGKILL in the middle of its work, then two workers started
at once to finish it: every customer ends where an uninterrupted run ends, no step is lost,
no outbox row or step is written twice (PostgreSQL, as in production)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from orbita.model.events import EventRecord
from orbita.model.strategy import parse_strategy
from orbita.services.apply import apply_strategy
from orbita.services.ingest import store_records
from orbita.services.journeys import handle_events, resolve_customers
from orbita.services.workspace import Workspace
from orbita.store.state import customers, journey_runs, journey_steps, outbox

CUSTOMERS = 3_000
STRATEGY = """workspace: crash
channels:
  email: {type: smtp, host: 127.0.0.1, port: 2525, from: "Shop <shop@example.com>"}
templates:
  gold_offer: {channel: email, subject: "Gold", text: "For our gold customers."}
  standard_offer: {channel: email, subject: "Hello", text: "For you."}
  follow_up: {channel: email, subject: "Again", text: "Still interested?"}
journeys:
  offer:
    trigger: {event: "Signed Up"}
    entry: once
    steps:
      - wait: 1h
      - branch:
          - when: {trait: tier, eq: gold}
            then: [{send: gold_offer}]
        else: [{send: standard_offer}]
      - wait: 1d
      - send: follow_up
"""


def _tier(n: int) -> str:
    return "gold" if n % 3 == 0 else "standard"


def _enter_everyone(workspace: Workspace) -> None:
    """3,000 customers entered two days ago: every step of theirs is due now."""
    at = datetime.now(UTC) - timedelta(days=2)
    records = []
    for n in range(CUSTOMERS):
        common = {
            "user_id": f"u{n}",
            "anonymous_id": None,
            "context": {},
            "timestamp": at,
            "received_at": at,
        }
        records.append(
            EventRecord(
                message_id=f"id{n}", type="identify", name=None, properties={"tier": _tier(n)},
                **common,
            )
        )  # fmt: skip
        records.append(
            EventRecord(
                message_id=f"su{n}", type="track", name="Signed Up", properties={}, **common
            )
        )
    store_records(workspace=workspace, records=records)
    strategy = parse_strategy(STRATEGY, source="test")
    applied = apply_strategy(workspace=workspace, strategy=strategy, content=STRATEGY, source="t")
    assert applied.journeys is not None
    signups = [r for r in records if r.type == "track"]
    events = resolve_customers(workspace=workspace, records=signups)
    assert handle_events(workspace=workspace, journeys=applied.journeys, events=events).entered == (
        CUSTOMERS
    )


def _worker(workspace: Workspace, name: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ORBITA_DATABASE_URL": workspace.settings.database_url or "",
        "ORBITA_EVENTS_URL": workspace.settings.events_url or "",
    }
    command = [sys.executable, "-m", "orbita.cli.main", "worker", "--until-idle"]
    command += ["--batch", "250", "--id", name, "--workspace", str(workspace.settings.workspace)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _count(workspace: Workspace, query: object) -> int:
    with workspace.state.connect() as connection:
        return int(connection.execute(query).scalar_one())  # type: ignore[call-overload]


def test_a_killed_worker_loses_nothing_and_repeats_nothing(postgres_workspace: Workspace) -> None:
    workspace = postgres_workspace
    _enter_everyone(workspace)
    total = 2 * CUSTOMERS

    first = _worker(workspace, "first")
    deadline = time.monotonic() + 120
    while _count(workspace, select(func.count()).select_from(outbox)) < total // 5:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    interrupted = _count(workspace, select(func.count()).select_from(outbox))
    assert interrupted < total, "the worker finished before it was killed: nothing was tested"

    # Two workers at once finish the work: SKIP LOCKED shares it, nothing is run twice.
    pair = [_worker(workspace, "second"), _worker(workspace, "third")]
    for process in pair:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()

    with workspace.state.connect() as connection:
        rows = connection.execute(
            select(outbox.c.customer_id, outbox.c.template, outbox.c.idempotency_key)
        ).all()
        statuses = dict(
            connection.execute(
                select(journey_runs.c.status, func.count()).group_by(journey_runs.c.status)
            ).all()
        )
        repeated_steps = connection.execute(
            select(func.count()).select_from(
                select(journey_steps.c.run_id, journey_steps.c.node, journey_steps.c.edge)
                .group_by(journey_steps.c.run_id, journey_steps.c.node, journey_steps.c.edge)
                .having(func.count() > 1)
                .subquery()
            )
        ).scalar_one()
        user_of = dict(
            connection.execute(select(customers.c.customer_id, customers.c.user_id)).all()
        )
    assert statuses == {"completed": CUSTOMERS}
    assert repeated_steps == 0
    assert len(rows) == total and len({row.idempotency_key for row in rows}) == total
    # What an uninterrupted run sends: the offer the customer's tier gets, then the follow-up.
    sent: dict[int, list[str]] = {}
    for row in rows:
        sent.setdefault(row.customer_id, []).append(row.template)
    assert len(sent) == CUSTOMERS and len(user_of) == CUSTOMERS
    for customer_id, templates in sent.items():
        offer = f"{_tier(int(user_of[customer_id][1:]))}_offer"
        assert sorted(templates) == sorted([offer, "follow_up"]), customer_id


def test_worker_without_an_applied_strategy_says_so(tmp_path: Path) -> None:
    from test_cli import orbita

    path = str(tmp_path / "ws")
    assert orbita("init", "--workspace", path)[0] == 0
    code, _, err = orbita("worker", "--until-idle", "--workspace", path)
    assert code == 2 and "orbita apply" in err
