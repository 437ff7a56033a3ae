"""/v1/segments on a live server: list, one, members, refresh (admin key only)."""

from __future__ import annotations

from live_api import LiveServer

STRATEGY = """workspace: api
segments:
  buyers: {event: "Order Completed"}
  big: {event: "Order Completed", sum: {revenue: ">= 100"}}
"""


def _orders(server: LiveServer) -> None:
    with server.writer() as client:
        response = client.post(
            "/v1/batch",
            json={
                "batch": [
                    {
                        "type": "track",
                        "event": "Order Completed",
                        "userId": user,
                        "messageId": f"o-{user}",
                        "timestamp": "2026-02-20T10:00:00Z",
                        "properties": {"revenue": revenue},
                    }
                    for user, revenue in (("ann", 150), ("bob", 20))
                ]
            },
        )
    assert response.status_code == 200


def test_refresh_then_read_segments_and_members(clocked_server: LiveServer) -> None:
    server = clocked_server
    (server.workspace.settings.workspace / "strategy.yaml").write_text(STRATEGY)
    _orders(server)
    with server.admin() as admin:
        listed = admin.get("/v1/segments").json()["segments"]
        assert {s["name"]: s["size"] for s in listed} == {"buyers": None, "big": None}

        refreshed = admin.post("/v1/segments/refresh", json={}).json()["refreshed"]
        assert {r["name"]: r["entered"] for r in refreshed} == {"buyers": 2, "big": 1}
        again = admin.post("/v1/segments/refresh", json={"names": ["big"]}).json()
        assert [r["changed"] for r in again["refreshed"]] == [False]

        one = admin.get("/v1/segments/big").json()
        assert one["size"] == 1 and one["refreshed_as_of"].startswith("2026-03-01T12:00:00")
        page = admin.get("/v1/segments/buyers/members", params={"limit": 1}).json()
        assert [m["user_id"] for m in page["members"]] == ["ann"] and page["next_offset"] == 1
        rest = admin.get("/v1/segments/buyers/members", params={"offset": 1}).json()
        assert [m["user_id"] for m in rest["members"]] == ["bob"] and rest["next_offset"] is None

        assert admin.get("/v1/segments/nope").status_code == 404
        assert admin.post("/v1/segments/refresh", json={"names": ["nope"]}).status_code == 404
    with server.writer() as writer:
        assert writer.get("/v1/segments").status_code in (401, 403)


def test_without_a_strategy_file_the_answer_says_so(server: LiveServer) -> None:
    with server.admin() as admin:
        response = admin.get("/v1/segments")
    assert response.status_code == 400
    assert "no strategy file" in response.json()["message"]
