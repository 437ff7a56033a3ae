"""Broadcasts over HTTP on a live server: 409 before a strategy is applied, then plan, send
(twice: nobody twice), pause, resume, cancel, report; admin key only; unknown names 404."""

from __future__ import annotations

from live_api import LiveServer

from orbita.model.strategy import parse_strategy
from orbita.services.apply import apply_strategy

STRATEGY = """workspace: api
segments:
  subscribers: {trait: subscribed, eq: true}
channels:
  email: {type: smtp, host: 127.0.0.1, port: 2525, from: "Shop <shop@example.com>"}
templates:
  letter: {channel: email, subject: "News for {{ customer.first_name }}", text: "Hello"}
broadcasts:
  letter:
    audience: subscribers
    template: letter
    holdout: 10%
"""


def test_broadcasts_over_http(clocked_server: LiveServer) -> None:
    server = clocked_server
    with server.admin() as admin:
        assert admin.post("/v1/broadcasts/letter/send").status_code == 409
    strategy = parse_strategy(STRATEGY, source="test")
    apply_strategy(workspace=server.workspace, strategy=strategy, content=STRATEGY, source="test")
    identifies = [
        {
            "type": "identify",
            "userId": f"u{i}",
            "messageId": f"id-{i}",
            "traits": {"email": f"u{i}@example.org", "first_name": f"U{i}", "subscribed": i != 0},
        }
        for i in range(25)
    ]
    with server.writer() as client:
        assert client.post("/v1/batch", json={"batch": identifies}).status_code == 200
    write_key = {"Authorization": f"Bearer {server.keys.write_key}"}
    with server.client(headers=write_key) as client:
        assert client.get("/v1/broadcasts").status_code == 403  # a write key cannot
    with server.admin() as admin:
        listed = admin.get("/v1/broadcasts").json()
        assert [(b["name"], b["latest"]) for b in listed] == [("letter", None)]
        plan = admin.get("/v1/broadcasts/letter/plan")
        assert plan.status_code == 200, plan.text
        planned = plan.json()
        assert planned["audience"] == 24
        assert planned["samples"]["letter"]["subject"].startswith("News for U")

        sent = admin.post("/v1/broadcasts/letter/send")
        assert sent.status_code == 200, sent.text
        body = sent.json()
        assert body["audience"] == 24 and body["written"] == 24 and body["state"] == "sending"
        assert body["by_arm"]["letter"] + body["holdout"] == 24
        assert admin.post("/v1/broadcasts/letter/send").json()["written"] == 0

        assert admin.post("/v1/broadcasts/letter/pause").json()["state"] == "paused"
        assert admin.post("/v1/broadcasts/letter/resume").json()["state"] == "sending"
        cancelled = admin.post("/v1/broadcasts/letter/cancel").json()
        assert cancelled["state"] == "cancelled"
        assert cancelled["cancelled"] == body["by_arm"]["letter"]

        report = admin.get("/v1/broadcasts/letter/report").json()
        assert report["audience"] == 24 and report["totals"]["sent"] == 0
        arms = {arm["arm"]: arm for arm in report["arms"]}
        assert arms["letter"]["statuses"] == {"cancelled": body["by_arm"]["letter"]}
        shown = admin.get("/v1/broadcasts/letter").json()
        assert [o["state"] for o in shown["occurrences"]] == ["cancelled"]

        missing = admin.get("/v1/broadcasts/nope/report")
        assert missing.status_code == 404 and "nope" in missing.text
        assert admin.post("/v1/broadcasts/nope/send").status_code == 404
        again = admin.post("/v1/broadcasts/letter/pause")
        assert again.status_code == 400 and "no occurrence being sent" in again.text
