"""`GET /v1/analytics/experiments` on a live server: events sent to the API run a journey
with a holdout and an A/B split; the experiments read back as tidy rows."""

from __future__ import annotations

import time
from datetime import timedelta

from live_api import SERVER_NOW, LiveServer
from sqlalchemy import Table, func, select

from orbita.model.strategy import parse_strategy
from orbita.services.apply import apply_strategy
from orbita.store.state import journey_conversions, journey_runs

STRATEGY = """\
workspace: api
channels:
  email: {type: smtp, host: 127.0.0.1, port: 2525, from: "Shop <shop@example.com>"}
templates:
  hello: {channel: email, subject: "Hello", text: "Welcome!", variants: {B: {subject: "Hi"}}}
journeys:
  welcome:
    trigger: {event: "Signed Up"}
    entry: once
    holdout: 25%
    goal: {event: "Order Completed", within: 7d}
    steps:
      - split:
          - {name: A, percent: 50%, then: [{send: hello}]}
          - {name: B, percent: 50%, then: [{send: hello}]}
"""
PEOPLE = 40


def _wait_for(server: LiveServer, table: Table, count: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        with server.workspace.state.connect() as connection:
            found = connection.execute(select(func.count()).select_from(table)).scalar_one()
        if found >= count or time.monotonic() > deadline:
            assert found == count
            return
        time.sleep(0.05)


def test_experiments_over_the_api(clocked_server: LiveServer) -> None:
    server = clocked_server
    strategy = parse_strategy(STRATEGY, source="test")
    apply_strategy(workspace=server.workspace, strategy=strategy, content=STRATEGY, source="t")
    signed_up = (SERVER_NOW - timedelta(minutes=30)).isoformat()
    ordered = (SERVER_NOW - timedelta(minutes=5)).isoformat()
    signups = [
        {"type": "track", "event": "Signed Up", "userId": f"u{i}", "messageId": f"s{i}",
         "timestamp": signed_up}
        for i in range(PEOPLE)
    ]  # fmt: skip
    orders = [
        {"type": "track", "event": "Order Completed", "userId": f"u{i}", "messageId": f"o{i}",
         "timestamp": ordered, "properties": {"revenue": 25.5}}
        for i in range(0, PEOPLE, 4)
    ]  # fmt: skip
    with server.writer() as writer:
        assert writer.post("/v1/batch", json={"batch": signups}).status_code == 200
        _wait_for(server, journey_runs, PEOPLE)
        assert writer.post("/v1/batch", json={"batch": orders}).status_code == 200
        _wait_for(server, journey_conversions, len(orders))

    with server.admin() as admin:
        everything = admin.get("/v1/analytics/experiments")
        assert everything.status_code == 200, everything.text
        report = everything.json()
        one = admin.get("/v1/analytics/experiments/welcome", params={"sequential": "true"})
        assert one.status_code == 200, one.text
        missing = admin.get("/v1/analytics/experiments/nope")
    with server.writer() as writer:
        forbidden = writer.get("/v1/analytics/experiments")

    assert [(e["kind"], e["experiment"]) for e in report["experiments"]] == [
        ("holdout", "holdout"),
        ("split", "steps.0"),
    ]
    arms = {row["arm"]: row for row in report["experiments"][0]["arms"]}
    assert arms["holdout"]["n"] + arms["treatment"]["n"] == PEOPLE
    assert arms["holdout"]["conversions"] + arms["treatment"]["conversions"] == len(orders)
    assert arms["holdout"]["revenue"] + arms["treatment"]["revenue"] == 25.5 * len(orders)
    assert (
        arms["treatment"]["lift_low"] <= arms["treatment"]["lift"] <= arms["treatment"]["lift_high"]
    )
    (uplift,) = report["uplift"]
    assert uplift["treated"] == arms["treatment"]["n"]
    # Fewer looks than the burn-in: the confidence sequence is unbounded, which JSON says as null.
    timeline = one.json()["experiments"][0]["timeline"]
    assert timeline[-1]["n"] == PEOPLE and timeline[-1]["low"] is None
    assert missing.status_code == 404 and "unknown journey 'nope'" in missing.text
    assert forbidden.status_code in (401, 403)
