"""`orbita analytics experiments`, driven as a user would on a workspace whose journey (a
holdout and an A/B split) ran over replayed events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import orbita

STRATEGY = """\
workspace: shop
channels:
  email: {type: smtp, host: 127.0.0.1, port: 2525, from: "Shop <shop@example.com>"}
templates:
  hello: {channel: email, subject: "Hello", text: "Welcome!", variants: {B: {subject: "Hi"}}}
journeys:
  welcome:
    trigger: {event: "Signed Up"}
    entry: once
    holdout: 30%
    goal: {event: "Order Completed", within: 7d}
    steps:
      - split:
          - {name: A, percent: 50%, then: [{send: hello}]}
          - {name: B, percent: 50%, then: [{send: hello}]}
"""
PEOPLE = 60


def _events() -> str:
    lines = []
    for i in range(PEOPLE):
        day = 1 + i % 6
        at = f"2026-03-0{day}T09:{i % 60:02d}:00Z"
        lines.append({"messageId": f"s{i}", "type": "track", "event": "Signed Up",
                      "userId": f"u{i}", "timestamp": at})  # fmt: skip
        if i % 3 == 0:  # every third orders the next day
            lines.append({"messageId": f"o{i}", "type": "track", "event": "Order Completed",
                          "userId": f"u{i}", "timestamp": f"2026-03-0{day + 1}T12:00:00Z",
                          "properties": {"revenue": 40 + i}})  # fmt: skip
    lines.sort(key=lambda line: str(line["timestamp"]))
    return "".join(json.dumps(line) + "\n" for line in lines)


@pytest.fixture
def shop(tmp_path: Path) -> str:
    workspace = str(tmp_path / "ws")
    assert orbita("init", "--workspace", workspace)[0] == 0
    strategy = tmp_path / "strategy.yaml"
    strategy.write_text(STRATEGY)
    assert orbita("apply", str(strategy), "--workspace", workspace)[0] == 0
    events = tmp_path / "events.jsonl"
    events.write_text(_events())
    code, _, err = orbita(
        "import", "events", str(events), "--replay", "--from", "2026-03-01T00:00:00Z",
        "--until", "2026-03-15T00:00:00Z", "--workspace", workspace,
    )  # fmt: skip
    assert code == 0, err
    return workspace


def test_experiments_as_json_tables_and_sequential(shop: str) -> None:
    code, out, err = orbita("analytics", "experiments", "--json", "--workspace", shop)
    assert code == 0, err
    report = json.loads(out)
    kinds = [(e["kind"], e["experiment"]) for e in report["experiments"]]
    assert kinds == [("holdout", "holdout"), ("split", "steps.0")]
    holdout = report["experiments"][0]
    arms = {row["arm"]: row for row in holdout["arms"]}
    assert arms["holdout"]["n"] + arms["treatment"]["n"] == PEOPLE
    assert arms["holdout"]["conversions"] + arms["treatment"]["conversions"] == PEOPLE // 3
    total_revenue = sum(40 + i for i in range(0, PEOPLE, 3))
    assert arms["holdout"]["revenue"] + arms["treatment"]["revenue"] == total_revenue
    treated = arms["treatment"]
    assert treated["lift"] == pytest.approx(
        treated["conversion_rate"] - arms["holdout"]["conversion_rate"]
    )
    assert treated["lift_low"] < treated["lift"] < treated["lift_high"]
    assert holdout["verdict"]["reason"]
    (uplift,) = report["uplift"]
    assert uplift["treated"] == treated["n"]
    assert "timeline" not in holdout

    code, out, err = orbita("analytics", "experiments", "welcome", "--workspace", shop)
    assert code == 0, err
    assert "welcome: holdout holdout" in out and "verdict:" in out
    assert "Uplift over the holdout" in out

    code, out, err = orbita(
        "analytics", "experiments", "welcome", "--sequential", "--json", "--workspace", shop
    )
    assert code == 0, err
    timeline = json.loads(out)["experiments"][0]["timeline"]
    assert timeline[-1]["n"] == PEOPLE
    p_values = [point["p_value"] for point in timeline]
    assert p_values == sorted(p_values, reverse=True)  # always valid: never rises
    code, out, err = orbita("analytics", "experiments", "--sequential", "--workspace", shop)
    assert code == 0, err
    assert "always-valid p" in out


def test_unknown_journey_and_empty_workspace(shop: str, tmp_path: Path) -> None:
    code, _, err = orbita("analytics", "experiments", "nope", "--workspace", shop)
    assert code == 2
    assert "unknown journey 'nope'" in err
    empty = str(tmp_path / "empty")
    assert orbita("init", "--workspace", empty)[0] == 0
    code, out, _ = orbita("analytics", "experiments", "--workspace", empty)
    assert code == 0 and "No experiments" in out
