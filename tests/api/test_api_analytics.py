"""/v1/analytics/kpis, /v1/analytics/funnels/{name}, /v1/analytics/cohorts and /v1/goals on a
live server over a generated clothing store (admin key only; bad parameters answer 4xx
naming them)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from live_api import LiveServer, StartServer

from orbita.core.clock import SimulatedClock
from orbita.services.generate import GenerateReport, generate_store
from orbita.services.importer import import_customers, import_events

EXAMPLE = Path(__file__).parents[2] / "examples" / "clothing-store"
END = datetime(2026, 11, 1, tzinfo=UTC)  # the generator's default end
START = END - timedelta(days=28)
RANGE = {"start": START.isoformat(), "end": END.isoformat()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> GenerateReport:
    out = tmp_path_factory.mktemp("api-analytics")
    return generate_store(store="clothing-store", customers=120, days=40, seed=6, out=out)


def _serve(start_server: StartServer, generated: GenerateReport, **kwargs: Any) -> LiveServer:
    server = start_server(clock=SimulatedClock(END), **kwargs)
    import_customers(workspace=server.workspace, path=generated.customers_path)
    import_events(workspace=server.workspace, path=generated.events_path)
    directory = server.workspace.settings.workspace
    shutil.copy(EXAMPLE / "strategy.yaml", directory / "strategy.yaml")
    shutil.copytree(EXAMPLE / "templates", directory / "templates")
    return server


def _orders(generated: GenerateReport) -> list[dict[str, Any]]:
    rows = pq.read_table(generated.events_path).to_pylist()
    return [
        r
        for r in rows
        if r["event"] == "Order Completed" and START <= r["timestamp"].astimezone(UTC) < END
    ]


def test_kpis_funnel_cohorts_and_goals(
    start_server: StartServer, generated: GenerateReport
) -> None:
    server = _serve(start_server, generated)
    orders = _orders(generated)
    with server.admin() as admin:
        answer = admin.get(
            "/v1/analytics/kpis",
            params={"metric": ["orders", "buyers"], "period": "total", **RANGE},
        )
        assert answer.status_code == 200, answer.text
        rows = {r["metric"]: r for r in answer.json()["rows"]}
        assert rows["orders"]["value"] == len(orders) > 0
        assert rows["buyers"]["value"] == len({r["userId"] for r in orders})

        weekly = admin.get("/v1/analytics/kpis", params={"period": "week"}).json()
        assert weekly["end"].startswith("2026-11-01T00:00:00")  # the server's clock
        assert {r["metric"] for r in weekly["rows"]} >= {"orders", "churn_rate", "open_rate"}

        funnel = admin.get("/v1/analytics/funnels/checkout", params=RANGE).json()
        steps = [r for r in funnel["rows"] if r["group"] == ""]
        assert [r["step"] for r in steps] == [1, 2, 3, 4] and steps[-1]["customers"] > 0
        assert funnel["breakdown"] == "stage" and funnel["order"] == "loose"
        buyers = {r["userId"] for r in orders}
        assert steps[-1]["customers"] <= len(buyers)

        cohorts = admin.get("/v1/analytics/cohorts", params={"period": "week", **RANGE}).json()
        zero = [r for r in cohorts["rows"] if r["period"] == 0]
        assert zero and all(r["retention"] == 1.0 for r in zero)

        goals = admin.get("/v1/goals").json()["goals"]
        assert [g["kpi"] for g in goals] == [
            "repeat_purchase_rate",
            "conversion_rate",
            "conversion_rate",
        ]
        assert goals[0]["current"] is not None and len(goals[0]["trend"]) == 13
    with server.writer() as writer:
        assert writer.get("/v1/analytics/kpis").status_code in (401, 403)
        assert writer.get("/v1/goals").status_code in (401, 403)


@pytest.mark.parametrize(
    ("path", "params", "status", "named"),
    [
        ("/v1/analytics/kpis", {"period": "fortnight"}, 400, "period: unknown period"),
        ("/v1/analytics/kpis", {"metric": "opens"}, 400, "metric: unknown KPI 'opens'"),
        ("/v1/analytics/kpis", {"dimension": "colour"}, 400, "dimension: unknown dimension"),
        ("/v1/analytics/kpis", {"start": "2026-10-01T00:00:00"}, 400, "start: "),
        ("/v1/analytics/kpis", {"start": "2026-12-01T00:00:00Z"}, 400, "end: must come after"),
        ("/v1/analytics/funnels/nope", {}, 404, "funnel: unknown funnel 'nope'"),
        ("/v1/analytics/funnels/checkout", {"by": "colour"}, 400, "by: 'colour'"),
        ("/v1/analytics/funnels/checkout", {"by": "segment:vipp"}, 400, "by: unknown segment"),
        ("/v1/analytics/cohorts", {"period": "total"}, 400, "period: cohorts need"),
        ("/v1/analytics/cohorts", {"by": "colour"}, 400, "by: 'colour' is not a cohort"),
        ("/v1/goals", {"as_of": "soon"}, 400, "as_of"),
    ],
)
def test_bad_parameters_are_named(
    clocked_server: LiveServer, path: str, params: dict[str, str], status: int, named: str
) -> None:
    directory = clocked_server.workspace.settings.workspace
    shutil.copy(EXAMPLE / "strategy.yaml", directory / "strategy.yaml")
    shutil.copytree(EXAMPLE / "templates", directory / "templates")
    with clocked_server.admin() as admin:
        answer = admin.get(path, params=params)
    assert answer.status_code == status, answer.text
    assert named in answer.json()["message"]


@pytest.mark.postgres
def test_the_same_figures_on_postgresql(
    start_server: StartServer, generated: GenerateReport, postgres_url: str
) -> None:
    embedded = _serve(start_server, generated)
    on_postgres = _serve(start_server, generated, postgres_url=postgres_url)
    answers = []
    for server in (embedded, on_postgres):
        with server.admin() as admin:
            kpis = admin.get(
                "/v1/analytics/kpis",
                params={"metric": ["orders", "revenue", "repeat_purchase_rate"], **RANGE},
            )
            funnel = admin.get("/v1/analytics/funnels/marketing", params=RANGE)
            cohorts = admin.get("/v1/analytics/cohorts", params=RANGE)
        assert kpis.status_code == funnel.status_code == cohorts.status_code == 200
        answers.append((kpis.json()["rows"], funnel.json()["rows"], cohorts.json()["rows"]))
    (kpis_a, funnel_a, cohorts_a), (kpis_b, funnel_b, cohorts_b) = answers
    assert _close(kpis_a, kpis_b)
    assert funnel_a == funnel_b
    assert _close(cohorts_a, cohorts_b)


def _close(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    """Rows equal, floats to 1e-9 (the engines sum money in different orders)."""
    if len(a) != len(b):
        return False
    for left, right in zip(a, b, strict=True):
        if left.keys() != right.keys():
            return False
        for key, value in left.items():
            other = right[key]
            if isinstance(value, float) and isinstance(other, float | int):
                if abs(value - other) > 1e-9 * max(1.0, abs(value)):
                    return False
            elif value != other:
                return False
    return True
