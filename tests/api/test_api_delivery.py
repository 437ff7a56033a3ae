"""Delivery over HTTP against a real server: status, dead letters paged and filtered, a
retry that sends; the bounce webhook with each way of calling it."""

from __future__ import annotations

import asyncio
import json
import smtplib
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from live_api import LiveServer, running

sys.path.insert(0, str(Path(__file__).parents[1] / "services"))
sys.path.insert(0, str(Path(__file__).parents[1] / "channels"))
from delivery_setup import T0, queue_cart_emails, write_strategy
from dsn_samples import original_message, postfix_dsn
from loopback import SmtpRecorder, free_port, smtp_server
from sqlalchemy import select

from orbita.api.app import create_app
from orbita.channels import close_channels, open_channels
from orbita.core.settings import Settings
from orbita.model.strategy import Strategy
from orbita.services.apply import apply_strategy
from orbita.services.bounces import webhook_secret_for, webhook_signature
from orbita.services.delivery import DeliveryReport, deliver_due, prepare_delivery
from orbita.services.workspace import Workspace, init_workspace, open_workspace
from orbita.store.state import outbox, suppressions


def deliver(workspace: Workspace, strategy: Strategy, folder: Path, *, now: Any) -> DeliveryReport:
    async def run() -> DeliveryReport:
        clients = open_channels(strategy.channels, env={})
        try:
            delivery = prepare_delivery(strategy=strategy, base_dir=folder, clients=clients)
            return await deliver_due(workspace=workspace, delivery=delivery, now=now)
        finally:
            await close_channels(clients)

    return asyncio.run(run())


def dead_letters_made(
    server: LiveServer, tmp_path: Path, recorder: SmtpRecorder, port: int
) -> Strategy:
    """Five cart emails refused for good by the SMTP server: five dead letters."""
    strategy = write_strategy(tmp_path, port)
    text = (tmp_path / "strategy.yaml").read_text()
    apply_strategy(workspace=server.workspace, strategy=strategy, content=text, source="s.yaml")
    users = [f"d{i}" for i in range(5)]
    recorder.refuse.update({f"{u}@example.org": "550 5.1.1 no such user" for u in users})
    queue_cart_emails(server.workspace, strategy, users)
    assert deliver(server.workspace, strategy, tmp_path, now=T0).dead == 5
    return strategy


def test_dead_letters_paged_filtered_and_retried(server: LiveServer, tmp_path: Path) -> None:
    recorder = SmtpRecorder()
    with smtp_server(recorder) as (port, _), server.admin() as admin:
        strategy = dead_letters_made(server, tmp_path, recorder, port)
        status = admin.get("/v1/delivery/status").json()
        assert status["counts"] == {"dead": 5}
        assert status["dead"][0]["reason"].startswith("recipient refused: 550")

        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, "channel": "email"}
            if cursor:
                params["cursor"] = cursor
            page = admin.get("/v1/delivery/dead-letters", params=params).json()
            seen.extend(item["outbox_id"] for item in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == 5 and seen == sorted(seen, reverse=True)
        assert admin.get("/v1/delivery/dead-letters", params={"channel": "sms"}).json() == {
            "items": [],
            "next_cursor": None,
        }
        by_journey = admin.get("/v1/delivery/dead-letters", params={"journey": "receipts"})
        assert by_journey.json()["items"] == []

        recorder.refuse.clear()  # the cause is fixed: retry one
        retried = admin.post(f"/v1/delivery/dead-letters/{seen[0]}/retry")
        assert retried.json() == {"requeued": 1}
        again = admin.post(f"/v1/delivery/dead-letters/{seen[0]}/retry")
        assert again.status_code == 404 and again.json()["error"] == "not_found"
        now = datetime.now(UTC) + timedelta(minutes=1)  # the server's clock requeued it
        report = deliver(server.workspace, strategy, tmp_path, now=now)
        assert report.sent == 1
        assert len(recorder.messages) == 1
        assert admin.get("/v1/delivery/status").json()["counts"] == {"dead": 4, "sent": 1}

        bad = admin.get("/v1/delivery/dead-letters", params={"limit": 0})
        assert bad.status_code == 400 and bad.json()["problems"][0]["field"] == "limit"
        with server.writer() as writer:
            assert writer.get("/v1/delivery/status").status_code == 401


def test_bounce_webhook_callers_and_shapes(server: LiveServer, tmp_path: Path) -> None:
    secret = webhook_secret_for(settings=server.workspace.settings)
    own = {
        "events": [
            {"type": "bounce", "email": "p@example.org", "status": "5.1.1", "id": "e1"},
            {"type": "bounce", "email": "q@example.org", "bounce": "soft", "id": "e2"},
        ]
    }
    body = json.dumps(own).encode()
    url = "/v1/webhooks/bounces"
    with server.client() as anyone:
        assert anyone.post(url, content=body).status_code == 401
        forged = anyone.post(url, content=body, headers={"X-Orbita-Signature": "sha256=00"})
        assert forged.status_code == 401
        signed = anyone.post(
            url,
            content=body,
            headers={"X-Orbita-Signature": webhook_signature(secret=secret, body=body)},
        )
        assert signed.json() == {
            "received": 2,
            "suppressed": 1,
            "counted": 1,
            "duplicate": 0,
            "unmatched": 0,
        }
        ses = {
            "notificationType": "Complaint",
            "complaint": {
                "feedbackId": "f1",
                "complainedRecipients": [{"emailAddress": "r@x.org"}],
            },
            "mail": {"messageId": "m1"},
        }
        sns = {"Type": "Notification", "MessageId": "n1", "Message": json.dumps(ses)}
        by_token = anyone.post(url, params={"token": secret}, json=sns)
        assert by_token.json()["suppressed"] == 1
        assert anyone.post(url, params={"token": "nope"}, json=sns).status_code == 401
    with server.admin() as admin:
        replay = admin.post(url, content=body)
        assert replay.json()["duplicate"] == 2
        grid = admin.post(url, json=[{"event": "bounce", "email": "s@x.org", "sg_event_id": "g"}])
        assert grid.json()["suppressed"] == 1
        bad = admin.post(url, json={"events": [{"type": "bounce"}]})
        assert bad.status_code == 400
        assert bad.json()["problems"][0]["field"] == "events.0.email"
        assert admin.post(url, content=b"{").status_code == 400
    with server.workspace.state.connect() as connection:
        suppressed = sorted(row.address for row in connection.execute(select(suppressions)))
        assert connection.execute(select(outbox)).first() is None
    assert suppressed == ["p@example.org", "r@x.org", "s@x.org"]


def test_the_server_takes_bounce_reports_by_smtp_when_asked(tmp_path: Path) -> None:
    """ORBITA_BOUNCE_PORT: `orbita serve` runs the bounce mailbox itself (the embedded event
    store admits one process)."""
    mailbox_port = free_port()
    settings = Settings(
        workspace=tmp_path / "ws",
        parse_workers=0,
        bounce_port=mailbox_port,
        bounce_domains=["bounces.example.com"],
    )
    init_workspace(settings=settings)
    with (
        open_workspace(settings=settings) as workspace,
        running(create_app(settings=settings, workspace=workspace)),
    ):
        key = "0123456789abcdef0123456789abcdef"
        verp = f"bounces+{key}@bounces.example.com"
        report = postfix_dsn(
            original=original_message(to="t@example.org", key=key),
            return_path=verp,
            recipient="t@example.org",
        )
        with smtplib.SMTP("127.0.0.1", mailbox_port) as client:
            client.sendmail("", [verp], report)
        with workspace.state.connect() as connection:
            reasons = {r.address: r.reason for r in connection.execute(select(suppressions))}
    assert reasons["t@example.org"].startswith("hard bounce: 5.1.1")
