"""`orbita segments …` and `orbita stages` driven as a user would: exit codes and --json."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from orbita.cli.main import app

runner = CliRunner()
EVENTS = (
    '{"messageId": "e1", "event": "Order Completed", "userId": "u1",'
    ' "timestamp": "2026-01-15T10:00:00Z", "properties": {"revenue": 99.5}}\n'
    '{"messageId": "e2", "event": "Product Viewed", "userId": "u2",'
    ' "timestamp": "2026-01-16T10:00:00Z", "properties": {"category": "shoes"}}\n'
)
STRATEGY = """workspace: cli
segments:
  buyers: {event: "Order Completed"}
  viewers: {event: "Product Viewd"}
stages:
  - {name: customer, segment: buyers}
  - name: visitor
    segment: {not: {segment: buyers}}
"""


def orbita(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def workspace(tmp_path: Path) -> str:
    path = tmp_path / "ws"
    assert orbita("init", "--workspace", str(path))[0] == 0
    events = tmp_path / "events.jsonl"
    events.write_text(EVENTS)
    assert orbita("import", "events", str(events), "--workspace", str(path))[0] == 0
    (path / "strategy.yaml").write_text(STRATEGY)
    return str(path)


def test_refresh_list_members_and_stages(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    code, out, _ = orbita(
        "segments", "refresh", "-w", ws, "--as-of", "2026-02-01T00:00:00Z", "--json"
    )
    assert code == 0
    reports = {(r["kind"], r["name"]): r for r in json.loads(out)}
    assert reports[("segment", "buyers")]["size"] == 1
    assert reports[("stage", "visitor")]["entered"] == 1

    code, out, err = orbita("segments", "list", "-w", ws, "--json")
    assert code == 0
    assert {s["name"]: s["size"] for s in json.loads(out)} == {"buyers": 1, "viewers": 0}
    assert "no event 'Product Viewd' has been stored yet" in err  # a warning, not an error

    code, out, _ = orbita("segments", "members", "buyers", "-w", ws)
    assert code == 0
    assert out.splitlines() == ["customer_id,user_id,entered_at", "1,u1,2026-02-01T00:00:00+00:00"]
    code, out, _ = orbita("segments", "members", "buyers", "-w", ws, "--format", "json")
    assert [m["user_id"] for m in json.loads(out)] == ["u1"]

    code, out, _ = orbita("stages", "-w", ws, "--json")
    assert json.loads(out) == [
        {"stage": "customer", "customers": 1},
        {"stage": "visitor", "customers": 1},
    ]
    code, out, _ = orbita("segments", "preview", "buyers", "-w", ws, "--json")
    assert code == 0 and json.loads(out)["size"] == 1


def test_explain_prints_sql_per_dialect(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    code, out, _ = orbita("segments", "explain", "buyers", "-w", ws, "--dialect", "postgres")
    assert code == 0 and "\"name\" = 'Order Completed'" in out
    code, out, _ = orbita("segments", "explain", "buyers", "-w", ws, "--dialect", "clickhouse")
    assert code == 0 and "BestEffort(" in out


def test_user_mistakes_exit_2_with_one_line(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    code, _, err = orbita("segments", "preview", "nope", "-w", ws)
    assert code == 2 and err.startswith("error: unknown segment 'nope'")
    code, _, err = orbita("segments", "refresh", "-w", ws, "--as-of", "2026-02-01")
    assert code == 2 and "needs a time zone" in err
    code, _, err = orbita("segments", "list", "-w", ws, "--strategy", str(tmp_path / "x.yaml"))
    assert code == 2 and "no strategy file" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("workspace: x\nsegments:\n  a: {event: X, within: 30}\n")
    code, _, err = orbita("segments", "list", "-w", ws, "--strategy", str(bad))
    assert code == 2 and "line 3, segments.a.within: 30 has no unit" in err
    assert len(err.strip().splitlines()) == 1
