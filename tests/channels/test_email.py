"""The SMTP channel against a real aiosmtpd server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from loopback import SmtpRecorder, free_port, smtp_server

from orbita.channels import open_channel
from orbita.model.channels import SmtpChannel
from orbita.model.delivery import DeliveryResult, OutgoingMessage

AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def channel(port: int, **extra: object) -> SmtpChannel:
    return SmtpChannel.model_validate(
        {"type": "smtp", "port": port, "from": "Shop <shop@example.com>", **extra}
    )


def message(key: str, to: str = "ann@example.org", **extra: object) -> OutgoingMessage:
    return OutgoingMessage(
        key=key,
        channel="email",
        to=to,
        at=AT,
        subject="Ваш кошик чекає, Ann",
        html="<p>Hi Ann, <b>your cart</b></p>\n" + "<p>.dot line</p>\n" * 3,
        text="Hi Ann, your cart\n.dot line\n",
        **extra,  # type: ignore[arg-type]
    )


def send_all(config: SmtpChannel, messages: list[OutgoingMessage]) -> list[DeliveryResult]:
    async def run() -> list[DeliveryResult]:
        client = open_channel(config, env={})
        try:
            return list(await asyncio.gather(*(client.send(m) for m in messages)))
        finally:
            await client.close()

    return asyncio.run(run())


def test_a_message_arrives_with_its_headers_and_both_parts() -> None:
    with smtp_server() as (port, server):
        config = channel(
            port,
            return_path="bounces@mail.example.com",
            unsubscribe_url="https://shop.example.com/u/TOKEN",
            unsubscribe_mailto="unsub@example.com",
            reply_to="Help <help@example.com>",
        )
        (result,) = send_all(
            config, [message("k1", unsubscribe_url="https://shop.example.com/u/abc")]
        )
        assert result.status == "delivered", result
        (received,) = server.messages
    mail = received.message
    assert received.mail_from == "bounces+k1@mail.example.com"  # VERP names the message
    assert received.rcpt_tos == ["ann@example.org"]
    assert mail["Message-ID"] == "<k1@example.com>" == result.provider_id
    assert mail["Subject"] == "Ваш кошик чекає, Ann"
    assert (
        mail["From"] == "Shop <shop@example.com>" and mail["Reply-To"] == "Help <help@example.com>"
    )
    assert mail["List-Unsubscribe"] == (
        "<https://shop.example.com/u/abc>, <mailto:unsub@example.com?subject=unsubscribe>"
    )
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Date"].datetime == AT
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",))
    html = mail.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().splitlines() == ["Hi Ann, your cart", ".dot line"]
    assert "<p>.dot line</p>" in html.get_content()  # dot-stuffing undone by the server


def test_without_an_unsubscribe_link_there_is_no_one_click_header() -> None:
    with smtp_server() as (port, server):
        send_all(channel(port), [message("k2")])
        (received,) = server.messages
    assert received.message["List-Unsubscribe"] is None
    assert received.message["List-Unsubscribe-Post"] is None
    assert received.mail_from == "shop@example.com"


def test_connections_are_reused_across_many_messages() -> None:
    with smtp_server() as (port, server):
        sessions: list[int] = []
        original = server.handle_DATA

        async def counting(srv: object, session: object, envelope: object) -> str:
            sessions.append(id(session))
            return await original(srv, session, envelope)  # type: ignore[arg-type]

        server.handle_DATA = counting  # type: ignore[method-assign]
        results = send_all(channel(port, concurrency=3), [message(f"m{i}") for i in range(30)])
        assert all(r.status == "delivered" for r in results)
        assert sorted(server.message_ids()) == sorted(f"<m{i}@example.com>" for i in range(30))
    assert len(set(sessions)) <= 3  # 30 messages over at most 3 SMTP sessions


def test_refused_recipients_are_terminal_and_deferred_ones_transient() -> None:
    recorder = SmtpRecorder(
        refuse={
            "gone@example.org": "550 5.1.1 no such user",
            "busy@example.org": "451 4.3.0 try again later",
        }
    )
    with smtp_server(recorder) as (port, server):
        gone, busy, fine = send_all(
            channel(port, concurrency=1),
            [
                message("a", to="gone@example.org"),
                message("b", to="busy@example.org"),
                message("c"),
            ],
        )
        assert server.message_ids() == ["<c@example.com>"]  # the connection survived
    assert gone.status == "terminal" and "550" in gone.detail
    assert busy.status == "transient" and "451" in busy.detail
    assert fine.status == "delivered"


def test_a_server_that_is_not_there_is_transient_and_a_bad_address_terminal() -> None:
    down, bad = send_all(
        channel(free_port(), timeout=2), [message("x"), message("y", to="not an address")]
    )
    assert down.status == "transient"
    assert bad.status == "terminal" and "not an email address" in bad.detail
