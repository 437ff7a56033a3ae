"""Kill the sender (SIGKILL) twice while it works through a few thousand queued emails,
start it again each time: every email arrives at the SMTP server exactly once, by
Message-ID, and the outbox says every one was sent."""

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

EMAILS = 3000
SENDER = Path(__file__).parent / "delivery_sender_process.py"


def start_sender(workspace: Path, strategy: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SENDER), str(workspace), str(strategy), "sender-1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_a_killed_sender_delivers_every_email_exactly_once(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path / "workspace")
    init_workspace(settings=settings)
    users = [f"c{i:05d}" for i in range(EMAILS)]
    with smtp_server() as (port, server):
        strategy = write_strategy(tmp_path / "strategy", port, concurrency=8)
        with open_workspace(settings=settings) as workspace:
            queue_cart_emails(workspace, strategy, users)
        strategy_file = tmp_path / "strategy" / "strategy.yaml"
        kills = 0
        for kill_at in (EMAILS // 4, EMAILS // 2):
            sender = start_sender(settings.workspace, strategy_file)
            deadline = time.monotonic() + 120
            while len(server.messages) < kill_at and sender.poll() is None:
                assert time.monotonic() < deadline, "the sender made no progress"
                time.sleep(0.002)
            assert sender.poll() is None, sender.stderr.read() if sender.stderr else ""
            os.kill(sender.pid, signal.SIGKILL)
            sender.wait()
            kills += 1
        assert kills == 2 and len(server.messages) < EMAILS
        last = start_sender(settings.workspace, strategy_file)
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
    print(f"attempt outcomes: {dict(outcomes)}; unconfirmed rows: {len(unconfirmed)}")
    assert len(rows) == EMAILS
    assert duplicates == {}
    assert missing == set(), (
        f"{len(missing)} lost; of them {len(missing & unconfirmed)} were recorded unconfirmed"
    )
    assert set(received) == expected
    assert {row.status for row in rows} == {"sent"}
    # The kills left work behind that the restarts took up (and said so).
    assert outcomes["requeued"] + outcomes["unconfirmed"] >= 1
