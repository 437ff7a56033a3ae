"""Segment-compatible ingestion over HTTP, against a real server on loopback."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from live_api import SERVER_NOW, LiveServer, StartServer
from segment.analytics import Client as SegmentClient
from segment.analytics.request import APIError


def track(user_id: str = "u1", **fields: Any) -> dict[str, Any]:
    return {"type": "track", "userId": user_id, "event": "Product Viewed", **fields}


def customer(server: LiveServer, user_id: str) -> dict[str, Any]:
    with server.admin() as http:
        response = http.get(f"/v1/customers/{user_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def send_with_segment_client(server: LiveServer, client: SegmentClient) -> None:
    """Identify, track, page and alias as an application using Segment's SDK would."""
    client.track(anonymous_id="anon-1", event="Product Viewed", properties={"sku": "A-1"})
    client.alias(previous_id="anon-1", user_id="u1")
    client.identify("u1", traits={"email": "ada@example.com", "first_name": "Ada", "plan": "pro"})
    client.track("u1", "Order Completed", {"revenue": 42.5, "currency": "EUR"})
    client.page("u1", category="Docs", name="Pricing", properties={"path": "/pricing"})


def check_customer_u1(server: LiveServer) -> None:
    found = customer(server, "u1")
    profile = found["profile"]
    assert profile["user_id"] == "u1"
    assert profile["email"] == "ada@example.com"
    assert profile["traits"]["first_name"] == "Ada"
    assert "anon-1" in profile["anonymous_ids"]
    # The anonymous view before the alias belongs to u1 too.
    assert found["events_count"] == 5
    events = found["latest_events"]
    names = {(e["type"], e["name"]) for e in events}
    assert names == {
        ("track", "Product Viewed"),
        ("alias", None),
        ("identify", None),
        ("track", "Order Completed"),
        ("page", "Pricing"),
    }
    order = next(e for e in events if e["name"] == "Order Completed")
    assert order["properties"] == {"revenue": 42.5, "currency": "EUR"}
    page = next(e for e in events if e["type"] == "page")
    assert page["properties"] == {"category": "Docs", "path": "/pricing"}
    assert order["context"]["library"]["name"] == "analytics-python"
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps, reverse=True)


@pytest.mark.parametrize(
    "backend", ["embedded", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_segment_client_round_trip(
    backend: str, start_server: StartServer, request: pytest.FixtureRequest
) -> None:
    postgres_url = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    server = start_server(postgres_url=postgres_url)
    client = SegmentClient(server.keys.write_key, host=server.url, sync_mode=True, max_retries=0)
    send_with_segment_client(server, client)
    assert server.count() == 5
    check_customer_u1(server)


def test_segment_client_batches_with_gzip(server: LiveServer) -> None:
    """The SDK's default mode: a background thread batching messages, gzip bodies."""
    errors: list[Exception] = []
    client = SegmentClient(
        server.keys.write_key,
        host=server.url,
        gzip=True,
        max_retries=0,
        upload_interval=0.05,
        on_error=lambda error, _batch: errors.append(error),
    )
    try:
        send_with_segment_client(server, client)
        client.flush()
    finally:
        client.shutdown()
    assert errors == []
    check_customer_u1(server)


def test_segment_client_with_a_wrong_key_gets_401(server: LiveServer) -> None:
    client = SegmentClient("wk_wrong", host=server.url, sync_mode=True, max_retries=0)
    with pytest.raises(APIError) as raised:
        client.track("u1", "Product Viewed")
    assert raised.value.status == 401
    assert server.count() == 0


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        ("/v1/identify", {"userId": "u1", "traits": {"email": "a@example.com"}}, "identify"),
        ("/v1/track", {"userId": "u1", "event": "Signed Up"}, "track"),
        ("/v1/page", {"anonymousId": "a1", "name": "Home"}, "page"),
        ("/v1/screen", {"userId": "u1", "name": "Settings"}, "screen"),
        ("/v1/group", {"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}}, "group"),
        ("/v1/alias", {"userId": "u1", "previousId": "a1"}, "alias"),
    ],
)
def test_single_message_endpoints(
    server: LiveServer, path: str, body: dict[str, Any], kind: str
) -> None:
    with server.writer() as http:
        response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True}
    assert server.count() == 1
    user = body.get("userId") or body.get("anonymousId")
    assert customer(server, str(user))["latest_events"][0]["type"] == kind


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/import"])
def test_batch_and_import(server: LiveServer, path: str) -> None:
    batch = [track(f"u{i}") for i in range(10)]
    with server.writer() as http:
        response = http.post(path, json={"batch": batch, "context": {"app": {"name": "shop"}}})
    assert response.status_code == 200, response.text
    assert server.count() == 10
    event = customer(server, "u3")["latest_events"][0]
    assert event["context"]["app"] == {"name": "shop"}  # batch context applies to each message


def test_single_endpoint_refuses_another_type(server: LiveServer) -> None:
    with server.writer() as http:
        response = http.post("/v1/track", json={"type": "identify", "userId": "u1"})
    assert response.status_code == 400
    assert response.json()["problems"] == [
        {"index": None, "field": "type", "message": "must be 'track' here"}
    ]


def test_gzip_body(server: LiveServer) -> None:
    body = gzip.compress(json.dumps({"batch": [track(), track("u2")]}).encode())
    with server.writer() as http:
        response = http.post(
            "/v1/batch",
            content=body,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )
    assert response.status_code == 200, response.text
    assert server.count() == 2


def test_gzip_bomb_is_refused_without_inflating_it(server: LiveServer) -> None:
    # 50 MB of JSON whitespace squeezes into about 50 KB of gzip: under the body limit.
    bomb = gzip.compress(b'{"batch": []' + b" " * 50_000_000 + b"}", compresslevel=9)
    assert len(bomb) < server.workspace.settings.max_batch_bytes
    with server.writer() as http:
        response = http.post("/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


@pytest.mark.parametrize(
    "body",
    [b"not gzip at all", gzip.compress(b'{"batch": []}')[:-6]],
    ids=["not-gzip", "truncated"],
)
def test_broken_gzip_is_400(server: LiveServer, body: bytes) -> None:
    with server.writer() as http:
        response = http.post("/v1/batch", content=body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "gzip" in response.json()["message"]


def test_unknown_content_encoding_is_415(server: LiveServer) -> None:
    with server.writer() as http:
        response = http.post("/v1/batch", content=b"{}", headers={"Content-Encoding": "br"})
    assert response.status_code == 415


def test_duplicate_message_id_is_stored_once(server: LiveServer) -> None:
    message = track(messageId="m-1", properties={"sku": "A-1"})
    with server.writer() as http:
        first = http.post("/v1/track", json=message)
        again = http.post("/v1/batch", json={"batch": [message, message]})
    assert first.status_code == again.status_code == 200
    assert server.count() == 1
    assert customer(server, "u1")["events_count"] == 1


AuthCase = Callable[[LiveServer], dict[str, Any]]


def _basic(key: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{key}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("case", "status"),
    [
        (lambda s: {"headers": {"Authorization": _basic(s.keys.write_key)}}, 200),
        (lambda s: {"body": {"writeKey": s.keys.write_key}}, 200),
        (lambda s: {"headers": {"Authorization": _basic(s.keys.admin_key)}}, 200),
        (lambda s: {"headers": {"Authorization": _basic("wk_wrong")}}, 401),
        (lambda s: {"body": {"writeKey": "wk_wrong"}}, 401),
        (lambda s: {"body": {"writeKey": 12}}, 401),
        (lambda s: {}, 401),
        # A wrong header is not rescued by a right key in the body.
        (
            lambda s: {
                "headers": {"Authorization": _basic("wk_wrong")},
                "body": {"writeKey": s.keys.write_key},
            },
            401,
        ),
        (lambda s: {"headers": {"Authorization": "Basic !!!not-base64"}}, 401),
    ],
    ids=[
        "basic",
        "writeKey-in-body",
        "admin-key-writes-too",
        "wrong-basic",
        "wrong-writeKey",
        "writeKey-not-a-string",
        "none",
        "wrong-header-right-body",
        "malformed-basic",
    ],
)
def test_ingestion_auth(server: LiveServer, case: AuthCase, status: int) -> None:
    given = case(server)
    body = {**track(), **given.get("body", {})}
    with server.client() as http:
        response = http.post("/v1/track", json=body, headers=given.get("headers", {}))
    assert response.status_code == status, response.text
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert response.json()["error"] == "unauthorized"
        assert server.keys.write_key not in response.text
    assert server.count() == (1 if status == 200 else 0)


def test_batch_with_bad_items_names_each_and_stores_nothing(server: LiveServer) -> None:
    with server.writer() as http:
        assert http.post("/v1/track", json=track("before")).status_code == 200
        before = server.count()
        batch = [
            track("ok-0"),
            {"type": "track", "userId": "bad-1"},  # no event name
            track("ok-2"),
            {"type": "track", "event": "Product Viewed"},  # nobody: no userId nor anonymousId
            {"type": "purchase", "userId": "bad-4"},  # not a Segment type
            track("ok-5"),
        ]
        response = http.post("/v1/batch", json={"batch": batch})
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "invalid"
    problems = answer["problems"]
    assert [p["index"] for p in problems] == [1, 3, 4]
    assert [p["field"] for p in problems] == ["event", "userId", "type"]
    assert all(p["message"] for p in problems)
    assert server.count() == before
    with server.admin() as http:
        assert http.get("/v1/customers/ok-0").status_code == 404


def test_batch_that_is_not_a_batch(server: LiveServer) -> None:
    with server.writer() as http:
        missing = http.post("/v1/batch", json={"messages": []})
        not_object = http.post("/v1/batch", json=[track()])
    assert missing.status_code == 400
    assert missing.json()["problems"][0]["field"] == "batch"
    assert not_object.status_code == 400


@pytest.mark.parametrize(
    "body", [b"{not json", b"", b'{"batch": [}'], ids=["broken", "empty", "unclosed"]
)
def test_invalid_json_is_400(server: LiveServer, body: bytes) -> None:
    with server.writer() as http:
        response = http.post("/v1/batch", content=body)
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "invalid"
    assert "JSON" in answer["message"]


def test_a_message_over_32_kb_is_413(server: LiveServer) -> None:
    big = track(properties={"blob": "x" * (33 * 1024)})
    with server.writer() as http:
        single = http.post("/v1/track", json=big)
        in_batch = http.post("/v1/batch", json={"batch": [track(), big]})
    assert single.status_code == 413
    assert in_batch.status_code == 413
    assert in_batch.json()["problems"][0]["index"] == 1
    assert server.count() == 0


def test_a_request_over_500_kb_is_413(server: LiveServer) -> None:
    # Each message is under 32 KB; together they are over 500 KB.
    batch = [track(f"u{i}", properties={"blob": "x" * 20_000}) for i in range(30)]
    with server.writer() as http:
        response = http.post("/v1/batch", json={"batch": batch})
    assert response.status_code == 413
    assert server.count() == 0


def test_a_body_over_the_limit_without_content_length_is_413(server: LiveServer) -> None:
    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 10_000  # a chunked body: no Content-Length to refuse it by

    with server.writer() as http:
        response = http.post("/v1/batch", content=chunks())
    assert response.status_code == 413


def test_received_at_is_the_server_clock_and_skew_is_corrected(
    clocked_server: LiveServer,
) -> None:
    """timestamp = receivedAt - (sentAt - timestamp): the device clock's error cancels out."""
    server = clocked_server
    with server.writer() as http:
        # The device's clock is 2 hours behind; the event happened 30 minutes before sending.
        skewed = http.post(
            "/v1/track",
            json=track(
                "skewed",
                timestamp="2026-03-01T09:30:00Z",
                sentAt="2026-03-01T10:00:00Z",
            ),
        )
        # Batch-level sentAt applies to every message in it.
        batched = http.post(
            "/v1/batch",
            json={
                "sentAt": "2026-03-01T14:00:00+02:00",
                "batch": [track("batched", timestamp="2026-03-01T13:59:00+02:00")],
            },
        )
        # No sentAt: the timestamp is taken as given; no timestamp either: it is receivedAt.
        as_given = http.post("/v1/track", json=track("given", timestamp="2026-02-01T08:00:00Z"))
        unstamped = http.post("/v1/track", json=track("unstamped"))
    assert {r.status_code for r in (skewed, batched, as_given, unstamped)} == {200}

    def stored(user_id: str) -> dict[str, Any]:
        event: dict[str, Any] = customer(server, user_id)["latest_events"][0]
        assert event["received_at"] == "2026-03-01T12:00:00Z"
        return event

    assert stored("skewed")["timestamp"] == "2026-03-01T11:30:00Z"
    assert stored("batched")["timestamp"] == "2026-03-01T11:59:00Z"
    assert stored("given")["timestamp"] == "2026-02-01T08:00:00Z"
    assert stored("unstamped")["timestamp"] == SERVER_NOW.isoformat().replace("+00:00", "Z")


def test_concurrent_requests_are_all_stored(server: LiveServer) -> None:
    """Many requests at once: the group commit coalesces them and loses none."""
    import concurrent.futures

    def send(n: int) -> int:
        batch = [track(f"c{n % 7}", messageId=f"{n}-{i}") for i in range(25)]
        with server.writer() as http:
            return http.post("/v1/batch", json={"batch": batch}).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(send, range(40)))
    assert statuses == [200] * 40
    assert server.count() == 1000


def test_unauthenticated_body_is_not_read_as_json(server: LiveServer) -> None:
    """Without a key, garbage is refused as unauthorised, not parsed and explained."""
    with server.client() as http:
        response = http.post("/v1/batch", content=b"{not json")
    assert response.status_code == 401


def test_message_id_is_generated_when_missing(server: LiveServer) -> None:
    with server.writer() as http:
        http.post("/v1/track", json=track())
        http.post("/v1/track", json=track())
    events = customer(server, "u1")["latest_events"]
    assert len(events) == 2
    assert all(uuid.UUID(e["message_id"]) for e in events)


def test_wrong_method_and_unknown_path(server: LiveServer) -> None:
    with server.writer() as http:
        method = http.get("/v1/track")
        missing = http.post("/v1/nothing", json={})
    assert method.status_code == 405
    assert method.json()["error"] == "method_not_allowed"
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


def test_batches_prepared_in_worker_processes_store_and_explain_the_same(
    start_server: StartServer,
) -> None:
    """`orbita serve` validates /v1/batch bodies in worker processes: same answers."""
    server = start_server(parse_workers=2)
    good = [track(f"w-{i}") for i in range(3)]
    good.append({"type": "identify", "userId": "w-0", "traits": {"email": "w0@example.com"}})
    with server.writer() as http:
        stored = http.post("/v1/batch", json={"batch": good})
        bad = http.post(
            "/v1/batch", json={"batch": [track("w-9"), {"type": "track", "userId": "x"}]}
        )
        huge = http.post(
            "/v1/batch",
            json={"batch": [{**track("w-8"), "properties": {"blob": "x" * 40_000}}]},
        )
    assert stored.status_code == 200, stored.text
    assert bad.status_code == 400
    assert [(p["index"], p["field"]) for p in bad.json()["problems"]] == [(1, "event")]
    assert huge.status_code == 413
    assert server.count() == 4
    with server.admin() as http:
        profile = http.get("/v1/customers/w-0").json()["profile"]
    assert profile["email"] == "w0@example.com"
