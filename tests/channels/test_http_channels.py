"""SMS, push, Telegram and webhooks against a real HTTP server on 127.0.0.1 that records
each request and answers 200, 429, 500, 4xx or too late."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from loopback import Answer, http_server

from orbita.channels import open_channel
from orbita.channels.webhook.config import verify
from orbita.core.errors import UserError
from orbita.model.channels import Channel, SmsChannel
from orbita.model.delivery import DeliveryResult, OutgoingMessage
from orbita.model.strategy import Strategy

AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
ENV = {"SMS_TOKEN": "sms-secret", "PUSH_TOKEN": "push-secret", "TG_TOKEN": "123:tg-secret"}
ENV |= {"HOOK_SECRET": "hook-secret"}


def config(data: dict[str, Any]) -> Channel:
    strategy = Strategy.model_validate({"workspace": "w", "channels": {"c": data}})
    return strategy.channels["c"]


def send(channel: Channel, message: OutgoingMessage) -> DeliveryResult:
    async def run() -> DeliveryResult:
        client = open_channel(channel, env=ENV)
        try:
            return await client.send(message)
        finally:
            await client.close()

    return asyncio.run(run())


def outgoing(to: str, **extra: Any) -> OutgoingMessage:
    return OutgoingMessage(key="key-1", channel="c", to=to, at=AT, **extra)


def sms(base: str, **extra: Any) -> Channel:
    return config(
        {"type": "sms", "base_url": base, "account_sid": "AC1", "token_env": "SMS_TOKEN",
         "from": "+15550001111", **extra}
    )  # fmt: skip


def test_sms_is_a_twilio_shaped_form_post_with_basic_auth() -> None:
    with http_server() as (base, server):
        server.default = Answer(201, {"sid": "SM123", "status": "queued"})
        result = send(sms(base), outgoing("+380501234567", text="Your code: 1234"))
        (request,) = server.requests
    assert result.status == "delivered" and result.provider_id == "SM123"
    assert request.method == "POST"
    assert request.path == "/2010-04-01/Accounts/AC1/Messages.json"
    assert request.body == b"To=%2B380501234567&From=%2B15550001111&Body=Your+code%3A+1234"
    assert (
        request.headers["Authorization"] == "Basic " + base64.b64encode(b"AC1:sms-secret").decode()
    )
    assert request.headers["Idempotency-Key"] == "key-1"


@pytest.mark.parametrize(
    ("answer", "status", "retry_after"),
    [
        (Answer(429, {"message": "Too Many Requests"}, {"Retry-After": "7"}), "transient", 7.0),
        (Answer(500, {"message": "oops"}), "transient", None),
        (Answer(503, {}), "transient", None),
        (Answer(400, {"code": 21211, "message": "invalid To"}), "terminal", None),
        (Answer(401, {"message": "bad credentials"}), "terminal", None),
    ],
)
def test_http_answers_are_classified(answer: Answer, status: str, retry_after: float) -> None:
    with http_server() as (base, server):
        server.default = answer
        result = send(sms(base), outgoing("+380501234567", text="hi"))
    assert result.status == status and result.retry_after == retry_after
    assert f"HTTP {answer.status}" in result.detail


def test_a_provider_too_slow_to_answer_is_transient() -> None:
    with http_server() as (base, server):
        server.default = Answer(200, {}, delay=1.5)
        result = send(sms(base, timeout=0.3), outgoing("+380501234567", text="hi"))
    assert result.status == "transient" and "timed out" in result.detail


def test_push_is_an_fcm_v1_shaped_message_with_a_bearer_token() -> None:
    channel = config({"type": "push", "project_id": "shop-app", "token_env": "PUSH_TOKEN"})
    with http_server() as (base, server):
        channel = channel.model_copy(update={"base_url": base})
        server.script = [
            Answer(200, {"name": "projects/shop-app/messages/42"}),
            Answer(404, {"error": {"status": "NOT_FOUND", "details": ["UNREGISTERED"]}}),
        ]
        message = outgoing("device-1", subject="Sale", text="50% off", url="https://x.example/s")
        ok = send(channel, message)
        gone = send(channel, message)
        first = server.requests[0]
    assert ok.status == "delivered" and ok.provider_id == "projects/shop-app/messages/42"
    assert gone.status == "terminal"
    assert first.path == "/v1/projects/shop-app/messages:send"
    assert first.headers["Authorization"] == "Bearer push-secret"
    assert first.json() == {
        "message": {
            "token": "device-1",
            "notification": {"title": "Sale", "body": "50% off"},
            "data": {"orbita_key": "key-1", "url": "https://x.example/s"},
        }
    }


def test_telegram_send_message_and_its_flood_and_blocked_answers() -> None:
    with http_server() as (base, server):
        channel = config({"type": "telegram", "token_env": "TG_TOKEN", "base_url": base})
        server.script = [
            Answer(200, {"ok": True, "result": {"message_id": 77}}),
            Answer(429, {"ok": False, "error_code": 429, "parameters": {"retry_after": 3}}),
            Answer(403, {"ok": False, "description": "Forbidden: bot was blocked by the user"}),
        ]
        results = [send(channel, outgoing("555", text="<b>Hi</b>")) for _ in range(3)]
        first = server.requests[0]
    ok, flood, blocked = results
    assert ok.status == "delivered" and ok.provider_id == "77"
    assert flood.status == "transient" and flood.retry_after == 3.0
    assert blocked.status == "terminal" and "blocked" in blocked.detail
    assert first.path == "/bot123:tg-secret/sendMessage"
    assert first.json() == {"chat_id": "555", "text": "<b>Hi</b>", "parse_mode": "HTML"}
    # The bot token is part of the URL: results never show it.
    assert all("tg-secret" not in r.detail for r in results)


def test_webhooks_are_signed_with_hmac_sha256() -> None:
    channel = config({"type": "webhook", "secret_env": "HOOK_SECRET"})
    with http_server() as (base, server):
        result = send(
            channel, outgoing(f"{base}/hook", body={"customer": 7, "event": "VIP"}, method="PUT")
        )
        (request,) = server.requests
    assert result.status == "delivered"
    assert request.method == "PUT" and request.path == "/hook"
    assert request.json() == {"customer": 7, "event": "VIP"}
    header = request.headers["X-Orbita-Signature"]
    assert header.startswith(f"t={int(AT.timestamp())},v1=")
    assert verify("hook-secret", header, body=request.body)
    assert not verify("other-secret", header, body=request.body)
    assert not verify("hook-secret", header, body=request.body + b" ")


def test_a_missing_secret_is_named_without_a_value() -> None:
    channel = SmsChannel.model_validate(
        {"account_sid": "AC1", "token_env": "NOT_SET_ANYWHERE", "from": "+1"}
    )
    with pytest.raises(UserError, match="NOT_SET_ANYWHERE is not set"):
        open_channel(channel, env={})
