"""The `orbita` command line, driven as a user would: exit codes, stdout, stderr."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from orbita.cli.main import app

runner = CliRunner()


def orbita(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def workspace(tmp_path: Path) -> str:
    path = str(tmp_path / "ws")
    code, _, _ = orbita("init", "--workspace", path)
    assert code == 0
    return path


CUSTOMERS_CSV = (
    "userId,email,timezone,plan\nu1,ann@example.com,Europe/Kyiv,gold\nu2,bob@example.com,,silver\n"
)
EVENTS_JSONL = (
    '{"messageId": "e1", "event": "Order Completed", "userId": "u1",'
    ' "timestamp": "2025-01-15T10:00:00Z", "properties": {"revenue": 99.5}}\n'
    '{"messageId": "e2", "event": "Product Viewed", "userId": "u1",'
    ' "timestamp": "2025-01-16T10:00:00Z", "properties": {"sku": "[x]"}}\n'
)


def test_init_prints_keys_and_keys_json_has_both(tmp_path: Path) -> None:
    path = str(tmp_path / "ws")
    code, out, _ = orbita("init", "--workspace", path)
    assert code == 0
    assert "write key  wk_" in out
    assert "admin key  ak_" in out

    code, out, _ = orbita("keys", "--json", "--workspace", path)
    keys = json.loads(out)
    assert code == 0
    assert set(keys) == {"write_key", "admin_key"}
    assert keys["write_key"].startswith("wk_")
    assert keys["admin_key"].startswith("ak_")
    # init is idempotent: the same keys again.
    assert orbita("init", "--json", "--workspace", path)[1] == out


def test_workspace_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORBITA_WORKSPACE", str(tmp_path / "env-ws"))
    assert orbita("init")[0] == 0
    assert (tmp_path / "env-ws" / "keys.json").exists()


def test_missing_workspace_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, out, err = orbita("keys", "--workspace", str(tmp_path / "nowhere"))
    assert code == 2
    assert out == ""
    assert err.startswith("error: no workspace at")
    assert "orbita init" in err
    assert len(err.strip().splitlines()) == 1


def test_import_show_and_delete(workspace: str, tmp_path: Path) -> None:
    customers = tmp_path / "customers.csv"
    customers.write_text(CUSTOMERS_CSV)
    events = tmp_path / "events.jsonl"
    events.write_text(EVENTS_JSONL)

    code, out, _ = orbita("import", "customers", str(customers), "--workspace", workspace)
    assert code == 0
    assert "2 stored" in out
    code, out, _ = orbita("import", "events", str(events), "-w", workspace, "--json")
    assert code == 0
    assert json.loads(out)["stored"] == 2

    # Importing the same file again stores nothing new.
    code, out, _ = orbita("import", "customers", str(customers), "-w", workspace, "--json")
    report = json.loads(out)
    assert (report["stored"], report["duplicates"]) == (0, 2)

    code, out, _ = orbita("customers", "show", "u1", "--json", "-w", workspace)
    assert code == 0
    customer = json.loads(out)
    assert customer["profile"]["email"] == "ann@example.com"
    assert customer["profile"]["traits"]["plan"] == "gold"
    assert customer["events_count"] == 3
    # Newest first; the identify has no timestamp, so it happened when it was imported.
    assert [e["name"] for e in customer["latest_events"]] == [
        None,
        "Product Viewed",
        "Order Completed",
    ]

    code, out, _ = orbita("customers", "show", "u1", "-w", workspace)
    assert code == 0
    assert "ann@example.com" in out
    assert "Order Completed" in out

    code, out, _ = orbita("customers", "delete", "u1", "--yes", "--json", "-w", workspace)
    assert code == 0
    assert json.loads(out) == {
        "user_id": "u1",
        "customer_id": customer["profile"]["customer_id"],
        "profiles": 1,
        "identities": 1,
        "events": 3,
        "memberships": 0,
        "journey_rows": 0,
        "delivery_rows": 0,
    }
    code, _, err = orbita("customers", "show", "u1", "-w", workspace)
    assert code == 2
    assert "no customer with id 'u1'" in err


def test_delete_asks_first(workspace: str, tmp_path: Path) -> None:
    customers = tmp_path / "customers.csv"
    customers.write_text(CUSTOMERS_CSV)
    orbita("import", "customers", str(customers), "-w", workspace)

    result = runner.invoke(app, ["customers", "delete", "u2", "-w", workspace], input="n\n")

    assert result.exit_code == 1  # aborted
    assert orbita("customers", "show", "u2", "-w", workspace)[0] == 0


def test_invalid_rows_exit_2_with_line_numbers_and_store_nothing(
    workspace: str, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    path.write_text("userId,email\nu1,a@example.com\n,b@example.com\nu3,c@example.com\n")

    code, _, err = orbita("import", "customers", str(path), "-w", workspace)

    assert code == 2
    assert "line 3, userId: userId or anonymousId is required" in err
    assert "1 of 3 rows are invalid, nothing was imported" in err
    assert "Traceback" not in err
    assert orbita("customers", "show", "u1", "-w", workspace)[0] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["import", "events", "missing.csv"], "no such file"),
        (["import", "events", "data.xlsx"], "--format"),
        (["import", "events", "data.csv", "--format", "xml"], "unknown format"),
    ],
)
def test_bad_arguments_are_one_line(
    workspace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("data.xlsx", "data.csv"):
        (tmp_path / name).write_text("userId\nu1\n")

    code, _, err = orbita(*args, "-w", workspace)

    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def _start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "orbita.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture
def server(workspace: str) -> Iterator[subprocess.Popen[bytes]]:
    process = _start("serve", "--port", "0", "-w", workspace)
    info = Path(workspace) / "server.json"
    deadline = time.monotonic() + 30
    while not info.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(process.communicate()[1].decode())
        time.sleep(0.05)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_with_a_server_running(
    workspace: str, tmp_path: Path, server: subprocess.Popen[bytes]
) -> None:
    """The server holds the DuckDB file: imports say so, customers go through its API."""
    import httpx

    url = json.loads((Path(workspace) / "server.json").read_text())["url"]
    keys = json.loads(orbita("keys", "--json", "-w", workspace)[1])
    response = httpx.post(
        f"{url}/v1/identify",
        json={"userId": "u9", "traits": {"email": "nine@example.com"}},
        auth=(keys["write_key"], ""),
    )
    assert response.status_code == 200, response.text

    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS_CSV)
    code, _, err = orbita("import", "customers", str(path), "-w", workspace)
    assert code == 2
    assert f"`orbita serve` (pid {server.pid}, {url}) has this workspace's event store" in err
    assert len(err.strip().splitlines()) == 1

    code, out, err = orbita("customers", "show", "u9", "--json", "-w", workspace)
    assert code == 0, err
    assert json.loads(out)["profile"]["email"] == "nine@example.com"

    code, out, err = orbita("customers", "delete", "u9", "--yes", "--json", "-w", workspace)
    assert code == 0, err
    assert json.loads(out)["profiles"] == 1
    code, _, err = orbita("customers", "show", "u9", "-w", workspace)
    assert code == 2
    assert "u9" in err


def test_demo_runs_the_strategy_and_compares_with_the_holdout(tmp_path: Path) -> None:
    path = str(tmp_path / "demo")
    args = ("demo", "--customers", "150", "--days", "35", "--weeks", "2", "-w", path)

    code, out, err = orbita(*args)

    assert code == 0, err
    assert "Journeys: conversion, treatment vs holdout" in out
    for journey in ("welcome", "abandoned_cart", "browse_abandonment"):
        assert journey in out
    for closing in ("KPIs, ", "open_rate", "Customer value by lifecycle stage"):
        assert closing in out

    # Again: the demo's own workspace is made anew, and the run is the same (seeded).
    code, again, _ = orbita(*args, "--json")
    data = json.loads(again)
    assert data["customers"]["stored"] == 150
    stats = {j["stats"]["name"]: j["stats"] for j in data["journeys"]}
    entered = sum(a["entered"] for a in stats["welcome"]["arms"].values())
    assert entered > 0 and stats["welcome"]["sent"] >= entered * 0.9
    assert data["run"]["messages"] == sum(j["sent"] for j in stats.values())
    assert data["run"]["events"] > data["responses"] > 0
    # Delivered for real: every message sent reached the local SMTP server or HTTP stand-in.
    received = data["received"]
    assert received["emails"] > 0 and received["resent"] == 0
    assert data["delivery"]["sent"] == received["emails"] + received["http"]
    # Each journey with a holdout is measured against it, the interval around the uplift.
    welcome = next(j for j in data["journeys"] if j["stats"]["name"] == "welcome")
    measured = welcome["measured"]
    assert measured["treated"] + measured["held_out"] == entered
    low, high = measured["interval"]["low"], measured["interval"]["high"]
    assert low is None or high is None or low <= measured["uplift"] <= high
    assert welcome["messages"]["messages_delivered"] > 0
    kpis = {row["metric"]: row["value"] for row in data["kpis"]}
    assert kpis["orders"] > 0 and kpis["messages_sent"] > 0
    assert sum(stage["customers"] for stage in data["ltv"]["stages"]) > 0


def test_demo_refuses_a_workspace_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code, _, err = orbita(
        "demo", "-n", "20", "-d", "30", "--weeks", "1", "-w", str(tmp_path / "mine")
    )
    assert code == 2 and "not a demo workspace" in err
    assert (tmp_path / "mine" / "notes.txt").exists()


def test_generate_to_files_and_into_the_workspace(tmp_path: Path) -> None:
    out = tmp_path / "files"
    code, stdout, err = orbita(
        "generate", "bank", "-n", "30", "-d", "15", "--out", str(out), "--format", "csv", "--json"
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["customers"] == 30
    assert Path(report["events_path"]) == out / "events.csv"
    assert not (tmp_path / "orbita-data").exists()  # --out imports nothing

    workspace = str(tmp_path / "ws")
    code, stdout, err = orbita(
        "generate", "bank", "-n", "30", "-d", "15", "-w", workspace, "--json"
    )
    assert code == 0, err
    loaded = json.loads(stdout)
    assert loaded["customers"]["stored"] == 30
    assert loaded["events"]["stored"] == loaded["generated"]["events"]

    code, _, err = orbita("generate", "bank", "-n", "0", "-w", workspace)
    assert code == 2
    assert "at least 1" in err
