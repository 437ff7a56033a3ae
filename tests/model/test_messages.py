"""Segment message validation and normalisation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from orbita.core.errors import InvalidInputError, TooLargeError
from orbita.model.messages import parse_batch, parse_batch_json, parse_message

RECEIVED = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_track_is_normalised_with_batch_context_and_string_ids() -> None:
    [record] = parse_batch(
        {
            "batch": [
                {
                    "type": "track",
                    "event": "Product Viewed",
                    "userId": 42,
                    "messageId": "m-1",
                    "properties": {"sku": "A1"},
                    "context": {"ip": "10.0.0.1"},
                }
            ],
            "context": {"library": {"name": "analytics-python"}, "ip": "ignored"},
        },
        received_at=RECEIVED,
    )
    assert record.type == "track"
    assert record.name == "Product Viewed"
    assert record.user_id == "42"
    assert record.properties == {"sku": "A1"}
    assert record.context == {"library": {"name": "analytics-python"}, "ip": "10.0.0.1"}
    assert record.timestamp == RECEIVED  # no timestamp given: when it arrived


def test_clock_skew_is_corrected_from_sent_at() -> None:
    # The device clock runs 1 hour fast: it says the event happened at 13:00 and was sent
    # at 13:00:10; it arrived at 12:00:10 by the server's clock.
    record = parse_message(
        {
            "type": "track",
            "event": "Signed In",
            "userId": "u",
            "timestamp": "2026-05-01T13:00:00+00:00",
            "sentAt": "2026-05-01T13:00:10Z",
        },
        received_at=RECEIVED + timedelta(seconds=10),
    )
    assert record.timestamp == RECEIVED


def test_batch_sent_at_applies_to_every_message() -> None:
    records = parse_batch(
        {
            "batch": [
                {"type": "track", "event": "A", "userId": "u", "timestamp": "2026-05-01T10:00:00Z"}
            ],
            "sentAt": "2026-05-01T10:00:05Z",
        },
        received_at=RECEIVED,
    )
    assert records[0].timestamp == RECEIVED - timedelta(seconds=5)


def test_zone_offsets_are_kept_and_naive_times_read_as_utc() -> None:
    kyiv = parse_message(
        {"type": "track", "event": "A", "userId": "u", "timestamp": "2026-05-01T15:00:00+03:00"},
        received_at=RECEIVED,
    )
    naive = parse_message(
        {"type": "track", "event": "A", "userId": "u", "timestamp": "2026-05-01T12:00:00"},
        received_at=RECEIVED,
    )
    assert kyiv.timestamp == naive.timestamp == RECEIVED


def test_a_batch_names_every_bad_item_by_index_and_field() -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_batch(
            {
                "batch": [
                    {"type": "track", "event": "ok", "userId": "u"},
                    {"type": "track", "userId": "u"},
                    {"type": "identify", "userId": "u"},
                    {"type": "track", "event": "x"},
                    {"type": "alias", "userId": "u"},
                    {"type": "nope", "userId": "u"},
                    7,
                    {"type": "track", "event": "e", "userId": "u", "timestamp": "yesterday"},
                ]
            },
            received_at=RECEIVED,
        )
    found = {(p.index, p.field) for p in raised.value.problems}
    assert found == {
        (1, "event"),
        (3, "userId"),
        (4, "previousId"),
        (5, "type"),
        (6, ""),
        (7, "timestamp"),
    }


def test_endpoint_kind_must_match_the_body_type() -> None:
    with pytest.raises(InvalidInputError) as raised:
        parse_message({"type": "identify", "userId": "u"}, received_at=RECEIVED, kind="track")
    assert raised.value.problems[0].field == "type"
    record = parse_message(
        {"userId": "u", "traits": {"a": 1}}, received_at=RECEIVED, kind="identify"
    )
    assert record.type == "identify" and record.properties == {"a": 1}


def test_oversized_message_is_too_large() -> None:
    big = {"type": "track", "event": "A", "userId": "u", "properties": {"blob": "x" * 40_000}}
    with pytest.raises(TooLargeError):
        parse_batch({"batch": [big]}, received_at=RECEIVED, max_message_bytes=32 * 1024)


def test_page_keeps_its_name_and_category() -> None:
    record = parse_message(
        {"type": "page", "anonymousId": "a", "name": "Home", "category": "Shop"},
        received_at=RECEIVED,
    )
    assert record.name == "Home"
    assert record.properties == {"category": "Shop"}
    assert record.user_id is None and record.anonymous_id == "a"


def test_the_json_fast_path_gives_the_same_records_and_the_same_errors() -> None:
    body = {
        "batch": [
            {
                "type": "track",
                "event": "A",
                "userId": 7,
                "messageId": "m1",
                "timestamp": "2026-05-01T10:00:00",
                "properties": {"p": 1},
            },
            {"type": "identify", "anonymousId": "a", "traits": {"t": True}, "messageId": "m2"},
            {"type": "alias", "previousId": 5, "userId": "u", "messageId": "m3"},
        ],
        "sentAt": "2026-05-01T10:00:05Z",
        "context": {"ip": "10.0.0.1"},
    }
    fast = parse_batch_json(orjson.dumps(body), received_at=RECEIVED)
    assert fast == parse_batch(body, received_at=RECEIVED)
    assert fast[0].user_id == "7" and fast[2].previous_id == "5"
    assert fast[0].timestamp == RECEIVED - timedelta(seconds=5)

    bad = {"batch": [{"type": "track", "userId": "u"}, {"type": "track", "event": "x"}]}
    with pytest.raises(InvalidInputError) as raised:
        parse_batch_json(orjson.dumps(bad), received_at=RECEIVED)
    assert {(p.index, p.field) for p in raised.value.problems} == {(0, "event"), (1, "userId")}
    with pytest.raises(InvalidInputError):
        parse_batch_json(b"{not json", received_at=RECEIVED)


def test_the_json_fast_path_measures_each_message() -> None:
    small = {"type": "track", "event": "A", "userId": "u"}
    big = {**small, "properties": {"blob": "x" * 40_000}}
    with pytest.raises(TooLargeError) as raised:
        parse_batch_json(
            orjson.dumps({"batch": [small, big]}), received_at=RECEIVED, max_message_bytes=32_768
        )
    assert [p.index for p in raised.value.problems] == [1]
