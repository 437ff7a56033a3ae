"""LTV on a generated clothing store: the fit recovers the generator's BTYD parameters, the
holdout check is close, and the LTV traits written into profiles select in segments."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from orbita.analytics.ltv import fit_bgnbd, fit_gamma_gamma
from orbita.analytics.ltv.data import PurchaseEvent, calibration, histories, purchase_days
from orbita.api.app import create_app
from orbita.cli.main import app
from orbita.core.errors import UserError
from orbita.core.settings import Settings
from orbita.model.strategy import parse_strategy
from orbita.services.generate import generate_store
from orbita.services.importer import import_customers, import_events
from orbita.services.ltv import as_json, ltv_report
from orbita.services.segments import preview_segment, refresh_segments
from orbita.services.workspace import Workspace, init_workspace, open_workspace
from orbita.simulation.btyd import BGNBD, GammaGamma, simulate_repeats
from orbita.store.state import customers

# the real uvicorn runner the API tests use (tests/api/live_api.py)
sys.path.insert(0, str(Path(__file__).parents[1] / "api"))
from live_api import running

DAYS = 365
# the clothing store's BTYD parameters (simulation/clothing.py)
BTYD_PURCHASES = BGNBD(r=0.6, alpha=90.0, a=1.6, b=5.0)
BTYD_SPEND = GammaGamma(p=4.5, q=3.5, gamma=45.0)

STRATEGY = """
workspace: shop
segments:
  high_value: {trait: ltv_tier, eq: high}
  likely_lost: {trait: churn_probability, gte: 0.5}
  predicted_lost: {predicted: churn_probability, gte: 0.5}
  predicted_valuable: {predicted: ltv, gte: 100}
stages:
  - {name: new, segment: {trait: expected_purchases_6m, gte: 0.5}}
ltv:
  horizon_months: 6
  tiers: {high: 0.8, medium: 0.4, low: 0}
"""


@dataclass(frozen=True)
class Store:
    settings: Settings
    truth: dict[str, Any]

    @contextmanager
    def workspace(self) -> Iterator[Workspace]:
        with open_workspace(settings=self.settings) as workspace:
            yield workspace


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """2,000 customers over a year; only the orders are imported (the rest is not read)."""
    root = tmp_path_factory.mktemp("ltv")
    report = generate_store(
        store="clothing-store", customers=2000, days=DAYS, seed=3, out=root / "data"
    )
    events = pq.read_table(report.events_path)
    orders = events.filter(pc.equal(events.column("event"), "Order Completed"))
    pq.write_table(orders, root / "orders.parquet")
    settings = Settings(workspace=root / "workspace")
    init_workspace(settings=settings)
    with open_workspace(settings=settings) as workspace:
        import_customers(workspace=workspace, path=report.customers_path)
        import_events(workspace=workspace, path=root / "orders.parquet")
    return Store(settings, json.loads(report.truth_path.read_text()))


def last_order(workspace: Workspace) -> datetime:
    days = purchase_days(
        workspace.events, purchase=PurchaseEvent(), end=datetime(2100, 1, 1, tzinfo=UTC)
    )
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(days=int(days.day.max()) + 1)


def test_fit_recovers_the_generators_parameters(store: Store) -> None:
    with store.workspace() as workspace:
        end = last_order(workspace)
        days = purchase_days(workspace.events, purchase=PurchaseEvent(), end=end)
    truth = store.truth
    summary = histories(days, cutoff=end)
    assert summary.customers > 900 and (summary.x > 0).sum() > 300
    fit = fit_bgnbd(summary.x, summary.t_x, summary.T)
    btyd = truth["btyd"]
    for name in ("r", "alpha", "a", "b"):
        estimate = fit.params[name]
        assert abs(estimate.value - btyd[name]) < 3 * estimate.standard_error, name
    # the purchase rate is well identified: within 15 %
    assert fit.params["r"].value / fit.params["alpha"].value == pytest.approx(
        btyd["r"] / btyd["alpha"], rel=0.15
    )
    # order values: revenue is the Gamma-Gamma subtotal less coupons, so compare the mean
    spend = fit_gamma_gamma(summary.x, summary.monetary).model
    assert spend.mean_value == pytest.approx(truth["gamma_gamma"]["mean_order_value"], rel=0.15)


def test_calibration_is_close_in_the_holdout(store: Store) -> None:
    with store.workspace() as workspace:
        cutoff = last_order(workspace) - timedelta(days=DAYS // 3)
        checked = calibration(workspace.events, cutoff=cutoff)
    assert checked.holdout_days >= DAYS // 3
    assert [b.repeat_purchases for b in checked.buckets] == [*"0123456", "7+"]
    assert sum(b.customers for b in checked.buckets) == checked.customers
    assert checked.predicted_total == pytest.approx(checked.actual_total, rel=0.15)
    # the well-populated buckets are each close, and more past purchases predict more
    big = [b for b in checked.buckets if b.customers >= 100]
    assert len(big) >= 2
    for bucket in big:
        assert bucket.predicted == pytest.approx(bucket.actual, rel=0.25), bucket
    assert big[-1].predicted > big[0].predicted


def test_calibration_refuses_a_cutoff_after_the_data(store: Store) -> None:
    with store.workspace() as workspace:
        with pytest.raises(UserError, match="cutoff"):
            calibration(workspace.events, cutoff=last_order(workspace) + timedelta(days=30))
        with pytest.raises(UserError, match="cutoff"):
            calibration(workspace.events, cutoff=datetime(2000, 1, 1, tzinfo=UTC))


def test_ltv_traits_select_in_segments(store: Store) -> None:
    with store.workspace() as workspace:
        traits_select_in_segments(workspace)


def profiles_of(workspace: Workspace) -> dict[int, dict[str, Any]]:
    with workspace.state.connect() as connection:
        rows = connection.execute(select(customers.c.customer_id, customers.c.traits))
        return {cid: dict(traits or {}) for cid, traits in rows}


def traits_select_in_segments(workspace: Workspace) -> None:
    strategy = parse_strategy(STRATEGY, source="strategy.yaml")
    before = profiles_of(workspace)
    as_of = last_order(workspace)
    report = ltv_report(workspace=workspace, strategy=strategy, as_of=as_of, write_traits=True)
    assert report.written == report.customers
    tiers = {g.name: g for g in report.tiers}
    assert list(tiers) == ["high", "medium", "low"]
    assert sum(g.customers for g in report.tiers) == report.customers
    assert tiers["high"].customers == pytest.approx(0.2 * report.customers, abs=2)
    assert tiers["high"].mean_predicted_clv > tiers["medium"].mean_predicted_clv
    assert tiers["medium"].mean_predicted_clv > tiers["low"].mean_predicted_clv

    profiles = profiles_of(workspace)
    high = {cid for cid, traits in profiles.items() if traits.get("ltv_tier") == "high"}
    assert len(high) == tiers["high"].customers
    some = next(traits for traits in profiles.values() if "ltv_tier" in traits)
    assert {"predicted_clv_6m", "expected_purchases_6m", "p_alive", "churn_probability",
            "historical_ltv"} <= set(some)  # fmt: skip
    # the other traits are kept
    assert all(set(before[cid]) <= set(traits) for cid, traits in profiles.items())
    assert some["churn_probability"] == pytest.approx(1 - some["p_alive"], abs=2e-4)

    preview = preview_segment(
        workspace=workspace, strategy=strategy, name="high_value", as_of=as_of, sample=5000
    )
    assert {m.customer_id for m in preview.sample} == high
    lost = preview_segment(
        workspace=workspace, strategy=strategy, name="likely_lost", as_of=as_of, sample=5000
    )
    expected = {c for c, t in profiles.items() if t.get("churn_probability", -1) >= 0.5}
    assert {m.customer_id for m in lost.sample} == expected and expected
    # the same values as predictions, which `{predicted: …}` conditions read
    for name, trait, low in (
        ("predicted_lost", "churn_probability", 0.5),
        ("predicted_valuable", "predicted_clv_6m", 100),
    ):
        found = preview_segment(
            workspace=workspace, strategy=strategy, name=name, as_of=as_of, sample=5000
        )
        # traits are rounded: compare away from the edge
        sure = {c for c, t in profiles.items() if t.get(trait, -1) >= low + 0.01}
        unsure = {c for c, t in profiles.items() if abs(t.get(trait, -9) - low) < 0.01}
        assert sure and sure <= {m.customer_id for m in found.sample} <= sure | unsure

    # after a refresh the report breaks the value down by segment and stage
    refresh_segments(workspace=workspace, strategy=strategy, as_of=as_of)
    again = ltv_report(workspace=workspace, strategy=strategy, as_of=as_of)
    by_segment = {g.name: g for g in again.segments}
    assert by_segment["high_value"].customers == len(high)
    assert by_segment["high_value"].predicted_clv == pytest.approx(tiers["high"].predicted_clv)
    assert by_segment["likely_lost"].customers == len(expected)
    assert by_segment["likely_lost"].mean_p_alive <= 0.5
    stages = {g.name: g for g in again.stages}
    assert stages["new"].customers + stages["(no stage)"].customers == again.customers
    assert stages["new"].customers == sum(
        1 for t in profiles.values() if t.get("expected_purchases_6m", 0) >= 0.5
    )

    plotted = as_json(report)
    assert [p["param"] for p in plotted["models"][0]["params"]] == ["r", "alpha", "a", "b"]
    assert all(p["standard_error"] > 0 for p in plotted["models"][0]["params"])
    assert plotted["models"][0]["log_likelihood"] == pytest.approx(report.purchases.log_likelihood)
    assert plotted["margin"] is None
    np.testing.assert_allclose(sum(t["customers"] for t in plotted["tiers"]), report.customers)


def test_cli_prints_the_report_and_the_calibration(store: Store) -> None:
    with store.workspace() as workspace:
        cutoff = (last_order(workspace) - timedelta(days=120)).date().isoformat()
    args = ["analytics", "ltv", "--workspace", str(store.settings.workspace)]
    result = CliRunner().invoke(app, [*args, "--json", "--cutoff", cutoff, "--calibration"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["as_of"].startswith(cutoff)
    assert [m["model"] for m in data["models"]] == ["BG/NBD", "Gamma-Gamma"]
    assert len(data["calibration"]["buckets"]) == 8
    assert data["written"] == 0
    shown = CliRunner().invoke(app, [*args, "--cutoff", cutoff, "--calibration"])
    assert shown.exit_code == 0, shown.output
    assert "Calibration" in shown.output and "alpha" in shown.output
    bad = CliRunner().invoke(app, [*args, "--cutoff", "2000-01-01"])
    assert bad.exit_code == 2 and "Order Completed" in bad.output


def test_api_answers_tidy_json_to_the_admin_key(store: Store) -> None:
    with store.workspace() as workspace:
        cutoff = (last_order(workspace) - timedelta(days=120)).date().isoformat()
        keys = init_workspace(settings=store.settings)
        with running(create_app(settings=store.settings, workspace=workspace)) as url:
            admin = httpx.Client(
                base_url=url, timeout=60, headers={"Authorization": f"Bearer {keys.admin_key}"}
            )
            found = admin.get("/v1/analytics/ltv", params={"cutoff": cutoff, "calibration": True})
            assert found.status_code == 200, found.text
            data = found.json()
            assert data["as_of"].startswith(cutoff)
            assert {p["param"] for p in data["models"][0]["params"]} == {"r", "alpha", "a", "b"}
            assert (
                sum(b["customers"] for b in data["calibration"]["buckets"])
                == data["calibration"]["customers"]
            )
            late = admin.get("/v1/analytics/ltv", params={"cutoff": "2000-01-01"})
            assert late.status_code == 400 and "Order Completed" in late.text
            bad = admin.get("/v1/analytics/ltv", params={"cutoff": "May"})
            assert bad.status_code == 400 and "cutoff" in bad.text
            writer = httpx.Client(base_url=url, auth=(keys.write_key, ""))
            assert writer.get("/v1/analytics/ltv").status_code in (401, 403)
            assert httpx.get(f"{url}/v1/analytics/ltv").status_code == 401


def test_traits_on_postgres(postgres_workspace: Workspace, tmp_path: Path) -> None:
    """The same through PostgreSQL (state and events), on orders drawn from the generator's
    BTYD process and imported as a JSONL file."""
    rng = np.random.default_rng(11)
    n, horizon = 400, 300.0
    start = datetime(2026, 1, 1, tzinfo=UTC)
    purchases, spend = BTYD_PURCHASES, BTYD_SPEND
    rate, dropout = purchases.sample(rng, n)
    first = rng.random(n) * horizon * 0.7
    repeats = simulate_repeats(
        rng, rate=rate, dropout=dropout, first=first, horizon=horizon, active=np.ones(n, bool)
    )
    owner = np.concatenate([np.arange(n), repeats.customer])
    when = np.concatenate([first, repeats.time])
    value = spend.sample_values(rng, spend.sample_rate(rng, n)[owner])
    lines = [
        json.dumps(
            {
                "type": "track",
                "event": "Order Completed",
                "userId": f"u{c}",
                "messageId": f"order-{i}",
                "timestamp": (start + timedelta(days=float(t))).isoformat(),
                "properties": {"revenue": round(float(v), 2)},
            }
        )
        for i, (c, t, v) in enumerate(zip(owner, when, value, strict=True))
    ]
    path = tmp_path / "orders.jsonl"
    path.write_text("\n".join(lines) + "\n")
    import_events(workspace=postgres_workspace, path=path)
    traits_select_in_segments(postgres_workspace)


def test_pareto_nbd_when_the_strategy_asks(store: Store) -> None:
    strategy = parse_strategy(
        "workspace: shop\nltv: {model: pareto_nbd, horizon_months: 3}\n", source="strategy.yaml"
    )
    with store.workspace() as workspace:
        cutoff = last_order(workspace) - timedelta(days=DAYS // 3)
        cutoff = cutoff.replace(hour=0, minute=0, second=0, microsecond=0)
        report = ltv_report(
            workspace=workspace, strategy=strategy, as_of=cutoff, with_calibration=True
        )
    assert report.purchase_model == "Pareto/NBD"
    assert list(report.purchases.params) == ["r", "alpha", "s", "beta"]
    assert report.purchases.converged
    assert report.calibration is not None
    assert report.calibration.predicted_total == pytest.approx(
        report.calibration.actual_total, rel=0.2
    )
    plotted = as_json(report)
    assert plotted["models"][0]["model"] == "Pareto/NBD"
    assert plotted["horizon_months"] == 3


def test_a_refresh_writes_the_ltv_traits_its_strategy_asks_for(store: Store) -> None:
    """With an `ltv:` section the segment refresh writes the traits first, so a segment on
    them is current; without one it writes none."""
    asked = """
workspace: shop
segments:
  top_value: {trait: ltv_tier, eq: top}
ltv:
  horizon_months: 3
  tiers: {top: 0.9, rest: 0}
"""
    not_asked = "workspace: shop\nsegments:\n  buyers: {trait: historical_ltv, gt: 0}\n"
    with store.workspace() as workspace:
        as_of = last_order(workspace)
        refresh_segments(
            workspace=workspace, strategy=parse_strategy(not_asked, source="s.yaml"), as_of=as_of
        )
        assert not any("predicted_clv_3m" in t for t in profiles_of(workspace).values())

        (report,) = refresh_segments(
            workspace=workspace, strategy=parse_strategy(asked, source="s.yaml"), as_of=as_of
        )

        profiles = profiles_of(workspace)
        top = {cid for cid, traits in profiles.items() if traits.get("ltv_tier") == "top"}
        buyers = sum(1 for traits in profiles.values() if "predicted_clv_3m" in traits)
        assert buyers > 100 and len(top) == pytest.approx(0.1 * buyers, abs=2)
        assert report.name == "top_value" and report.size == len(top)
