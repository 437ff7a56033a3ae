"""Bulk import: every format, the same validation as the API, all or nothing, idempotent."""

from __future__ import annotations

import csv
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orbita.core.errors import InvalidInputError, UserError
from orbita.services import importer
from orbita.services.customers import get_customer
from orbita.services.importer import import_customers, import_events
from orbita.services.summary import summarise
from orbita.services.workspace import Workspace

CUSTOMERS = [
    {
        "userId": "u1",
        "email": "ann@example.com",
        "phone": "+380501112233",
        "timezone": "Europe/Kyiv",
        "locale": "uk-UA",
        "plan": "gold",
        "createdAt": "2024-01-02T03:04:05+00:00",
    },
    {"userId": "u2", "email": "bob@example.com", "plan": "silver"},
    {"userId": "u3", "telegram_chat_id": "12345"},
]
EVENTS = [
    {
        "messageId": "e1",
        "event": "Order Completed",
        "userId": "u1",
        "timestamp": "2025-01-15T10:00:00Z",
        "properties": {"revenue": 120.5, "order_id": "o1"},
    },
    {
        "messageId": "e2",
        "event": "Order Completed",
        "userId": "u2",
        "timestamp": "2025-02-03T10:00:00Z",
        "properties": {"revenue": 30},
    },
    {
        "messageId": "e3",
        "event": "Product Viewed",
        "anonymousId": "anon-9",
        "timestamp": "2025-02-04T10:00:00Z",
        "properties": {"category": "shoes"},
        "context": {"ip": "127.0.0.1"},
    },
]


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as the file the extension names; objects become JSON text in CSV and Parquet."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path
    columns = list(dict.fromkeys(key for row in rows for key in row))
    flat = [
        {k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()} for row in rows
    ]
    if path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(flat)
        return path
    table = pa.table({c: [row.get(c) for row in flat] for c in columns})
    pq.write_table(table, path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_customers_import_in_every_format(
    embedded_workspace: Workspace, tmp_path: Path, suffix: str
) -> None:
    path = write(tmp_path / f"customers{suffix}", CUSTOMERS)

    report = import_customers(workspace=embedded_workspace, path=path)

    assert (report.rows, report.stored, report.duplicates) == (3, 3, 0)
    assert report.format == suffix[1:]
    ann = get_customer(workspace=embedded_workspace, user_id="u1").profile
    assert ann.email == "ann@example.com"
    assert ann.phone == "+380501112233"
    assert ann.timezone == "Europe/Kyiv"
    assert ann.locale == "uk-UA"
    assert ann.traits["plan"] == "gold"
    assert ann.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert get_customer(workspace=embedded_workspace, user_id="u3").profile.telegram_chat_id == (
        "12345"
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_events_import_in_every_format(
    embedded_workspace: Workspace, tmp_path: Path, suffix: str
) -> None:
    path = write(tmp_path / f"events{suffix}", EVENTS)

    report = import_events(workspace=embedded_workspace, path=path)

    assert (report.rows, report.stored) == (3, 3)
    view = get_customer(workspace=embedded_workspace, user_id="u1")
    [event] = view.latest_events
    assert event.name == "Order Completed"
    assert event.properties == {"revenue": 120.5, "order_id": "o1"}
    assert event.timestamp == datetime(2025, 1, 15, 10, tzinfo=UTC)
    anonymous = get_customer(workspace=embedded_workspace, user_id="anon-9").latest_events[0]
    assert anonymous.context == {"ip": "127.0.0.1"}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_reimport_stores_nothing_new(
    embedded_workspace: Workspace, tmp_path: Path, suffix: str
) -> None:
    # No messageIds: the ids derived from each row keep a second import idempotent.
    customers = write(tmp_path / f"customers{suffix}", CUSTOMERS)
    events = write(
        tmp_path / f"events{suffix}",
        [{k: v for k, v in e.items() if k != "messageId"} for e in EVENTS],
    )
    first = import_customers(workspace=embedded_workspace, path=customers)
    first_events = import_events(workspace=embedded_workspace, path=events)

    again = import_customers(workspace=embedded_workspace, path=customers)
    again_events = import_events(workspace=embedded_workspace, path=events)

    assert (first.stored, first_events.stored) == (3, 3)
    assert (again.stored, again.duplicates) == (0, 3)
    assert (again_events.stored, again_events.duplicates) == (0, 3)
    assert embedded_workspace.events.count() == 6


def test_csv_errors_name_lines_and_store_nothing(
    embedded_workspace: Workspace, tmp_path: Path
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "messageId,event,userId,timestamp,properties\n"
        "e1,Order Completed,u1,2025-01-01T00:00:00Z,{}\n"
        'e2,,u2,2025-01-01T00:00:00Z,"{""a"": 1}"\n'
        "e3,Viewed,,2025-01-01T00:00:00Z,{}\n"
        "e4,Viewed,u4,yesterday,{}\n"
        "e5,Viewed,u5,2025-01-01T00:00:00Z,{not json\n"
        'e6,Viewed,u6,2025-01-01T00:00:00Z,"[1, 2]"\n'
    )

    with pytest.raises(InvalidInputError) as caught:
        import_events(workspace=embedded_workspace, path=path)

    problems = {(p.line, p.field) for p in caught.value.problems}
    assert problems == {
        (3, "event"),
        (4, "userId"),
        (5, "timestamp"),
        (6, "properties"),
        (7, "properties"),
    }
    assert "5 of 6 rows are invalid, nothing was imported" in str(caught.value)
    assert "line 3, event:" in str(caught.value)
    assert embedded_workspace.events.count() == 0


def test_jsonl_errors_name_lines(embedded_workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "customers.jsonl"
    path.write_text(
        '{"userId": "u1", "email": "a@example.com"}\n'
        "\n"
        "{broken\n"
        "[1, 2]\n"
        '{"type": "track", "userId": "u2", "traits": {}}\n'
        '{"email": "nobody@example.com"}\n'
    )

    with pytest.raises(InvalidInputError) as caught:
        import_customers(workspace=embedded_workspace, path=path)

    assert [(p.line, p.field) for p in caught.value.problems] == [
        (3, ""),
        (4, ""),
        (5, "type"),
        (6, "userId"),
    ]
    assert embedded_workspace.events.count() == 0


def test_parquet_errors_name_row_numbers(embedded_workspace: Workspace, tmp_path: Path) -> None:
    rows = [dict(e) for e in EVENTS]
    rows[1]["event"] = ""
    path = write(tmp_path / "events.parquet", rows)

    with pytest.raises(InvalidInputError) as caught:
        import_events(workspace=embedded_workspace, path=path)

    assert [(p.line, p.field) for p in caught.value.problems] == [(2, "event")]
    assert "line 2, event" in str(caught.value)


def test_typed_parquet_columns(embedded_workspace: Workspace, tmp_path: Path) -> None:
    """Native timestamps, structs for properties and decimals are read as JSON values."""
    from decimal import Decimal

    table = pa.table(
        {
            "messageId": ["t1"],
            "event": ["Order Completed"],
            "userId": ["u1"],
            "timestamp": pa.array(
                [datetime(2025, 3, 1, 12, tzinfo=UTC)], pa.timestamp("us", "UTC")
            ),
            "properties": pa.array([{"revenue": 10.0, "sku": "A"}]),
            "coupon": pa.array([Decimal("1.50")], pa.decimal128(5, 2)),
        }
    )
    path = tmp_path / "typed.parquet"
    pq.write_table(table, path)

    import_events(workspace=embedded_workspace, path=path)

    [event] = get_customer(workspace=embedded_workspace, user_id="u1").latest_events
    assert event.timestamp == datetime(2025, 3, 1, 12, tzinfo=UTC)
    # Other columns of a tabular events file are properties.
    assert event.properties == {"revenue": 10.0, "sku": "A", "coupon": 1.5}


def test_large_files_are_stored_in_chunks(
    embedded_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunk and keep limits exercise the streaming store pass.
    monkeypatch.setattr(importer, "CHUNK_ROWS", 7)
    monkeypatch.setattr(importer, "KEEP_ROWS", 10)
    rows = [
        {"event": "Page Viewed", "userId": f"u{i % 9}", "timestamp": f"2025-01-01T00:00:{i:02d}Z"}
        for i in range(50)
    ]
    path = write(tmp_path / "events.csv", rows)
    phases: list[tuple[str, int, int]] = []

    report = import_events(
        workspace=embedded_workspace, path=path, progress=lambda *a: phases.append(a)
    )

    assert (report.rows, report.stored) == (50, 50)
    assert embedded_workspace.events.count() == 50
    assert ("validating", 50, 50) in phases
    assert phases[-1] == ("storing", 50, 50)


def test_format_comes_from_the_extension_or_is_named(
    embedded_workspace: Workspace, tmp_path: Path
) -> None:
    path = write(tmp_path / "customers.csv", CUSTOMERS).rename(tmp_path / "customers.txt")
    with pytest.raises(UserError, match="--format"):
        import_customers(workspace=embedded_workspace, path=path)
    with pytest.raises(UserError, match="unknown format"):
        import_customers(workspace=embedded_workspace, path=path, fmt="xlsx")
    assert import_customers(workspace=embedded_workspace, path=path, fmt="csv").stored == 3
    with pytest.raises(UserError, match="no such file"):
        import_customers(workspace=embedded_workspace, path=tmp_path / "missing.csv")


def test_a_damaged_parquet_file_is_a_user_error(
    embedded_workspace: Workspace, tmp_path: Path
) -> None:
    path = tmp_path / "events.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        import_events(workspace=embedded_workspace, path=path)


def test_summary_after_import(workspace: Workspace, tmp_path: Path) -> None:
    """The summary's Ibis expressions run on both event stores."""
    import_customers(workspace=workspace, path=write(tmp_path / "c.jsonl", CUSTOMERS))
    import_events(workspace=workspace, path=write(tmp_path / "e.jsonl", EVENTS))

    summary = summarise(workspace=workspace)

    assert summary.customers == 4  # three profiles and one anonymous visitor
    assert summary.events == 6
    assert {(c.name, c.events) for c in summary.events_by_name} == {
        ("identify", 3),
        ("Order Completed", 2),
        ("Product Viewed", 1),
    }
    assert [(m.month, m.orders, m.revenue) for m in summary.revenue_by_month] == [
        (date(2025, 1, 1), 1, 120.5),
        (date(2025, 2, 1), 1, 30.0),
    ]
    assert summary.revenue == 150.5


# --- the vectorised Parquet path gives the per-row path's records and errors -----------------


def tricky_events() -> pa.Table:
    """Valid and invalid rows of every kind the vectorised checks must tell apart."""
    base = datetime(2025, 4, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = [
        {"messageId": "ok-1", "event": "Product Viewed", "userId": "u1", "properties": '{"a":1}'},
        {"messageId": "ok-2", "event": "Signed Up", "anonymousId": "a1", "context": '{"ip":"x"}'},
        {"messageId": "ok-3", "event": "Both", "userId": "u1", "anonymousId": "a1"},
        {"messageId": "ok-4", "type": "track", "event": "é" * 200, "userId": "u2"},
        {"messageId": "", "event": "No Id", "userId": "u2"},  # gets a derived id
        {"messageId": "ok-6", "type": "identify", "userId": "u3", "event": "ignored"},
        {"messageId": "ok-7", "event": "Empty Json", "userId": "u3", "properties": ""},
        {"messageId": "bad-1", "event": "", "userId": "u1"},
        {"messageId": "bad-2", "event": "Nobody"},
        {"messageId": "bad-3", "event": "Broken", "userId": "u1", "properties": "{nope"},
        {"messageId": "bad-4", "event": "Array", "userId": "u1", "properties": "[1]"},
        {"messageId": "bad-5", "event": "x" * 201, "userId": "u1"},
        {
            "messageId": "bad-6",
            "event": "Huge",
            "userId": "u1",
            "properties": '{"p":"%s"}' % ("y" * 40_000),
        },
        {"messageId": "bad-7", "type": "teleport", "event": "Odd", "userId": "u1"},
        {"messageId": "m" * 256, "event": "Long Id", "userId": "u1"},
        {"messageId": "bad-9", "event": "Long User", "userId": "u" * 256},
        {"messageId": "ok-8", "event": "Null Time", "userId": "u4"},
    ]
    columns = ["messageId", "type", "event", "userId", "anonymousId", "properties", "context"]
    data: dict[str, Any] = {c: pa.array([r.get(c) for r in rows], pa.string()) for c in columns}
    stamps = [base + timedelta(minutes=i) for i in range(len(rows) - 1)] + [None]
    # A naive timestamp column: both paths read it as UTC.
    data["timestamp"] = pa.array(
        [s.replace(tzinfo=None) if s else None for s in stamps], pa.timestamp("ms")
    )
    return pa.table(data)


def parsed_both_ways(path: Path) -> tuple[list[Any], list[Any]]:
    parser = importer._RowParser(
        kind="events", fmt="parquet", received_at=datetime(2026, 1, 1, tzinfo=UTC), max_bytes=32_768
    )

    def plain(vectorised: bool) -> list[Any]:
        return [
            (line, p.problems if isinstance(p, InvalidInputError) else p)
            for line, p in importer._parsed(path, "parquet", parser, vectorised=vectorised)
        ]

    return plain(True), plain(False)


def test_vectorised_and_per_row_paths_agree_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(tricky_events(), path)

    vectorised, per_row = parsed_both_ways(path)

    assert vectorised == per_row
    rejected = [line for line, p in per_row if isinstance(p, tuple)]
    assert rejected == list(range(8, 17))


def test_vectorised_and_per_row_imports_give_the_same_errors(
    embedded_workspace: Workspace, tmp_path: Path
) -> None:
    path = tmp_path / "events.parquet"
    pq.write_table(tricky_events(), path)

    errors = []
    for vectorised in (True, False):
        with pytest.raises(InvalidInputError) as caught:
            import_events(workspace=embedded_workspace, path=path, vectorised=vectorised)
        errors.append((str(caught.value), caught.value.problems))

    assert errors[0] == errors[1]
    assert embedded_workspace.events.count() == 0


def test_vectorised_and_per_row_imports_store_the_same_events(tmp_path: Path) -> None:
    from orbita.core.settings import Settings
    from orbita.services.workspace import init_workspace, open_workspace

    table = tricky_events().slice(0, 7)  # the valid rows
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    stored = []
    for vectorised in (True, False):
        settings = Settings(workspace=tmp_path / str(vectorised))
        init_workspace(settings=settings)
        with open_workspace(settings=settings) as workspace:
            report = import_events(workspace=workspace, path=path, vectorised=vectorised)
            assert report.vectorised is vectorised
            assert (report.rows, report.stored) == (7, 7)
            events = workspace.events.ibis().table("events")
            rows = (
                events.filter(events.type == "track")
                .select(
                    "message_id",
                    "customer_id",
                    "user_id",
                    "anonymous_id",
                    "name",
                    "timestamp",
                    p=events.properties.cast("string"),
                    c=events.context.cast("string"),
                )
                .order_by("message_id")
                .to_pyarrow()
            )
            stored.append(rows.to_pylist())
    assert stored[0] == stored[1]
    assert len(stored[0]) == 6  # and one identify


def test_generated_events_take_the_vectorised_path(
    embedded_workspace: Workspace, tmp_path: Path
) -> None:
    from orbita.services.generate import generate_store

    generated = generate_store(
        store="clothing-store", customers=40, days=20, seed=5, out=tmp_path / "gen"
    )
    import_customers(workspace=embedded_workspace, path=generated.customers_path)
    vectorised, per_row = parsed_both_ways(generated.events_path)
    assert vectorised == per_row

    report = import_events(workspace=embedded_workspace, path=generated.events_path)

    assert report.vectorised
    assert report.stored == generated.events


def test_jsonl_customers_may_be_full_identify_messages(
    embedded_workspace: Workspace, tmp_path: Path
) -> None:
    path = tmp_path / "customers.jsonl"
    path.write_text(
        '{"type": "identify", "userId": "u1", "traits": {"email": "a@example.com", "vip": true},'
        ' "context": {"timezone": "Europe/Warsaw"}, "timestamp": "2025-01-01T00:00:00Z"}\n'
        '{"userId": "u2", "traits": {"plan": "basic"}}\n'
        '{"userId": "u3", "email": "flat@example.com"}\n'
    )

    report = import_customers(workspace=embedded_workspace, path=path)

    assert report.stored == 3
    first = get_customer(workspace=embedded_workspace, user_id="u1").profile
    assert (first.email, first.traits["vip"], first.timezone) == (
        "a@example.com",
        True,
        "Europe/Warsaw",
    )
    assert get_customer(workspace=embedded_workspace, user_id="u2").profile.traits == {
        "plan": "basic"
    }
    assert get_customer(workspace=embedded_workspace, user_id="u3").profile.email == (
        "flat@example.com"
    )
