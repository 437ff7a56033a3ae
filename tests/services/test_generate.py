"""`generate_store` writes importable, time-ordered, reproducible files in every format."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import orbita.simulation.stores as stores
from orbita.core.errors import UserError
from orbita.model.messages import MESSAGE, Identify, Track
from orbita.services import generate
from orbita.services.generate import DEFAULT_END, GenerateReport, generate_store
from orbita.services.importer import import_customers, import_events
from orbita.services.workspace import Workspace

FORMATS = ("parquet", "jsonl", "csv")


def _generate(out: Path, **overrides: Any) -> GenerateReport:
    args: dict[str, Any] = {
        "store": "clothing-store",
        "customers": 300,
        "days": 45,
        "seed": 5,
        "out": out,
        "fmt": "parquet",
    }
    args.update(overrides)
    return generate_store(**args)


def _rows(path: Path) -> list[dict[str, Any]]:
    """Rows as the importer sees them: JSON columns decoded, empty cells dropped."""
    if path.suffix == ".jsonl":
        return [orjson.loads(line) for line in path.read_bytes().splitlines()]
    if path.suffix == ".csv":
        with path.open(newline="") as handle:
            raw = list(csv.DictReader(handle))
    else:
        raw = pq.read_table(path).to_pylist()
    rows = []
    for row in raw:
        clean = {k: v for k, v in row.items() if v not in (None, "")}
        for key in ("properties", "context"):
            if isinstance(clean.get(key), str):
                clean[key] = orjson.loads(clean[key])
        rows.append(clean)
    return rows


def _message(row: dict[str, Any], kind: str) -> Identify | Track:
    if kind == "customers" and "traits" not in row:
        envelope = {"userId", "messageId", "timestamp"}
        row = {
            "type": "identify",
            **{k: v for k, v in row.items() if k in envelope},
            "traits": {k: v for k, v in row.items() if k not in envelope},
        }
    message = MESSAGE.validate_python(row)
    assert isinstance(message, Identify | Track)
    return message


@pytest.mark.parametrize("fmt", FORMATS)
def test_same_arguments_give_byte_identical_files(tmp_path: Path, fmt: str) -> None:
    first = _generate(tmp_path / "a", fmt=fmt)
    second = _generate(tmp_path / "b", fmt=fmt)
    for name in (first.customers_path.name, first.events_path.name, "truth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert first.events == second.events > 0
    other = _generate(tmp_path / "c", fmt=fmt, seed=6)
    assert other.events_path.read_bytes() != first.events_path.read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_row_is_a_valid_segment_message(tmp_path: Path, fmt: str) -> None:
    report = _generate(tmp_path, fmt=fmt, customers=150, days=30)
    assert report.customers_path.name == f"customers.{fmt}"
    customers = [_message(r, "customers") for r in _rows(report.customers_path)]
    assert len(customers) == report.customers == 150
    assert all(isinstance(c, Identify) and c.timestamp and c.timestamp.tzinfo for c in customers)
    assert customers[0].user_id == "u0000001"
    assert customers[0].message_id == "gen-clothing-store-5-identify-u0000001"
    traits = customers[0].traits
    assert {"email", "timezone", "locale", "createdAt", "first_name", "country"} <= set(traits)
    events = [_message(r, "events") for r in _rows(report.events_path)]
    assert len(events) == report.events
    assert all(isinstance(e, Track) for e in events)
    names = {e.event for e in events if isinstance(e, Track)}
    assert {"Session Started", "Product Viewed", "Product Added", "Signed Up"} <= names
    stamps = [e.timestamp for e in events]
    assert all(s is not None and s.tzinfo is not None for s in stamps)
    assert stamps == sorted(stamps)  # type: ignore[type-var]  # all present, checked above
    assert len({e.message_id for e in events}) == len(events)
    ordered = [e for e in events if isinstance(e, Track) and e.event == "Order Completed"]
    if ordered:
        assert isinstance(ordered[0].properties["products"], list)
        assert ordered[0].context["channel"] in ("web", "mobile")


def test_parquet_columns_and_types(tmp_path: Path) -> None:
    report = _generate(tmp_path, store="bank")
    events = pq.read_schema(report.events_path)
    assert events.names == [
        "messageId", "type", "event", "userId", "anonymousId", "timestamp", "properties", "context",
    ]  # fmt: skip
    assert events.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    customers = pq.read_schema(report.customers_path)
    assert customers.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert customers.field("credit_score").type == pa.int64()
    assert customers.field("marketing_opt_in").type == pa.bool_()
    assert {"products_held", "last_refusal_at", "income_band"} <= set(customers.names)


def test_events_across_chunks_come_out_in_global_time_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stores, "CHUNK", 120)
    seen: list[tuple[int, int]] = []
    report = _generate(
        tmp_path, customers=350, fmt="jsonl", progress=lambda d, t: seen.append((d, t))
    )
    assert seen[0] == (0, 350) and seen[-1] == (350, 350) and len(seen) == 4
    lines = [orjson.loads(line) for line in report.events_path.read_bytes().splitlines()]
    stamps = [line["timestamp"] for line in lines]
    assert stamps == sorted(stamps)
    users = {line.get("userId") for line in lines}
    assert {"u0000001", "u0000121", "u0000350"} <= users  # one from each chunk


def test_truth_lists_the_generating_parameters_and_campaigns(tmp_path: Path) -> None:
    report = _generate(tmp_path)
    truth = json.loads(report.truth_path.read_text())
    assert truth["btyd"]["model"] == "BG/NBD"
    assert {"r", "alpha", "a", "b"} <= set(truth["btyd"])
    assert {"p", "q", "gamma"} <= set(truth["gamma_gamma"])
    kinds = truth["campaigns"]["kinds"]
    assert {"welcome", "abandoned_cart", "browse_abandonment", "cross_sell"} <= set(kinds)
    assert {"repeat_purchase", "win_back", "vip"} <= set(kinds)
    assert kinds["abandoned_cart"]["uplift"] > 0
    assert truth["realised"]["events"] == report.events
    assert truth["realised"]["revenue"] == pytest.approx(report.revenue)
    assert truth["generated"]["end"] == "2026-11-01T00:00:00Z"


def test_start_and_long_periods(tmp_path: Path) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    report = _generate(tmp_path, customers=60, days=600, start=start, fmt="csv")
    rows = _rows(report.events_path)
    assert rows[0]["timestamp"] >= "2024-01-01T"
    assert rows[-1]["timestamp"] < "2025-08-23T"
    assert [r["timestamp"] for r in rows] == sorted(r["timestamp"] for r in rows)
    assert datetime(2026, 11, 1, tzinfo=UTC) == DEFAULT_END


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"store": "shop"}, "unknown store"),
        ({"fmt": "xlsx"}, "unknown format"),
        ({"customers": 0}, "customers"),
        ({"days": 0}, "days"),
        ({"seed": -1}, "seed"),
        ({"start": datetime(2025, 1, 1)}, "time zone"),  # noqa: DTZ001 - the point of the test
    ],
)
def test_bad_arguments_are_user_errors(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        _generate(tmp_path, **overrides)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_importer_takes_the_generated_files(
    tmp_path: Path, embedded_workspace: Workspace, fmt: str
) -> None:
    report = _generate(tmp_path / "gen", customers=40, days=14, fmt=fmt, store="bank")
    people = import_customers(workspace=embedded_workspace, path=report.customers_path)
    events = import_events(workspace=embedded_workspace, path=report.events_path)
    assert people.rows == people.stored == 40
    assert events.rows == events.stored == report.events


def test_worker_threads_write_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stores, "CHUNK", 100)
    single = _generate(tmp_path / "one", customers=320, fmt="parquet")
    monkeypatch.setattr(generate, "PARALLEL_FROM_CHUNKS", 2)
    monkeypatch.setattr(generate, "MAX_WORKERS", 2)
    parallel = _generate(tmp_path / "two", customers=320, fmt="parquet")
    assert parallel.events == single.events
    for name in ("customers.parquet", "events.parquet", "truth.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_a_failed_run_leaves_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stores, "CHUNK", 100)

    def stop(done: int, total: int) -> None:
        if done > 150:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _generate(tmp_path, customers=300, progress=stop)
    assert list(tmp_path.iterdir()) == []
