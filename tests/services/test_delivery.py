"""The sender on both backends: outbox rows queued by a real journey, rendered, checked and
sent to a real aiosmtpd server; retries, dead letters, skips and their reasons."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from delivery_setup import T0, queue_cart_emails, write_strategy
from sqlalchemy import insert, select

sys.path.insert(0, str(Path(__file__).parents[1] / "channels"))
from loopback import SmtpRecorder, free_port, smtp_server

from orbita.channels import close_channels, open_channels
from orbita.model.strategy import Strategy
from orbita.services.delivery import (
    DeliveryPolicy,
    DeliveryReport,
    check_link_token,
    deliver_due,
    outbox_status,
    prepare_delivery,
)
from orbita.services.send_journal import journals
from orbita.services.workspace import Workspace
from orbita.store.state import consents, delivery_attempts, outbox, suppressions

SECRET = b"link-secret"


def deliver(
    workspace: Workspace,
    strategy: Strategy,
    folder: Path,
    *,
    now: Any = T0,
    policy: DeliveryPolicy | None = None,
    worker_id: str = "sender-1",
) -> DeliveryReport:
    async def run() -> DeliveryReport:
        clients = open_channels(strategy.channels, env={})
        delivery = prepare_delivery(
            strategy=strategy,
            base_dir=folder,
            clients=clients,
            worker_id=worker_id,
            policy=policy,
            link_secret=SECRET,
            seed=1,
        )
        try:
            return await deliver_due(workspace=workspace, delivery=delivery, now=now)
        finally:
            await close_channels(clients)
            delivery.close_journal()

    return asyncio.run(run())


@contextlib.contextmanager
def journal_holder(
    workspace: Workspace, claim: str, lines: list[str]
) -> Iterator[subprocess.Popen[str]]:
    """A process standing for a sender: it opens the claim's journal, writes `lines`
    (`123`: about to finish outbox row 123, `+123`: the server took it) and waits until it
    is killed (SIGKILL, at the latest when the block ends)."""
    script = (
        "import sys; from pathlib import Path\n"
        "from orbita.services.send_journal import SendJournal\n"
        "journal = SendJournal(workspace_dir=Path(sys.argv[1]), claim=sys.argv[2])\n"
        "for line in sys.argv[3:]:\n"
        "    if line[0] == '+': journal.taken(int(line[1:]))\n"
        "    else: journal.about_to_finish(int(line))\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(workspace.settings.workspace), claim, *lines],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def outbox_rows(workspace: Workspace) -> list[dict[str, Any]]:
    with workspace.state.connect() as connection:
        return [
            dict(row._mapping)
            for row in connection.execute(select(outbox).order_by(outbox.c.outbox_id))
        ]


def attempts(workspace: Workspace) -> list[tuple[int, str, str]]:
    with workspace.state.connect() as connection:
        return [
            (row.attempt, row.outcome, row.reason)
            for row in connection.execute(
                select(delivery_attempts).order_by(delivery_attempts.c.attempt_id)
            )
        ]


def test_queued_cart_emails_are_rendered_and_sent_once(
    workspace: Workspace, tmp_path: Path
) -> None:
    users = [f"u{i}" for i in range(12)]
    with smtp_server() as (port, server):
        strategy = write_strategy(
            tmp_path, port, unsubscribe_url='"https://shop.example.com/u/{token}"', concurrency=3
        )
        queue_cart_emails(workspace, strategy, users, traits={"u1": {"locale": "de-DE"}})
        report = deliver(workspace, strategy, tmp_path)
        again = deliver(workspace, strategy, tmp_path, now=T0 + timedelta(hours=1))
        received = list(server.messages)
    assert (report.claimed, report.sent, report.batches) == (12, 12, 1)
    assert again.claimed == 0  # nothing is sent twice
    rows = outbox_rows(workspace)
    assert {row["status"] for row in rows} == {"sent"}
    assert sorted(r.message_id for r in received) == sorted(
        f"<{row['idempotency_key']}@example.com>" for row in rows
    )
    by_to = {r.rcpt_tos[0]: r.message for r in received}
    mail = by_to["u3@example.org"]
    assert mail["Subject"] == "U3, your cart is waiting"
    html = mail.get_body(("html",))
    text = mail.get_body(("plain",))
    assert html is not None and text is not None
    assert "Linen shirt, size M: $49.90" in html.get_content()
    assert "See it again (https://shop.example.com/p/CS-3)" in text.get_content()
    german = by_to["u1@example.org"].get_body(("html",))
    assert german is not None and "49,90\xa0$" in german.get_content()  # the customer's locale
    # One-click unsubscribe with a token that names this message and no other.
    link = mail["List-Unsubscribe"].strip("<>")
    assert link.startswith("https://shop.example.com/u/")
    key = check_link_token(SECRET, link.rsplit("/", 1)[1])
    assert key is not None and f"<{key}@example.com>" == mail["Message-ID"]
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert {outcome for _, outcome, _ in attempts(workspace)} == {"sent"}


def test_transient_failures_back_off_then_dead_letter(workspace: Workspace, tmp_path: Path) -> None:
    recorder = SmtpRecorder(
        refuse={
            "u0@example.org": "451 4.7.1 greylisted, try later",
            "u1@example.org": "550 5.1.1 mailbox unknown",
        }
    )
    policy = DeliveryPolicy(max_attempts=3, backoff_base=timedelta(minutes=1))
    with smtp_server(recorder) as (port, server):
        strategy = write_strategy(tmp_path, port)
        queue_cart_emails(workspace, strategy, ["u0", "u1", "u2"])
        first = deliver(workspace, strategy, tmp_path, policy=policy)
        rows = {row["customer_id"]: row for row in outbox_rows(workspace)}
        retry_at = [r["next_attempt_at"] for r in rows.values() if r["status"] == "queued"]
        # Not due yet: nothing happens before the backoff has passed.
        early = deliver(
            workspace, strategy, tmp_path, now=T0 + timedelta(seconds=20), policy=policy
        )
        second = deliver(workspace, strategy, tmp_path, now=T0 + timedelta(hours=1), policy=policy)
        third = deliver(workspace, strategy, tmp_path, now=T0 + timedelta(hours=2), policy=policy)
        assert len(server.messages) == 1
    assert (first.sent, first.retried, first.dead) == (1, 1, 1)
    ((at,),) = [retry_at]
    assert T0 + timedelta(seconds=30) <= at <= T0 + timedelta(minutes=1)  # 50-100 % of 1 min
    assert early.claimed == 0
    assert (second.retried, third.dead) == (1, 1)
    statuses = sorted(row["status"] for row in outbox_rows(workspace))
    assert statuses == ["dead", "dead", "sent"]
    reasons = [(n, outcome, reason) for n, outcome, reason in attempts(workspace)]
    assert (1, "dead", "recipient refused: 550 5.1.1 mailbox unknown") in reasons
    assert (1, "retry", "recipient deferred: 451 4.7.1 greylisted, try later") in reasons
    assert any(
        n == 3 and outcome == "dead" and reason.startswith("gave up after 3 attempts: ")
        for n, outcome, reason in reasons
    )


def test_a_server_that_is_down_is_retried_later(workspace: Workspace, tmp_path: Path) -> None:
    port = free_port()
    strategy = write_strategy(tmp_path, port, timeout=2)
    queue_cart_emails(workspace, strategy, ["u0", "u1"])
    down = deliver(workspace, strategy, tmp_path)
    assert (down.claimed, down.retried) == (2, 2)
    # The server comes up on the same port: the retry delivers.
    from aiosmtpd.controller import Controller

    recorder = SmtpRecorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        up = deliver(workspace, strategy, tmp_path, now=T0 + timedelta(hours=1))
    finally:
        controller.stop()
    assert up.sent == 2 and len(recorder.messages) == 2


def test_suppression_consent_and_missing_addresses_skip_with_reasons(
    workspace: Workspace, tmp_path: Path
) -> None:
    with smtp_server() as (port, server):
        strategy = write_strategy(tmp_path, port)
        queue_cart_emails(workspace, strategy, ["u0", "u1", "u2", "u3"])
        ids = {row["customer_id"] for row in outbox_rows(workspace)}
        with workspace.state.begin() as connection:
            connection.execute(
                insert(suppressions),
                [{"kind": "email", "address": "u0@example.org", "reason": "hard bounce",
                  "created_at": T0}],
            )  # fmt: skip
            first_id = min(ids)
            connection.execute(
                insert(consents),
                [{"customer_id": first_id + 1, "channel": "email", "topic": "marketing",
                  "granted": False, "source": "preference centre", "at": T0}],
            )  # fmt: skip
        report = deliver(workspace, strategy, tmp_path)
        assert sorted(r.rcpt_tos[0] for r in server.messages) == [
            "u2@example.org",
            "u3@example.org",
        ]
    assert (report.sent, report.skipped) == (2, 2)
    reasons = sorted(reason for _, outcome, reason in attempts(workspace) if outcome == "skipped")
    assert reasons == [
        "no consent: marketing on email was withdrawn",
        "suppressed: hard bounce",
    ]


def test_a_template_error_is_a_dead_letter_naming_the_variable(
    workspace: Workspace, tmp_path: Path
) -> None:
    with smtp_server() as (port, _server):
        strategy = write_strategy(tmp_path, port)
        (tmp_path / "cart.mjml").write_text(
            "<mjml><mj-body><mj-section><mj-column><mj-text>{{ customer.vip_level }}"
            "</mj-text></mj-column></mj-section></mj-body></mjml>"
        )
        queue_cart_emails(workspace, strategy, ["u0"])
        report = deliver(workspace, strategy, tmp_path)
    assert report.dead == 1
    ((_, outcome, reason),) = attempts(workspace)
    assert outcome == "dead"
    assert reason == ("template 'cart_reminder', mjml, line 1: customer.vip_level is undefined")


def test_a_dead_senders_claims_are_recovered(workspace: Workspace, tmp_path: Path) -> None:
    """Rows a sender claimed and never finished: `sending` ones are sent again, by the same
    worker id when it restarts or by another once the lease has run out; `committing` ones
    (past the point of no return) are taken as sent, unconfirmed, and never sent again."""
    lease = T0 + timedelta(minutes=5)
    with smtp_server() as (port, server):
        strategy = write_strategy(tmp_path, port)
        queue_cart_emails(workspace, strategy, ["u0", "u1", "u2", "u3"])
        ids = [row["outbox_id"] for row in outbox_rows(workspace)]
        with workspace.state.begin() as connection:
            claims = [
                ("sending", "sender-9/a"),
                ("sending", "sender-9/a"),
                ("sending", "sender-2/before-restart"),
                ("committing", "sender-2/before-restart"),
            ]
            for outbox_id, (status, claim) in zip(ids, claims, strict=True):
                connection.execute(
                    outbox.update()
                    .where(outbox.c.outbox_id == outbox_id)
                    .values(status=status, claimed_by=claim, claimed_until=lease)
                )
        # sender-2 restarts: its own claims at once; sender-9's lease still holds.
        restart = deliver(workspace, strategy, tmp_path, worker_id="sender-2")
        assert len(server.messages) == 1
        late = deliver(
            workspace, strategy, tmp_path, now=T0 + timedelta(minutes=6), worker_id="sender-2"
        )
        assert len(server.messages) == 3
    assert (restart.recovered, restart.sent) == (2, 1)
    assert (late.recovered, late.sent) == (2, 2)
    assert [row["status"] for row in outbox_rows(workspace)] == ["sent"] * 4
    outcomes = sorted(outcome for _, outcome, _ in attempts(workspace))
    assert outcomes == ["requeued", "requeued", "requeued", "sent", "sent", "sent", "unconfirmed"]


def test_a_dead_senders_journal_tells_which_committing_rows_never_got_their_dot(
    workspace: Workspace, tmp_path: Path
) -> None:
    """`committing` rows a dead sender left: one its journal does not name died waiting for
    the commit's answer, before the dot, and is sent again; one it names had its dot
    written (unconfirmed), one the server answered was taken (sent). Without a journal
    (another host's sender) nothing tells: unconfirmed. A run still alive (its journal
    locked) keeps its claims. The dead run's journal goes once it is recovered, and what
    went out has its message events."""
    lease = T0 + timedelta(minutes=5)
    with smtp_server() as (port, server):
        strategy = write_strategy(tmp_path, port)
        queue_cart_emails(workspace, strategy, ["u0", "u1", "u2", "u3", "u4"])
        ids = [row["outbox_id"] for row in outbox_rows(workspace)]
        dotted, taken, unfinished, elsewhere, running = ids
        with workspace.state.begin() as connection:
            for outbox_id, status, claim in [
                (dotted, "committing", "sender-2/killed"),
                (taken, "committing", "sender-2/killed"),
                (unfinished, "committing", "sender-2/killed"),
                (elsewhere, "committing", "sender-7/other-host"),
                (running, "sending", "sender-2/still-running"),
            ]:
                connection.execute(
                    outbox.update()
                    .where(outbox.c.outbox_id == outbox_id)
                    .values(status=status, claimed_by=claim, claimed_until=lease)
                )
        # The runs that claimed them: the journal says what each did before it was killed.
        killed_run = journal_holder(
            workspace, "sender-2/killed", [str(taken), f"+{taken}", str(dotted)]
        )
        with journal_holder(workspace, "sender-2/still-running", []), killed_run as killed:
            alive = {c: j.alive for c, j in journals(workspace.settings.workspace).items()}
            assert alive == {"sender-2/killed": True, "sender-2/still-running": True}
            killed.kill()  # SIGKILL: the kernel drops its lock, its journal stays
            killed.wait()
            report = deliver(
                workspace,
                strategy,
                tmp_path,
                now=lease + timedelta(minutes=1),
                worker_id="sender-2",
            )
            # The live run's journal is left alone, as are its claims; the dead one's goes.
            left = set(journals(workspace.settings.workspace))
        resent = [m.message["X-Orbita-Key"] for m in server.messages]
    rows = {row["outbox_id"]: row for row in outbox_rows(workspace)}
    assert (report.recovered, report.sent) == (4, 1)
    assert resent == [rows[unfinished]["idempotency_key"]]
    assert rows[running]["status"] == "sending"  # its sender lives: not ours to take
    assert {i: (rows[i]["status"], rows[i]["result"]["outcome"]) for i in ids[:4]} == {
        dotted: ("sent", "unconfirmed"),
        taken: ("sent", "sent"),
        unfinished: ("sent", "sent"),
        elsewhere: ("sent", "unconfirmed"),
    }
    recovered = sorted((outcome, reason) for _, outcome, reason in attempts(workspace))
    assert recovered == [
        ("requeued", "sender-2/killed stopped before the final dot (its journal): sent again"),
        ("sent", "Message accepted"),  # aiosmtpd's answer to the message sent again
        ("sent", "sender-2/killed stopped after the server took it (its journal)"),
        ("unconfirmed", "sender-2/killed stopped after the point of no return"),
        ("unconfirmed", "sender-7/other-host stopped after the point of no return"),
    ]
    assert left == {"sender-2/still-running"}
    assert outbox_status(workspace=workspace)["unconfirmed"] == 2
    names = workspace.events.counts_by_name()
    assert (names.get("Email Sent"), names.get("Email Delivered")) == (4, 2)


def test_quiet_hours_defer_marketing_to_the_morning_in_the_customers_zone(
    workspace: Workspace, tmp_path: Path
) -> None:
    evening = datetime(2026, 3, 2, 20, 30, tzinfo=UTC)  # 22:30 in Kyiv (UTC+2)
    with smtp_server() as (port, server):
        strategy = write_strategy(tmp_path, port, quiet_hours='{from: "21:00", to: "08:00"}')
        queue_cart_emails(workspace, strategy, ["u0"], at=evening)
        queue_cart_emails(
            workspace, strategy, ["u0"], at=evening, event="Order Completed", tag="-order"
        )
        night = deliver(workspace, strategy, tmp_path, now=evening)
        # The receipt is transactional: it goes at once; the cart email waits.
        assert [m.message["Subject"] for m in server.messages] == ["Your receipt"]
        before = deliver(workspace, strategy, tmp_path, now=evening + timedelta(hours=9))
        morning = deliver(
            workspace, strategy, tmp_path, now=evening + timedelta(hours=9, minutes=30)
        )
        assert len(server.messages) == 2
    assert (night.sent, night.deferred) == (1, 1)
    assert before.claimed == 0
    assert morning.sent == 1
    cart = next(row for row in outbox_rows(workspace) if row["template"] == "cart_reminder")
    assert cart["attempts"] == 1  # the deferral used none of its attempts
    reasons = [reason for _, outcome, reason in attempts(workspace) if outcome == "deferred"]
    assert reasons == [
        "quiet hours 21:00-08:00 in Europe/Kyiv: deferred to 2026-03-03T06:00:00+00:00"
    ]


def test_a_frequency_cap_skips_the_third_marketing_email_not_the_receipt(
    workspace: Workspace, tmp_path: Path
) -> None:
    with smtp_server() as (port, server):
        strategy = write_strategy(tmp_path, port, frequency_cap="{messages: 2, per: 7d}")
        for day in range(3):
            at = T0 + timedelta(days=day)
            queue_cart_emails(workspace, strategy, ["u0"], at=at, tag=f"-{day}")
            deliver(workspace, strategy, tmp_path, now=at)
        queue_cart_emails(
            workspace, strategy, ["u0"], at=T0 + timedelta(days=3), event="Order Completed"
        )
        deliver(workspace, strategy, tmp_path, now=T0 + timedelta(days=3))
        # A week after the first, the cap has room again.
        queue_cart_emails(workspace, strategy, ["u0"], at=T0 + timedelta(days=8), tag="-8")
        deliver(workspace, strategy, tmp_path, now=T0 + timedelta(days=8))
        subjects = [m.message["Subject"] for m in server.messages]
    assert subjects == [
        "U0, your cart is waiting",
        "U0, your cart is waiting",
        "Your receipt",
        "U0, your cart is waiting",
    ]
    skipped = [reason for _, outcome, reason in attempts(workspace) if outcome == "skipped"]
    assert skipped == ["frequency cap: 2 marketing messages per 1w on email reached"]
