"""Both event stores behave the same: dedup, pages, reassign, erase, Ibis access."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from orbita.core.settings import normalise_postgres_url
from orbita.model.events import EventRecord
from orbita.store.events import EventStore, event_table
from orbita.store.events.duckdb_store import DuckDBEventStore
from orbita.store.events.postgres_store import PostgresEventStore

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(params=["duckdb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    opened: EventStore
    if request.param == "duckdb":
        opened = DuckDBEventStore(tmp_path / "events.duckdb")
    else:
        opened = PostgresEventStore(normalise_postgres_url(request.getfixturevalue("postgres_url")))
    yield opened
    opened.close()


def records(n: int, *, prefix: str = "m", name: str = "Product Viewed") -> list[EventRecord]:
    return [
        EventRecord(
            message_id=f"{prefix}{i}",
            type="track",
            name=name,
            user_id="u1",
            anonymous_id=None,
            properties={"i": i, "price": 9.5},
            context={"channel": "web"},
            timestamp=T0 + timedelta(minutes=i),
            received_at=T0 + timedelta(minutes=i, seconds=1),
        )
        for i in range(n)
    ]


def test_append_stores_each_message_id_once(store: EventStore) -> None:
    batch = event_table(records(5), [1] * 5)
    assert len(store.append(batch)) == 5
    assert store.append(batch) == set()
    doubled = event_table(records(3, prefix="d") * 2, [1] * 6)
    assert len(store.append(doubled)) == 3
    assert store.count() == 8
    assert store.counts_by_name() == {"Product Viewed": 8}


def test_pages_go_newest_first_without_gaps_or_repeats(store: EventStore) -> None:
    store.append(event_table(records(25), [7] * 25))
    seen: list[str] = []
    after = None
    while True:
        page = store.page(customer_id=7, limit=10, after=after)
        if not page:
            break
        seen += [event.message_id for event, _ in page]
        after = page[-1][1]
    assert seen == [f"m{i}" for i in reversed(range(25))]
    first = store.page(customer_id=7, limit=1)[0][0]
    assert first.properties == {"i": 24, "price": 9.5}
    assert first.context == {"channel": "web"}
    assert first.timestamp == T0 + timedelta(minutes=24)
    assert first.timestamp.tzinfo is not None


def test_reassign_and_delete(store: EventStore) -> None:
    store.append(event_table(records(4), [1, 1, 2, 3]))
    assert store.reassign(moves={1: 3, 2: 3}) == 3
    assert store.count(customer_id=3) == 4
    assert store.reassign(moves={}) == 0
    assert store.delete_customers(customer_ids=[3]) == 4
    assert store.count() == 0


def test_retries_mixed_with_new_events_store_only_the_new_in_order(store: EventStore) -> None:
    first = records(6)
    store.append(event_table(first[:4], [1] * 4))
    retry = [first[5], first[1], first[4], first[3], first[5]]  # m5 twice, m1 and m3 stored
    assert store.append(event_table(retry, [1] * 5)) == {"m4", "m5"}
    assert store.count() == 6
    assert [e.message_id for e, _ in store.page(customer_id=1, limit=10)] == [
        f"m{i}" for i in reversed(range(6))
    ]


def test_an_erased_event_sent_again_is_stored_again_once(store: EventStore) -> None:
    store.append(event_table(records(3), [1, 1, 2]))
    assert store.delete_customers(customer_ids=[1]) == 2
    assert store.append(event_table(records(3), [3, 3, 3])) == {"m0", "m1"}
    assert store.append(event_table(records(3), [3, 3, 3])) == set()
    assert store.count(customer_id=3) == 2
    assert store.existing_message_ids(["m0", "m1", "m2", "m3"]) == {"m0", "m1", "m2"}


def test_existing_message_ids(store: EventStore) -> None:
    store.append(event_table(records(2), [1, 1]))
    assert store.existing_message_ids(["m0", "m1", "m2"]) == {"m0", "m1"}


def test_ibis_reads_the_same_events(store: EventStore) -> None:
    store.append(event_table(records(6), [1, 1, 1, 2, 2, 2]))
    events = store.ibis().table("events")
    counts = events.group_by("customer_id").agg(n=events.count()).order_by("customer_id")
    assert counts.execute().to_dict("records") == [
        {"customer_id": 1, "n": 3},
        {"customer_id": 2, "n": 3},
    ]


def test_duckdb_deduplicates_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    store = DuckDBEventStore(path)
    store.append(event_table(records(3), [1] * 3))
    store.close()
    store = DuckDBEventStore(path)
    try:
        assert store.append(event_table(records(5), [1] * 5)) == {"m3", "m4"}
        assert store.count() == 5
    finally:
        store.close()


def test_duckdb_rehashes_keys_when_the_hash_function_changes(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    store = DuckDBEventStore(path)
    store.append(event_table(records(3), [1] * 3))
    store.close()
    # what a DuckDB release hashing differently would look like: every stored key is stale
    con = duckdb.connect(str(path))
    con.execute("UPDATE events SET message_key = message_key + 1")
    con.execute("UPDATE event_key_hash SET probe = probe + 1")
    con.close()
    store = DuckDBEventStore(path)
    try:
        assert store.append(event_table(records(4), [1] * 4)) == {"m3"}
        assert store.count() == 4
    finally:
        store.close()


def test_duckdb_store_of_the_earlier_layout_is_moved_over(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE events (message_key UHUGEINT PRIMARY KEY, message_id VARCHAR NOT NULL, "
        "customer_id BIGINT NOT NULL, user_id VARCHAR, anonymous_id VARCHAR, "
        "type VARCHAR NOT NULL, name VARCHAR, properties JSON NOT NULL, context JSON NOT NULL, "
        "timestamp TIMESTAMPTZ NOT NULL, received_at TIMESTAMPTZ NOT NULL)"
    )
    old = event_table(records(3), [4] * 3)
    con.register("old", old)
    con.execute("INSERT INTO events SELECT md5_number(message_id), * FROM old")
    con.close()
    store = DuckDBEventStore(path)
    try:
        assert store.append(event_table(records(4), [4] * 4)) == {"m3"}
        assert [e.message_id for e, _ in store.page(customer_id=4, limit=9)] == [
            "m3",
            "m2",
            "m1",
            "m0",
        ]
    finally:
        store.close()


def test_a_second_process_is_told_who_holds_the_duckdb_file(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    holder = DuckDBEventStore(path)
    try:
        script = (
            "from pathlib import Path\n"
            "from orbita.core.errors import StoreLockedError\n"
            "from orbita.store.events.duckdb_store import DuckDBEventStore\n"
            "try:\n"
            f"    DuckDBEventStore(Path({str(path)!r}))\n"
            "except StoreLockedError as error:\n"
            "    print(error)\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
        assert f"in use by process {os.getpid()}" in out
        assert str(path) in out
    finally:
        holder.close()


def test_reads_and_writes_interleave_on_one_thread(store: EventStore) -> None:
    # A count left half-read on DuckDB 2's cursor used to break the next append.
    store.append(event_table(records(2), [1, 1]))
    assert store.count() == 2
    assert store.count(customer_id=1) == 2
    assert len(store.append(event_table(records(2, prefix="x"), [1, 1]))) == 2
    assert store.delete_customers(customer_ids=[1]) == 4
    assert len(store.append(event_table(records(1, prefix="y"), [2]))) == 1


def test_events_of_reads_a_window_of_one_name_for_some_customers(store: EventStore) -> None:
    store.append(event_table(records(6), [1, 2, 3, 1, 2, 3]))
    store.append(event_table(records(2, prefix="o", name="Order Completed"), [1, 2]))

    found = store.events_of(
        customer_ids=[1, 2],
        name="Product Viewed",
        kind="track",
        start=T0 + timedelta(minutes=0),  # exclusive
        end=T0 + timedelta(minutes=4),  # inclusive
    )

    rows = sorted(found.to_pylist(), key=lambda row: row["message_id"])
    assert [(r["customer_id"], r["message_id"]) for r in rows] == [(2, "m1"), (1, "m3"), (2, "m4")]
    assert '"price": 9.5' in rows[0]["properties"].replace('":9.5', '": 9.5')
    assert rows[0]["timestamp"] == T0 + timedelta(minutes=1)
    everything = store.events_of(
        customer_ids=[3],
        name="Product Viewed",
        kind="track",
        start=None,
        end=T0 + timedelta(days=1),
    )
    assert sorted(everything.column("message_id").to_pylist()) == ["m2", "m5"]
