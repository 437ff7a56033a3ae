"""Journeys on a live server: API events trigger them as they are stored, an API call starts
an `api` journey (once per messageId), and the stats read back."""

from __future__ import annotations

import time

from live_api import LiveServer
from sqlalchemy import select

from orbita.model.strategy import parse_strategy
from orbita.services.apply import apply_strategy
from orbita.store.state import outbox

STRATEGY = """workspace: api
channels:
  email: {type: smtp, host: 127.0.0.1, port: 2525, from: "Shop <shop@example.com>"}
templates:
  cart_reminder: {channel: email, subject: "Your cart", text: "Still there."}
  consultation: {channel: email, subject: "Your call", text: "See you soon.", topic: transactional}
journeys:
  cart:
    trigger: {event: "Product Added"}
    exit_on: [{event: "Order Completed"}]
    steps:
      - send: cart_reminder
  consult:
    trigger: api
    steps:
      - send: consultation
"""


def _apply(server: LiveServer) -> None:
    strategy = parse_strategy(STRATEGY, source="test")
    apply_strategy(workspace=server.workspace, strategy=strategy, content=STRATEGY, source="test")


def _sent(server: LiveServer, journey: str, *, at_least: int, seconds: float = 10) -> list[str]:
    deadline = time.monotonic() + seconds
    while True:
        with server.workspace.state.connect() as connection:
            rows = connection.execute(
                select(outbox.c.template).where(outbox.c.journey == journey)
            ).all()
        if len(rows) >= at_least or time.monotonic() > deadline:
            return [row.template for row in rows]
        time.sleep(0.05)


def test_api_events_trigger_journeys_as_they_arrive(clocked_server: LiveServer) -> None:
    server = clocked_server
    _apply(server)
    batch = {
        "batch": [
            {
                "type": "track",
                "event": "Product Added",
                "userId": user,
                "messageId": f"add-{user}",
                "timestamp": "2026-02-20T10:00:00Z",
                "properties": {"cart_id": f"c-{user}"},
            }
            for user in ("ann", "bob")
        ]
    }
    with server.writer() as client:
        assert client.post("/v1/batch", json=batch).status_code == 200
        # A retried delivery stores nothing and starts nothing.
        assert client.post("/v1/batch", json=batch).status_code == 200
    assert _sent(server, "cart", at_least=3, seconds=2) == ["cart_reminder", "cart_reminder"]
    with server.admin() as admin:
        listed = {item["name"]: item for item in admin.get("/v1/journeys").json()}
        assert listed["cart"]["arms"]["treatment"]["entered"] == 2
        stats = admin.get("/v1/journeys/cart/stats").json()
        assert stats["sent"] == 2 and stats["steps"][0]["messages"] == {"cart_reminder": 2}


def test_trigger_an_api_journey_once_per_message_id(clocked_server: LiveServer) -> None:
    server = clocked_server
    _apply(server)
    with server.writer() as client:
        identify = {"type": "identify", "userId": "ann", "traits": {"email": "ann@example.com"}}
        assert client.post("/v1/batch", json={"batch": [identify]}).status_code == 200
    body = {"userId": "ann", "messageId": "booking-1", "properties": {"slot": "10:00"}}
    with server.admin() as admin:
        first = admin.post("/v1/journeys/consult/trigger", json=body)
        assert first.status_code == 200, first.text
        assert first.json()["entered"] is True
        again = admin.post("/v1/journeys/consult/trigger", json=body).json()
        assert again["entered"] is False  # the same messageId: no second run

        unknown = admin.post("/v1/journeys/consult/trigger", json={**body, "userId": "zed"})
        assert unknown.status_code == 404 and "zed" in unknown.text
        missing = admin.post("/v1/journeys/nope/trigger", json=body)
        assert missing.status_code == 404
        not_api = admin.post("/v1/journeys/cart/trigger", json=body)
        assert not_api.status_code == 400 and "does not start on API calls" in not_api.text
        bad = admin.post("/v1/journeys/consult/trigger", json={"userId": ""})
        assert bad.status_code == 400 and "userId" in bad.text
    write_key = {"Authorization": f"Bearer {server.keys.write_key}"}
    with server.client(headers=write_key) as client:
        assert client.post("/v1/journeys/consult/trigger", json=body).status_code == 403
    assert _sent(server, "consult", at_least=1) == ["consultation"]
