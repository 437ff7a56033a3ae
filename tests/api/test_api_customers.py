"""Customers over HTTP: profile, timeline pages, erasure, admin keys, health and OpenAPI."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from live_api import LiveServer, running


def seed(server: LiveServer, messages: list[dict[str, Any]]) -> None:
    with server.writer() as http:
        response = http.post("/v1/batch", json={"batch": messages})
    assert response.status_code == 200, response.text


def views(user_id: str, n: int, *, start: datetime) -> list[dict[str, Any]]:
    return [
        {
            "type": "track",
            "userId": user_id,
            "event": "Product Viewed",
            "messageId": f"{user_id}-{i}",
            "properties": {"n": i},
            "timestamp": (start + timedelta(minutes=i)).isoformat(),
        }
        for i in range(n)
    ]


def test_get_customer(server: LiveServer) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    seed(
        server,
        [
            {
                "type": "identify",
                "userId": "u1",
                "anonymousId": "anon-9",
                "traits": {"email": "ada@example.com", "phone": "+380501234567", "vip": True},
                "context": {"timezone": "Europe/Kyiv", "locale": "uk-UA"},
                "timestamp": (start - timedelta(days=1)).isoformat(),
            },
            *views("u1", 60, start=start),
        ],
    )
    with server.admin() as http:
        response = http.get("/v1/customers/u1")
    assert response.status_code == 200, response.text
    found = response.json()
    profile = found["profile"]
    assert profile["user_id"] == "u1"
    assert profile["email"] == "ada@example.com"
    assert profile["phone"] == "+380501234567"
    assert profile["timezone"] == "Europe/Kyiv"
    assert profile["locale"] == "uk-UA"
    assert profile["anonymous_ids"] == ["anon-9"]
    assert profile["traits"]["vip"] is True
    assert found["events_count"] == 61
    latest = found["latest_events"]
    assert len(latest) == 50
    assert latest[0]["properties"] == {"n": 59}  # newest first
    # The anonymous id finds the same customer.
    with server.admin() as http:
        by_anonymous = http.get("/v1/customers/anon-9").json()
    assert by_anonymous["profile"]["customer_id"] == profile["customer_id"]


def test_cursor_pagination_through_120_events(server: LiveServer) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    seed(server, views("u1", 120, start=start) + views("other", 5, start=start))
    seen: list[int] = []
    pages: list[int] = []
    cursor: str | None = None
    with server.admin() as http:
        while True:
            params: dict[str, Any] = {"limit": 50}
            if cursor:
                params["cursor"] = cursor
            response = http.get("/v1/customers/u1/events", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            pages.append(len(page["events"]))
            seen += [event["properties"]["n"] for event in page["events"]]
            assert all(event["user_id"] == "u1" for event in page["events"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert pages == [50, 50, 20]
    assert seen == list(range(119, -1, -1))  # newest first, each once


def test_events_page_default_limit_and_exact_fit(server: LiveServer) -> None:
    seed(server, views("u1", 100, start=datetime(2026, 1, 1, tzinfo=UTC)))
    with server.admin() as http:
        page = http.get("/v1/customers/u1/events").json()
    assert len(page["events"]) == 100
    assert page["next_cursor"] is None  # exactly one full page: no empty page after it


@pytest.mark.parametrize(
    ("query", "field"),
    [("limit=0", "limit"), ("limit=1001", "limit"), ("limit=many", "limit")],
)
def test_bad_page_parameters_are_400(server: LiveServer, query: str, field: str) -> None:
    seed(server, views("u1", 1, start=datetime(2026, 1, 1, tzinfo=UTC)))
    with server.admin() as http:
        response = http.get(f"/v1/customers/u1/events?{query}")
    assert response.status_code == 400
    assert response.json()["problems"][0]["field"] == field


def test_a_cursor_we_did_not_issue_is_400(server: LiveServer) -> None:
    seed(server, views("u1", 1, start=datetime(2026, 1, 1, tzinfo=UTC)))
    with server.admin() as http:
        response = http.get("/v1/customers/u1/events", params={"cursor": "garbage!"})
    assert response.status_code == 400
    assert "cursor" in response.json()["message"]


def test_delete_erases_profile_and_events(server: LiveServer) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    seed(
        server,
        [
            {
                "type": "identify",
                "userId": "u1",
                "traits": {"email": "ada@example.com"},
            },
            *views("u1", 7, start=start),
            *views("keep", 3, start=start),
        ],
    )
    assert server.count() == 11
    with server.admin() as http:
        customer_id = http.get("/v1/customers/u1").json()["profile"]["customer_id"]
        response = http.delete("/v1/customers/u1")
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["user_id"] == "u1"
        assert report["customer_id"] == customer_id
        assert report["events"] == 8
        assert report["profiles"] == 1
        assert report["identities"] >= 1
        assert http.get("/v1/customers/u1").status_code == 404
        assert http.get("/v1/customers/u1/events").status_code == 404
        again = http.delete("/v1/customers/u1")
        assert again.status_code == 404
        assert again.json()["error"] == "not_found"
        assert http.get("/v1/customers/keep").json()["events_count"] == 3
    assert server.count() == 3
    assert server.workspace.events.count(customer_id=customer_id) == 0


def test_unknown_customer_is_404(server: LiveServer) -> None:
    with server.admin() as http:
        response = http.get("/v1/customers/nobody")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "no customer with id 'nobody'"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/customers/u1"),
        ("GET", "/v1/customers/u1/events"),
        ("DELETE", "/v1/customers/u1"),
    ],
)
def test_customers_need_an_admin_key(server: LiveServer, method: str, path: str) -> None:
    seed(server, views("u1", 1, start=datetime(2026, 1, 1, tzinfo=UTC)))
    with server.client() as http:
        nothing = http.request(method, path)
        wrong = http.request(method, path, headers={"Authorization": "Bearer ak_wrong"})
        write = http.request(
            method, path, headers={"Authorization": f"Bearer {server.keys.write_key}"}
        )
        basic = http.request(method, path, auth=(server.keys.admin_key, ""))
    assert nothing.status_code == 401
    assert nothing.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert write.status_code == 403
    assert write.json()["error"] == "forbidden"
    assert basic.status_code == 401  # admin endpoints take Bearer only
    assert server.count() == 1  # the DELETE did not run


def test_healthz_needs_no_key(server: LiveServer) -> None:
    with server.client() as http:
        response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_openapi_documents_the_api(server: LiveServer) -> None:
    with server.client() as http:
        response = http.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "Orbita"
    paths = spec["paths"]
    for path in ("identify", "track", "page", "screen", "group", "alias", "batch", "import"):
        assert "post" in paths[f"/v1/{path}"]
    assert set(paths["/v1/customers/{user_id}"]) == {"get", "delete"}
    assert "get" in paths["/v1/customers/{user_id}/events"]
    assert "get" in paths["/healthz"]
    schemas = spec["components"]["schemas"]
    assert {"Customer", "Profile", "Event", "EventPage", "Erasure"} <= set(schemas)
    assert {"HTTPBasic", "HTTPBearer"} <= set(spec["components"]["securitySchemes"])
    track_body = paths["/v1/track"]["post"]["requestBody"]["content"]["application/json"]
    assert track_body["schema"]["required"] == ["event"]
    batch_body = paths["/v1/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert len(batch_body["schema"]["properties"]["batch"]["items"]["oneOf"]) == 6


def test_unexpected_errors_are_500_without_internals_or_secrets(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    def explode() -> None:
        raise RuntimeError("internal detail: database password hunter2")

    # A route added to the real app: nothing of Orbita's is replaced.
    server.app.add_api_route("/explode", explode)
    caplog.set_level(logging.DEBUG)
    with server.client() as http:
        response = http.get(
            "/explode", headers={"Authorization": f"Bearer {server.keys.admin_key}"}
        )
    with server.client() as http:  # uvicorn closes a connection that saw an unhandled error
        unauthorised = http.post("/v1/track", auth=("wk_secret_guess", ""), json={})
    assert response.status_code == 500
    assert response.json() == {"error": "internal", "message": "internal server error"}
    assert "hunter2" not in response.text
    assert unauthorised.status_code == 401
    assert "unexpected error on GET /explode" in caplog.text
    for secret in (server.keys.admin_key, server.keys.write_key, "wk_secret_guess"):
        assert secret not in caplog.text


def test_app_opens_and_closes_its_own_workspace(tmp_path: Any) -> None:
    """create_app without a workspace opens the one the settings name, and closes it."""
    from orbita.api.app import create_app
    from orbita.core.settings import Settings
    from orbita.services.workspace import init_workspace, open_workspace

    settings = Settings(workspace=tmp_path / "own")
    keys = init_workspace(settings=settings)
    with running(create_app(settings=settings)) as url:
        import httpx

        with httpx.Client(base_url=url, auth=(keys.write_key, "")) as http:
            assert http.get("/healthz").status_code == 200
            track = {"userId": "u1", "event": "Signed Up"}
            assert http.post("/v1/track", json=track).status_code == 200
    # Closed at shutdown: this process can open the DuckDB file again.
    with open_workspace(settings=settings) as workspace:
        assert workspace.events.count() == 1


def test_user_ids_with_slashes_are_addressable(server: LiveServer) -> None:
    seed(server, views("shop/ann", 3, start=datetime(2026, 1, 1, tzinfo=UTC)))
    with server.admin() as http:
        profile = http.get("/v1/customers/shop%2Fann")
        events = http.get("/v1/customers/shop%2Fann/events", params={"limit": 2})
        erased = http.delete("/v1/customers/shop%2Fann")
    assert profile.status_code == 200, profile.text
    assert profile.json()["profile"]["user_id"] == "shop/ann"
    assert [e["message_id"] for e in events.json()["events"]] == ["shop/ann-2", "shop/ann-1"]
    assert erased.json()["events"] == 3
