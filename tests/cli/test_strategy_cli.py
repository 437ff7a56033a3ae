"""`orbita plan`, `apply`, `run --until`, `import events --replay` and `journeys`, driven as
a user would, on the embedded store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import orbita

EXAMPLES = Path(__file__).parents[2] / "examples"

STRATEGY = """\
workspace: shop
timezone: Europe/Kyiv
channels:
  email: {type: smtp, host: 127.0.0.1, port: 2525, from: "Shop <shop@example.com>"}
templates:
  hello: {channel: email, subject: "Hello", text: "Welcome!"}
  tips: {channel: email, subject: "Tips", text: "Three tips."}
  more_tips: {channel: email, subject: "More tips", text: "Five tips."}
journeys:
  welcome:
    trigger: {event: "Signed Up"}
    entry: once
    goal: {event: "Order Completed", within: 7d}
    steps:
      - send: hello
      - {id: pause, wait: WAIT}
      - send: tips
"""

EVENTS = "".join(
    json.dumps(
        {
            "messageId": f"s{n}",
            "type": "track",
            "event": "Signed Up",
            "userId": f"u{n}",
            "timestamp": f"2026-03-0{n}T09:00:00Z",
        }
    )
    + "\n"
    for n in (1, 2, 3)
) + json.dumps(
    {
        "messageId": "o1",
        "event": "Order Completed",
        "userId": "u1",
        "timestamp": "2026-03-04T12:00:00Z",
        "properties": {"revenue": 50},
    }
)


@pytest.fixture
def workspace(tmp_path: Path) -> str:
    path = str(tmp_path / "ws")
    assert orbita("init", "--workspace", path)[0] == 0
    return path


def write(tmp_path: Path, wait: str, *, migrate: bool = False) -> str:
    text = STRATEGY.replace("WAIT", wait)
    if migrate:
        text = text.replace("    entry: once\n", "    entry: once\n    on_change: migrate\n")
        text = text.replace("      - send: tips\n", "      - send: more_tips\n")
    path = tmp_path / "strategy.yaml"
    path.write_text(text)
    return str(path)


def test_plan_apply_and_plan_again(workspace: str, tmp_path: Path) -> None:
    file = write(tmp_path, "2d")
    code, out, _ = orbita("plan", file, "--workspace", workspace)
    assert code == 0
    assert "nothing applied yet" in out
    assert "journeys" in out and "welcome" in out and "templates" in out

    code, out, _ = orbita("apply", file, "--workspace", workspace)
    assert code == 0, out
    assert "Applied as strategy version 1" in out
    assert "welcome v1" in out

    code, out, _ = orbita("plan", file, "--workspace", workspace)
    assert (code, out.strip()) == (0, "No changes against strategy version 1.")
    code, out, _ = orbita("apply", file, "--workspace", workspace)
    assert "Nothing to apply" in out


def test_plan_shows_running_customers_and_migrate_moves_them(
    workspace: str, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(EVENTS)
    orbita("apply", write(tmp_path, "2d"), "--workspace", workspace)
    code, out, err = orbita(
        "import", "events", str(events), "--replay", "--from", "2026-03-01T00:00:00Z",
        "--until", "2026-03-04T10:00:00Z", "--workspace", workspace,
    )  # fmt: skip
    assert code == 0, err
    # u1 and u2 waited their 2 days and got `tips`; u3 waits at `pause`.
    assert "3 journey entries" in out and "5 messages queued" in out

    code, out, _ = orbita("plan", write(tmp_path, "5d"), "--json", "--workspace", workspace)
    plan = json.loads(out)
    assert plan["changes"] == [{"part": "journeys", "name": "welcome", "action": "changed"}]
    assert plan["runs"] == [
        {"journey": "welcome", "version": 1, "node": "pause", "customers": 1, "outcome": "finish"}
    ]

    file = write(tmp_path, "5d", migrate=True)
    code, out, _ = orbita("apply", file, "--json", "--workspace", workspace)
    report = json.loads(out)
    assert report["version"] == 2 and report["migrated"] == 1
    assert report["published"] == [{"journey": "welcome", "version": 2}]

    # The rest of the file: u1's order converts; events the clock passed are not played again.
    code, out, _ = orbita(
        "import", "events", str(events), "--replay", "--until", "2026-03-07T00:00:00Z",
        "--json", "--workspace", workspace,
    )  # fmt: skip
    played = json.loads(out)
    assert (played["events"], played["conversions"], played["messages"]) == (1, 1, 1)

    code, out, _ = orbita("journeys", "stats", "welcome", "--json", "--workspace", workspace)
    stats = json.loads(out)
    assert stats["arms"]["treatment"] == {"entered": 3, "converted": 1}
    assert stats["sent"] == 6
    by_node = {step["node"]: step for step in stats["steps"]}
    assert by_node["pause"]["passed"] == {"next": 3}
    # u3 moved to version 2 while waiting: it kept its wake time and took v2's last step.
    assert by_node["steps.2"]["messages"] == {"tips": 2, "more_tips": 1}, by_node
    code, out, _ = orbita("journeys", "list", "--workspace", workspace)
    assert code == 0 and "welcome" in out
    code, out, _ = orbita("journeys", "show", "welcome", "--workspace", workspace)
    assert code == 0 and "pause" in out and "version 2" in out


def test_user_mistakes_exit_2_with_the_reason(workspace: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("workspace: shop\njourneys:\n  w:\n    trigger: {event: X}\n    stepz: []\n")
    code, _, err = orbita("plan", str(bad), "--workspace", workspace)
    assert code == 2 and "line 5" in err and "stepz" in err
    code, _, err = orbita("run", "--until", "2026-03-01T00:00:00Z", "--workspace", workspace)
    assert code == 2 and "--from" in err
    code, _, err = orbita(
        "run", "--until", "tomorrow", "--from", "2026-03-01T00:00:00Z", "--workspace", workspace
    )
    assert code == 2 and "--until" in err
    code, _, err = orbita("journeys", "stats", "nope", "--workspace", workspace)
    assert code == 2 and "unknown journey 'nope'" in err


@pytest.mark.parametrize("example", ["clothing-store", "bank"])
def test_the_examples_apply(workspace: str, example: str) -> None:
    file = str(EXAMPLES / example / "strategy.yaml")
    code, out, err = orbita("apply", file, "--json", "--workspace", workspace)
    assert code == 0, err
    assert len(json.loads(out)["published"]) >= 7
    # Without --strategy, the segment commands read the applied strategy.
    code, out, err = orbita("segments", "list", "--json", "--workspace", workspace)
    assert code == 0, err
    assert "dormant_card_holders" in out if example == "bank" else "lapsed_30d" in out


def test_worker_delivers_what_the_journeys_queued(workspace: str, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from orbita.channels.email.sink import MailFolder

    mail = MailFolder(tmp_path / "mail").start()
    try:
        text = STRATEGY.replace("port: 2525", f"port: {mail.port}").replace("WAIT", "1m")
        file = tmp_path / "strategy.yaml"
        file.write_text(text)
        assert orbita("apply", str(file), "--workspace", workspace)[0] == 0
        signed_up = datetime.now(UTC) - timedelta(hours=1)
        events = tmp_path / "events.jsonl"
        events.write_text(
            json.dumps(
                {
                    "messageId": "s1",
                    "event": "Signed Up",
                    "userId": "ann",
                    "timestamp": signed_up.isoformat(),
                    "traits": {},
                    "context": {"traits": {"email": "ann@example.com"}},
                }
            )
            + "\n"
        )
        identify = tmp_path / "customers.csv"
        identify.write_text("userId,email\nann,ann@example.com\n")
        assert orbita("import", "customers", str(identify), "--workspace", workspace)[0] == 0
        code, _, err = orbita(
            "import", "events", str(events), "--replay", "--from", signed_up.isoformat(),
            "--until", datetime.now(UTC).isoformat(), "--workspace", workspace,
        )  # fmt: skip
        assert code == 0, err
        code, _, err = orbita("worker", "--until-idle", "--deliver", "--workspace", workspace)
        assert code == 0, err
        assert "2 messages sent" in err
        assert mail.count() == 2  # hello, then tips a minute later
    finally:
        mail.stop()
