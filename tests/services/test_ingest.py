"""Ingestion through the real stores: identities, merges, traits, deduplication, group commit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from orbita.core.errors import NotFoundError
from orbita.model.events import EventRecord
from orbita.model.messages import parse_batch
from orbita.services.customers import (
    count_customers,
    customer_events,
    delete_customer,
    get_customer,
)
from orbita.services.identity import IdentityResolver
from orbita.services.ingest import Ingestor, store_records
from orbita.services.journeys import CustomerEvent
from orbita.services.workspace import Workspace

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def batch(*messages: dict[str, Any], at: datetime = T0) -> list[EventRecord]:
    return parse_batch({"batch": list(messages)}, received_at=at)


def test_anonymous_visitor_who_signs_up_keeps_their_history(workspace: Workspace) -> None:
    store_records(
        workspace=workspace,
        records=batch(
            {"type": "page", "anonymousId": "anon-1", "name": "Home", "messageId": "p1"},
            {
                "type": "track",
                "anonymousId": "anon-1",
                "event": "Product Viewed",
                "messageId": "t1",
            },
            {
                "type": "identify",
                "anonymousId": "anon-1",
                "userId": "ann",
                "traits": {
                    "email": "ann@example.com",
                    "first_name": "Ann",
                    "timezone": "Europe/Kyiv",
                },
                "context": {"locale": "uk-UA"},
                "messageId": "i1",
            },
            {"type": "track", "userId": "ann", "event": "Order Completed", "messageId": "t2"},
        ),
    )
    view = get_customer(workspace=workspace, user_id="ann")
    assert view.profile.anonymous_ids == ("anon-1",)
    assert view.profile.email == "ann@example.com"
    assert view.profile.timezone == "Europe/Kyiv"
    assert view.profile.locale == "uk-UA"
    assert view.profile.traits["first_name"] == "Ann"
    assert view.events_count == 4
    assert get_customer(workspace=workspace, user_id="anon-1").profile.customer_id == (
        view.profile.customer_id
    )
    assert count_customers(workspace=workspace) == 1


def test_known_user_seen_on_a_new_device_merges_the_anonymous_profile(
    workspace: Workspace,
) -> None:
    store_records(
        workspace=workspace,
        records=batch(
            {"type": "identify", "userId": "bob", "traits": {"plan": "gold"}, "messageId": "i1"},
            {"type": "track", "anonymousId": "phone", "event": "Product Viewed", "messageId": "t1"},
            {
                "type": "identify",
                "anonymousId": "phone",
                "userId": "bob",
                "traits": {"phone": "+380501234567"},
                "messageId": "i2",
            },
        ),
    )
    assert count_customers(workspace=workspace) == 1
    view = get_customer(workspace=workspace, user_id="bob")
    assert view.events_count == 3
    assert view.profile.phone == "+380501234567"
    assert view.profile.traits["plan"] == "gold"


def test_alias_merges_two_known_profiles_and_moves_events(workspace: Workspace) -> None:
    store_records(
        workspace=workspace,
        records=batch(
            {"type": "track", "userId": "old-id", "event": "A", "messageId": "a"},
            {"type": "track", "userId": "new-id", "event": "B", "messageId": "b"},
        ),
    )
    assert count_customers(workspace=workspace) == 2
    store_records(
        workspace=workspace,
        records=batch(
            {"type": "alias", "previousId": "old-id", "userId": "new-id", "messageId": "al"},
            {"type": "track", "userId": "old-id", "event": "C", "messageId": "c"},
        ),
    )
    assert count_customers(workspace=workspace) == 1
    view = get_customer(workspace=workspace, user_id="new-id")
    assert sorted(e.name or e.type for e in view.latest_events) == ["A", "B", "C", "alias"]
    assert get_customer(workspace=workspace, user_id="old-id").profile.user_id == "new-id"


def test_a_retried_identify_stores_nothing_and_does_not_roll_traits_back(
    workspace: Workspace,
) -> None:
    first = batch({"type": "identify", "userId": "u", "traits": {"tier": "a"}, "messageId": "i1"})
    later = batch({"type": "identify", "userId": "u", "traits": {"tier": "b"}, "messageId": "i2"})
    assert store_records(workspace=workspace, records=first).stored == 1
    store_records(workspace=workspace, records=later)
    retried = store_records(workspace=workspace, records=first)
    assert (retried.stored, retried.duplicates) == (0, 1)
    assert get_customer(workspace=workspace, user_id="u").profile.traits == {"tier": "b"}


def test_created_at_trait_and_invalid_time_zone(workspace: Workspace) -> None:
    store_records(
        workspace=workspace,
        records=batch(
            {
                "type": "identify",
                "userId": "c",
                "traits": {"createdAt": "2025-01-02T03:04:05+00:00", "timezone": "Mars/Olympus"},
                "messageId": "i1",
            }
        ),
    )
    profile = get_customer(workspace=workspace, user_id="c").profile
    assert profile.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert profile.timezone is None  # never schedule by a zone that does not exist
    assert profile.traits["timezone"] == "Mars/Olympus"


def test_group_commit_serves_concurrent_requests_exactly(workspace: Workspace) -> None:
    ingestor = Ingestor(workspace=workspace, max_batch_events=1_000)
    ingestor.start()
    try:

        def send(request: int) -> tuple[int, int]:
            # every request repeats one message of the previous request: a client retry
            messages = [
                {
                    "type": "track",
                    "userId": f"user-{request % 7}",
                    "event": "E",
                    "messageId": f"r{request}-{i}",
                }
                for i in range(50)
            ]
            if request:
                messages.append(
                    {
                        "type": "track",
                        "userId": "user-0",
                        "event": "E",
                        "messageId": f"r{request - 1}-0",
                    }
                )
            result = ingestor.ingest(batch(*messages))
            return result.received, result.stored

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(send, range(40)))
    finally:
        ingestor.close()
    assert sum(received for received, _ in results) == 40 * 50 + 39
    assert sum(stored for _, stored in results) == 40 * 50
    assert workspace.events.count() == 40 * 50
    assert count_customers(workspace=workspace) == 7


def test_on_stored_gets_each_new_event_once_in_order_with_its_customer(
    workspace: Workspace,
) -> None:
    seen: list[CustomerEvent] = []
    ingestor = Ingestor(workspace=workspace, on_stored=seen.extend)
    ingestor.start()
    try:
        ingestor.ingest(
            batch(
                {"type": "page", "anonymousId": "a1", "name": "Home", "messageId": "m1"},
                {
                    "type": "identify",
                    "anonymousId": "a1",
                    "userId": "ann",
                    "traits": {"plan": "pro"},
                    "messageId": "m2",
                },
                {"type": "group", "userId": "ann", "groupId": "g7", "messageId": "m3"},
            )
        )
        # a retry of m2 and m3 beside a new event and a message twice in one request
        result = ingestor.ingest(
            batch(
                {"type": "identify", "userId": "ann", "messageId": "m2"},
                {
                    "type": "track",
                    "userId": "bob",
                    "event": "Order Completed",
                    "properties": {"revenue": 12.5},
                    "messageId": "m4",
                },
                {"type": "group", "userId": "ann", "groupId": "g7", "messageId": "m3"},
                {"type": "track", "userId": "bob", "event": "Order Completed", "messageId": "m4"},
            )
        )
    finally:
        ingestor.close()
    assert (result.stored, result.duplicates) == (1, 3)
    ann = get_customer(workspace=workspace, user_id="ann").profile.customer_id
    bob = get_customer(workspace=workspace, user_id="bob").profile.customer_id
    assert [(e.record.message_id, e.customer_id) for e in seen] == [
        ("m1", ann),
        ("m2", ann),
        ("m3", ann),
        ("m4", bob),
    ]
    assert seen[1].record.properties == {"plan": "pro"}
    assert seen[2].record.group_id == "g7"
    assert seen[3].record.properties == {"revenue": 12.5}
    assert seen[3].record.timestamp.tzinfo is not None


def test_requests_that_come_during_a_write_are_written_together_next(
    workspace: Workspace,
) -> None:
    release = threading.Event()
    writes: list[list[str]] = []

    writing = threading.Event()

    def hold_the_first_write(events: Sequence[CustomerEvent]) -> None:
        writes.append([e.record.message_id for e in events])
        writing.set()
        release.wait(timeout=30)

    ingestor = Ingestor(workspace=workspace, on_stored=hold_the_first_write)
    ingestor.start()
    messages = [
        {"type": "identify", "userId": "bob", "messageId": "m1"},
        {"type": "page", "anonymousId": "a2", "name": "Home", "messageId": "m2"},
        # the message that says the two profiles are one person, then one more event
        {"type": "identify", "userId": "bob", "anonymousId": "a2", "messageId": "m3"},
        {"type": "track", "userId": "bob", "event": "Order Completed", "messageId": "m4"},
    ]

    async def send_one_by_one() -> list[int]:
        results = []
        for message in messages:
            results.append(asyncio.create_task(ingestor.ingest_async(batch(message))))
            await asyncio.sleep(0.3)  # each is waiting before the next comes
            await asyncio.to_thread(writing.wait, 30)  # the first is being written
        release.set()
        return [(await result).stored for result in results]

    try:
        assert asyncio.run(send_one_by_one()) == [1, 1, 1, 1]
    finally:
        ingestor.close()
    # m2 was resolved as soon as it came (the resolver was free); m3 and m4 came while
    # it waited for the writer, and were resolved and written together after it.
    assert writes == [["m1"], ["m2"], ["m3", "m4"]]
    bob = get_customer(workspace=workspace, user_id="bob")
    assert bob.events_count == 4
    assert bob.profile.anonymous_ids == ("a2",)
    assert count_customers(workspace=workspace) == 1


def test_a_failing_on_stored_loses_nothing(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(events: Sequence[CustomerEvent]) -> None:
        raise RuntimeError("journeys are down")

    ingestor = Ingestor(workspace=workspace, on_stored=fail)
    ingestor.start()
    try:
        result = ingestor.ingest(
            batch({"type": "track", "userId": "u", "event": "E", "messageId": "x1"})
        )
        again = ingestor.ingest(
            batch({"type": "track", "userId": "u", "event": "E", "messageId": "x2"})
        )
    finally:
        ingestor.close()
    assert (result.stored, again.stored) == (1, 1)
    assert workspace.events.count() == 2
    assert "on_stored failed for 1 stored events" in caplog.text


def test_erasure_through_the_writer_leaves_nothing_and_a_new_event_starts_afresh(
    workspace: Workspace,
) -> None:
    ingestor = Ingestor(workspace=workspace)
    ingestor.start()
    try:
        ingestor.ingest(
            batch(
                {
                    "type": "identify",
                    "userId": "eve",
                    "anonymousId": "a",
                    "traits": {"email": "e@x.io"},
                },
                {"type": "track", "userId": "eve", "event": "Viewed"},
            )
        )
        report = ingestor.exclusive(lambda: delete_customer(workspace=workspace, user_id="eve"))
        assert (report.profiles, report.identities, report.events) == (1, 2, 2)
        with pytest.raises(NotFoundError):
            get_customer(workspace=workspace, user_id="eve")
        ingestor.ingest(batch({"type": "track", "userId": "eve", "event": "Back"}))
    finally:
        ingestor.close()
    view = get_customer(workspace=workspace, user_id="eve")
    assert view.events_count == 1
    assert view.profile.email is None


def test_event_pages_cover_everything_once(workspace: Workspace) -> None:
    store_records(
        workspace=workspace,
        records=batch(
            *[
                {
                    "type": "track",
                    "userId": "p",
                    "event": "E",
                    "messageId": f"e{i}",
                    "timestamp": (T0 + timedelta(seconds=i // 3)).isoformat(),
                }
                for i in range(120)
            ]
        ),
    )
    seen: list[str] = []
    cursor = None
    while True:
        page = customer_events(workspace=workspace, user_id="p", limit=50, cursor=cursor)
        seen += [event.message_id for event in page.events]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == 120 == len(set(seen))
    stamps = [
        e.timestamp for e in customer_events(workspace=workspace, user_id="p", limit=120).events
    ]
    assert stamps == sorted(stamps, reverse=True)


def test_ids_of_a_merged_profile_follow_it_in_later_writes(workspace: Workspace) -> None:
    """One resolver across writes (as the server's writer has): its cache stays exact."""
    resolver = IdentityResolver()
    store_records(
        workspace=workspace,
        resolver=resolver,
        records=batch(
            {"type": "identify", "userId": "kim", "traits": {"a": 1}, "messageId": "i1"},
            {"type": "track", "anonymousId": "tablet", "event": "Viewed", "messageId": "t1"},
        ),
    )
    store_records(
        workspace=workspace,
        resolver=resolver,
        records=batch(
            {"type": "identify", "userId": "kim", "anonymousId": "tablet", "messageId": "i2"},
        ),
    )
    store_records(
        workspace=workspace,
        resolver=resolver,
        records=batch(
            {"type": "track", "anonymousId": "tablet", "event": "Viewed", "messageId": "t2"},
        ),
    )
    assert count_customers(workspace=workspace) == 1
    view = get_customer(workspace=workspace, user_id="kim")
    assert view.events_count == 4
    assert {event.customer_id for event in view.latest_events} == {view.profile.customer_id}
