"""`orbita analytics kpis|funnel|cohorts` and `orbita kpis` on a generated clothing store,
driven as a user would: exit codes, --json, and figures checked against the generated files."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from orbita.cli.main import app

runner = CliRunner()
EXAMPLE = Path(__file__).parents[2] / "examples" / "clothing-store"
END = datetime(2026, 11, 1, tzinfo=UTC)  # the generator's default end
START = END - timedelta(days=28)
RANGE = ("--start", START.isoformat(), "--end", END.isoformat())


def orbita(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[dict[str, Any]]]:
    """A workspace with a small generated store and the example strategy; the events as the
    generator wrote them."""
    root = tmp_path_factory.mktemp("analytics-cli")
    files, ws = root / "files", root / "ws"
    code, _, err = orbita(
        "generate", "clothing-store", "-n", "150", "-d", "45", "-s", "3", "--out", str(files)
    )
    assert code == 0, err
    assert orbita("init", "-w", str(ws))[0] == 0
    for kind in ("customers", "events"):
        code, _, err = orbita("import", kind, str(files / f"{kind}.parquet"), "-w", str(ws))
        assert code == 0, err
    shutil.copy(EXAMPLE / "strategy.yaml", ws / "strategy.yaml")
    shutil.copytree(EXAMPLE / "templates", ws / "templates")
    events = pq.read_table(files / "events.parquet").to_pylist()
    return str(ws), events


def _when(row: dict[str, Any]) -> datetime:
    value = row["timestamp"]
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.astimezone(UTC)


def _user(row: dict[str, Any]) -> str:
    return str(row.get("userId") or row.get("anonymousId"))


def _name(row: dict[str, Any]) -> str | None:
    return row.get("event") or row.get("name")


def test_kpis_as_tidy_rows(shop: tuple[str, list[dict[str, Any]]]) -> None:
    ws, events = shop
    orders = [e for e in events if _name(e) == "Order Completed" and START <= _when(e) < END]
    code, out, err = orbita(
        "analytics", "kpis", "-w", ws, *RANGE, "--period", "total",
        "-m", "orders", "-m", "buyers", "--json",
    )  # fmt: skip
    assert code == 0, err
    rows = {row["metric"]: row for row in json.loads(out)}
    assert rows["orders"]["value"] == len(orders) > 0
    assert rows["buyers"]["value"] == len({_user(e) for e in orders})
    assert rows["orders"]["period"] == START.date().isoformat()

    code, out, err = orbita("analytics", "kpis", "-w", ws, *RANGE, "--period", "week", "--json")
    assert code == 0, err
    weekly = json.loads(out)
    assert sum(r["value"] for r in weekly if r["metric"] == "orders") == len(orders)
    assert {r["metric"] for r in weekly} >= {"churn_rate", "repeat_purchase_rate", "open_rate"}
    code, out, _ = orbita("analytics", "kpis", "-w", ws, *RANGE, "-m", "revenue")
    assert code == 0 and "revenue" in out


def test_funnel_and_its_breakdown(shop: tuple[str, list[dict[str, Any]]]) -> None:
    ws, events = shop
    viewed = [e for e in events if _name(e) == "Product Viewed" and START <= _when(e) < END]
    # Visitors who never signed in are customers of their own, unless an alias merged them.
    known = {e["userId"] for e in viewed if e.get("userId")}
    anyone = known | {e["anonymousId"] for e in viewed if not e.get("userId")}
    code, out, err = orbita("analytics", "funnel", "checkout", "-w", ws, *RANGE, "--json")
    assert code == 0, err
    result = json.loads(out)
    overall = [r for r in result["rows"] if r["group"] == ""]
    assert [r["name"] for r in overall] == [
        "Product Viewed", "Product Added", "Checkout Started", "Order Completed"
    ]  # fmt: skip
    assert len(known) <= overall[0]["customers"] <= len(anyone)
    counts = [r["customers"] for r in overall]
    assert counts == sorted(counts, reverse=True) and counts[-1] > 0
    assert result["breakdown"] == "stage"  # the funnel's own

    code, out, err = orbita(
        "analytics", "funnel", "checkout", "-w", ws, *RANGE, "--by", "trait:acquisition_channel",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    groups: dict[str, int] = defaultdict(int)
    for row in json.loads(out)["rows"]:
        if row["step"] == 1 and row["group"]:
            groups[row["group"]] += row["customers"]
    assert sum(groups.values()) == overall[0]["customers"]
    assert set(groups) - {"(none)"} and groups["(none)"] <= len(anyone) - len(known)
    code, out, _ = orbita("analytics", "funnel", "checkout", "-w", ws, *RANGE)
    assert code == 0 and "Checkout" in out


def test_cohorts_triangle(shop: tuple[str, list[dict[str, Any]]]) -> None:
    ws, events = shop
    first: dict[str, datetime] = {}
    for e in sorted(events, key=_when):
        if _name(e) == "Order Completed":
            first.setdefault(_user(e), _when(e))
    start = END - timedelta(days=42)
    acquired = [u for u, t in first.items() if start <= t < END]
    code, out, err = orbita(
        "analytics", "cohorts", "-w", ws, "--period", "week", "--start", start.isoformat(),
        "--end", END.isoformat(), "--json",
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    zero = [r for r in rows if r["period"] == 0]
    assert sum(r["customers"] for r in zero) == len(acquired) > 0
    assert all(r["retention"] == 1.0 for r in zero)
    code, out, _ = orbita("analytics", "cohorts", "-w", ws, "--period", "week")
    assert code == 0 and "cohort" in out


def test_goals_progress(shop: tuple[str, list[dict[str, Any]]]) -> None:
    ws, _ = shop
    code, out, err = orbita("kpis", "-w", ws, "--as-of", END.isoformat(), "--json")
    assert code == 0, err
    goals = json.loads(out)
    assert [(g["kpi"], g["journey"]) for g in goals] == [
        ("repeat_purchase_rate", None),
        ("conversion_rate", "abandoned_cart"),
        ("conversion_rate", "win_back"),
    ]
    code, out, _ = orbita(
        "analytics", "kpis", "-w", ws, *RANGE, "--period", "total",
        "-m", "repeat_purchase_rate", "--json",
    )  # fmt: skip
    assert goals[0]["current"] == json.loads(out)[0]["value"] is not None
    # The store's history is shorter than the twelve weeks back to the default `since`.
    assert goals[0]["baseline"] is None and goals[0]["status"] == "in_progress"
    assert len(goals[0]["trend"]) == 13
    code, out, _ = orbita("kpis", "-w", ws, "--as-of", END.isoformat())
    assert code == 0 and "repeat_purchase_rate (store) by week" in " ".join(out.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("analytics", "kpis", "--period", "fortnight"), "--period: unknown period 'fortnight'"),
        (("analytics", "kpis", "-m", "opens"), "--metric: unknown KPI 'opens'"),
        (("analytics", "kpis", "--by", "colour"), "--by: unknown dimension 'colour'"),
        (("analytics", "kpis", "--start", "2026-01-01"), "--start: '2026-01-01' needs a time zone"),
        (("analytics", "funnel", "nope"), "funnel: unknown funnel 'nope'"),
        (("analytics", "funnel", "checkout", "--by", "colour"), "by: 'colour' is not a breakdown"),
        (("analytics", "funnel", "checkout", "--by", "segment:vipp"), "by: unknown segment 'vipp'"),
        (("analytics", "cohorts", "--period", "total"), "--period: cohorts need"),
        (("analytics", "cohorts", "--by", "colour"), "by: 'colour' is not a cohort"),
        (("kpis", "--as-of", "yesterday"), "--as-of: 'yesterday' is not a date"),
    ],
)
def test_bad_input_exits_2_naming_the_field(
    shop: tuple[str, list[dict[str, Any]]], args: tuple[str, ...], message: str
) -> None:
    ws, _ = shop
    code, _, err = orbita(*args, "-w", ws)
    assert code == 2
    assert message in " ".join(err.split())
