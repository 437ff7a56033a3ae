"""Kill the sender (SIGKILL) twice while it works through a few thousand queued emails,
start it again each time: every email arrives at the SMTP server exactly once, by
Message-ID, and the outbox says every one was sent. On the embedded default (SQLite state,
DuckDB events) and on PostgreSQL (both), there with fewer emails to keep the run short;
bench/delivery_crash.py does it at full size."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from delivery_setup import queue_cart_emails, write_strategy
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parents[1] / "channels"))
from loopback import smtp_server

from orbita.core.settings import Settings
from orbita.services.workspace import init_workspace, open_workspace
from orbita.store.state import delivery_attempts, outbox

SENDER = Path(__file__).parent / "delivery_sender_process.py"
CONNECTIONS = 8


def start_sender(settings: Settings, strategy: Path) -> subprocess.Popen[bytes]:
    # The sender process reads its stores from ORBITA_* like any other Orbita process.
    env = dict(os.environ)
    for name, url in (("DATABASE", settings.database_url), ("EVENTS", settings.events_url)):
        env.pop(f"ORBITA_{name}_URL", None)
        if url:
            env[f"ORBITA_{name}_URL"] = url
    return subprocess.Popen(
        [sys.executable, str(SENDER), str(settings.workspace), str(strategy), "sender-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backend", "emails"),
    [("embedded", 3000), pytest.param("postgres", 600, marks=pytest.mark.postgres)],
)
def test_a_killed_sender_delivers_every_email_exactly_once(
    tmp_path: Path, request: pytest.FixtureRequest, backend: str, emails: int
) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    settings = Settings(workspace=tmp_path / "workspace", database_url=url, events_url=url)
    init_workspace(settings=settings)
    users = [f"c{i:05d}" for i in range(emails)]
    with smtp_server() as (port, server):
        strategy = write_strategy(tmp_path / "strategy", port, concurrency=CONNECTIONS)
        with open_workspace(settings=settings) as workspace:
            queue_cart_emails(workspace, strategy, users)
        strategy_file = tmp_path / "strategy" / "strategy.yaml"
        kills = 0
        for kill_at in (emails // 4, emails // 2):
            sender = start_sender(settings, strategy_file)
            deadline = time.monotonic() + 120
            while len(server.messages) < kill_at and sender.poll() is None:
                assert time.monotonic() < deadline, "the sender made no progress"
                time.sleep(0.002)
            assert sender.poll() is None, sender.stderr.read() if sender.stderr else ""
            os.kill(sender.pid, signal.SIGKILL)
            sender.wait()
            kills += 1
        assert kills == 2 and len(server.messages) < emails
        last = start_sender(settings, strategy_file)
        _out, err = last.communicate(timeout=300)
        assert last.returncode == 0, err.decode()
        time.sleep(0.2)  # the server's last DATA handlers finish
        received = Counter(server.message_ids())

    with open_workspace(settings=settings) as workspace, workspace.state.connect() as db:
        rows = db.execute(select(outbox.c.idempotency_key, outbox.c.status, outbox.c.result)).all()
        outcomes = Counter(row.outcome for row in db.execute(select(delivery_attempts.c.outcome)))
    expected = {f"<{row.idempotency_key}@example.com>" for row in rows}
    duplicates = {mid: n for mid, n in received.items() if n > 1}
    missing = expected - set(received)
    unconfirmed = {
        f"<{row.idempotency_key}@example.com>"
        for row in rows
        if (row.result or {}).get("outcome") == "unconfirmed"
    }
    print(
        f"attempt outcomes: {dict(outcomes)}; unconfirmed rows: {len(unconfirmed)}; "
        f"lost in the gap: {len(missing)}"
    )
    assert len(rows) == emails
    assert duplicates == {}
    assert set(received) <= expected
    # The one known gap (services/delivery.py): a kill between the journal's write and the
    # final dot's loses that message, at most one per connection per kill, and its row says
    # unconfirmed. (Before the journal, the gap on PostgreSQL was the commit's answer on its
    # way back, and a kill landed in it now and then: 1 lost of 600 here.)
    assert missing <= unconfirmed, (
        f"{len(missing)} lost; only {len(missing & unconfirmed)} were recorded unconfirmed"
    )
    assert len(missing) <= kills * CONNECTIONS
    assert {row.status for row in rows} == {"sent"}
    # The kills left work behind that the restarts took up (and said so).
    assert outcomes["requeued"] + outcomes["unconfirmed"] >= 1
