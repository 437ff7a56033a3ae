"""LTV: fit the purchase and spend models on a workspace's orders, report parameters and the
value distribution, and write each customer's LTV traits (tier, churn probability…).

The traits are plain profile traits (model/ltv.py names them), so segments, journey
branches and templates use them as they use any trait: `{trait: ltv_tier, eq: high}`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import ibis
import numpy as np
import pyarrow as pa
from sqlalchemy import bindparam, select, update

from orbita.analytics.ltv import (
    PURCHASE_MODELS,
    Estimate,
    FitError,
    GammaGammaFit,
    PurchaseFit,
    customer_values,
    fit_gamma_gamma,
    fit_purchases,
)
from orbita.analytics.ltv.data import (
    Calibration,
    Histories,
    PurchaseEvent,
    calibration,
    histories,
    purchase_days,
)
from orbita.core.errors import UserError
from orbita.core.settings import Settings
from orbita.model.ltv import LtvConfig
from orbita.model.strategy import Strategy
from orbita.services.apply import strategy_in_use
from orbita.services.strategy import strategy_path
from orbita.services.workspace import Workspace
from orbita.store.state import customers, stage_history

DAYS_PER_MONTH = 30.0  # the models' time unit is a day; lifetimes' convention for months
NO_STAGE = ""
_WRITE_CHUNK = 5_000

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Group:
    """Customers of a tier or stage: count and value."""

    name: str
    customers: int
    historical_ltv: float  # sum
    predicted_clv: float  # sum over the horizon
    mean_predicted_clv: float
    mean_p_alive: float


@dataclass(frozen=True, slots=True)
class LtvReport:
    as_of: datetime
    purchase_event: str
    value_property: str
    horizon_months: int
    monthly_discount: float
    customers: int  # with a purchase before as_of
    repeat_buyers: int
    purchase_model: str  # BG/NBD or Pareto/NBD
    purchases: PurchaseFit
    spend: GammaGammaFit | None  # None: too few repeat buyers with a value
    historical_ltv: float  # every order's value, summed
    predicted_clv: float  # over the horizon, summed
    tiers: tuple[Group, ...]
    segments: tuple[Group, ...]  # as last refreshed
    stages: tuple[Group, ...]
    margin: None  # the catalogue carries no costs yet: values are revenue, not margin
    calibration: Calibration | None
    written: int  # customers whose traits were written (0 unless asked)


def ltv_report(
    *,
    workspace: Workspace,
    strategy: Strategy,
    as_of: datetime | None = None,
    with_calibration: bool = False,
    write_traits: bool = False,
) -> LtvReport:
    """Fit BG/NBD and Gamma-Gamma on the orders before `as_of` (default now), value every
    customer over the strategy's horizon, group by tier, segment and lifecycle stage; with
    `with_calibration` compare the purchases predicted after `as_of` (a date) with those
    that came; with `write_traits` write each customer's LTV traits into their profile."""
    config = strategy.ltv
    moment = as_of or workspace.clock.now()
    if moment.tzinfo is None:
        raise UserError("as_of: needs a time zone")
    purchase = PurchaseEvent(event=config.purchase_event, value_property=config.value_property)
    if with_calibration and as_of is None:
        raise UserError("cutoff: the calibration needs a cut-off date before the last purchase")
    summary = histories(
        purchase_days(workspace.events, purchase=purchase, end=moment), cutoff=moment
    )
    if summary.customers == 0:
        raise UserError(f"ltv: no {config.purchase_event!r} events before {moment.isoformat()}")
    try:
        fitted = fit_purchases(config.model, summary.x, summary.t_x, summary.T)
    except FitError as error:
        raise UserError(f"ltv: {error}") from None
    values = _values(summary, fitted, config)
    stage_of = _stages(workspace)
    stage = np.array([stage_of.get(int(cid), NO_STAGE) for cid in values.customer_id])
    members = _segment_members(workspace, list(strategy.segments))
    written = _write_traits(workspace, values, config) if write_traits else 0
    checked = (
        calibration(workspace.events, cutoff=moment, purchase=purchase, model=config.model)
        if with_calibration
        else None
    )
    stage_names = [stage.name for stage in strategy.stages]
    return LtvReport(
        as_of=moment,
        purchase_event=config.purchase_event,
        value_property=config.value_property,
        horizon_months=config.horizon_months,
        monthly_discount=config.monthly_discount,
        customers=summary.customers,
        repeat_buyers=int((summary.x > 0).sum()),
        purchase_model=PURCHASE_MODELS[config.model],
        purchases=fitted,
        spend=values.spend,
        historical_ltv=float(summary.revenue.sum()),
        predicted_clv=float(values.clv.sum()),
        tiers=tuple(
            _group(name, values, values.tier == index)
            for index, name in enumerate(values.tier_names)
        ),
        segments=tuple(
            _group(name, values, np.isin(values.customer_id, ids)) for name, ids in members.items()
        ),
        stages=tuple(
            _group(name or "(no stage)", values, stage == name) for name in [*stage_names, NO_STAGE]
        ),
        margin=None,
        calibration=checked,
        written=written,
    )


def refresh_ltv_traits(*, workspace: Workspace, strategy: Strategy, as_of: datetime) -> int:
    """Write the LTV traits and predictions as of `as_of` when the strategy asks for them
    with an `ltv:` section (a segment refresh calls this first); the customers written.

    Before the first purchases, or with too few to fit, there is nothing to write yet: 0,
    with the reason in the log, and the refresh goes on."""
    if "ltv" not in strategy.model_fields_set:
        return 0
    try:
        report = ltv_report(workspace=workspace, strategy=strategy, as_of=as_of, write_traits=True)
    except UserError as error:
        log.warning("LTV traits not written: %s", error)
        return 0
    return report.written


@dataclass(frozen=True, slots=True)
class _Values:
    """Per customer with a purchase, in customer_id order."""

    spend: GammaGammaFit | None
    customer_id: np.ndarray[Any, np.dtype[np.int64]]
    tier: np.ndarray[Any, np.dtype[np.intp]]  # index into tier_names
    tier_names: tuple[str, ...]
    clv: np.ndarray[Any, np.dtype[np.float64]]
    purchases: np.ndarray[Any, np.dtype[np.float64]]
    p_alive: np.ndarray[Any, np.dtype[np.float64]]
    historical: np.ndarray[Any, np.dtype[np.float64]]


def _values(summary: Histories, fitted: PurchaseFit, config: LtvConfig) -> _Values:
    repeat_with_value = (summary.x > 0) & (summary.monetary > 0)
    spend: GammaGammaFit | None = None
    if int(repeat_with_value.sum()) >= 10:
        try:
            spend = fit_gamma_gamma(
                summary.x[repeat_with_value], summary.monetary[repeat_with_value]
            )
        except FitError:
            spend = None
    if spend is not None and spend.model.q > 1:
        valued = customer_values(
            fitted.model,
            spend.model,
            x=summary.x,
            t_x=summary.t_x,
            T=summary.T,
            monetary=summary.monetary,
            months=config.horizon_months,
            monthly_discount=config.monthly_discount,
            time_units_per_month=DAYS_PER_MONTH,
        )
        clv, purchases, alive = valued.clv, valued.expected_purchases, valued.p_alive
    else:
        # without a spend model, value each expected purchase at the customer's own mean
        # order value (their first order's when they have no repeat)
        alive = fitted.model.p_alive(summary.x, summary.t_x, summary.T)
        purchases = fitted.model.conditional_expected_purchases(
            config.horizon_months * DAYS_PER_MONTH, summary.x, summary.t_x, summary.T
        )
        clv = purchases * summary.revenue / np.maximum(summary.orders, 1)
    order = np.argsort(np.argsort(clv, kind="stable"), kind="stable")
    quantile = order / max(clv.size, 1)
    names = list(config.tiers)
    starts = np.array([config.tiers[name] for name in names])
    # tiers are sorted from the highest start down: the first whose start the quantile reaches
    tier_index = np.argmax(quantile[:, None] >= starts[None, :], axis=1)
    return _Values(
        spend=spend,
        customer_id=summary.customer_id,
        tier=tier_index,
        tier_names=tuple(names),
        clv=np.asarray(clv, dtype=np.float64),
        purchases=np.asarray(purchases, dtype=np.float64),
        p_alive=np.asarray(alive, dtype=np.float64),
        historical=summary.revenue,
    )


def _group(name: str, values: _Values, members: np.ndarray[Any, np.dtype[np.bool_]]) -> Group:
    n = int(members.sum())
    clv = float(values.clv[members].sum())
    return Group(
        name=name,
        customers=n,
        historical_ltv=float(values.historical[members].sum()),
        predicted_clv=clv,
        mean_predicted_clv=clv / n if n else 0.0,
        mean_p_alive=float(values.p_alive[members].mean()) if n else 0.0,
    )


def ltv_strategy(*, settings: Settings, path: Path | None = None) -> Strategy:
    """The strategy in use (services/apply.py); LTV's defaults when the workspace has no
    strategy yet, since the models need none."""
    try:
        return strategy_in_use(settings=settings, path=path)[1]
    except UserError:
        if path is not None or strategy_path(workspace_dir=settings.workspace).exists():
            raise
        return Strategy(workspace=settings.workspace.name or "workspace")


def _segment_members(workspace: Workspace, names: Sequence[str]) -> dict[str, list[int]]:
    """Current members of each segment, as the last refresh recorded them."""
    found: dict[str, list[int]] = {name: [] for name in names}
    if not names:
        return found
    members = ibis.table({"segment": "string", "customer_id": "int64"}, name="segment_members")
    rows = workspace.events.ibis().to_pyarrow(members.filter(members.segment.isin(list(names))))
    for segment, customer_id in zip(
        rows.column("segment").to_pylist(), rows.column("customer_id").to_pylist(), strict=True
    ):
        found[segment].append(int(customer_id))
    return found


def _stages(workspace: Workspace) -> dict[int, str]:
    """Each customer's current lifecycle stage (customers in none are left out)."""
    table = stage_history.c
    query = select(table.customer_id, table.stage).where(table.exited_at.is_(None))
    with workspace.state.connect() as connection:
        return {int(cid): str(stage) for cid, stage in connection.execute(query)}


def _write_predictions(workspace: Workspace, values: _Values) -> None:
    """Replace the event store's `predictions` table, which `{predicted: ltv, gte: …}` and
    `{predicted: churn_probability, …}` segment conditions read."""
    table = pa.table(
        {
            "customer_id": pa.array(values.customer_id, type=pa.int64()),
            "ltv": pa.array(values.clv, type=pa.float64()),
            "churn_probability": pa.array(1 - values.p_alive, type=pa.float64()),
        }
    )
    workspace.events.ibis().insert("predictions", ibis.memtable(table), overwrite=True)


def _write_traits(workspace: Workspace, values: _Values, config: LtvConfig) -> int:
    """Merge the LTV traits into the profiles, a chunk of customers per transaction, and
    the predictions segments read."""
    _write_predictions(workspace, values)
    names = config.trait_names()
    written = 0
    for start in range(0, values.customer_id.size, _WRITE_CHUNK):
        rows = range(start, min(start + _WRITE_CHUNK, values.customer_id.size))
        by_id = {int(values.customer_id[i]): _traits(values, i, names) for i in rows}
        with workspace.state.begin() as connection:
            current = connection.execute(
                select(customers.c.customer_id, customers.c.traits).where(
                    customers.c.customer_id.in_(list(by_id))
                )
            ).all()
            updates = [
                {"cid": cid, "new_traits": {**dict(traits or {}), **by_id[cid]}}
                for cid, traits in current
            ]
            if updates:
                connection.execute(
                    update(customers)
                    .where(customers.c.customer_id == bindparam("cid"))
                    .values(traits=bindparam("new_traits")),
                    updates,
                )
        written += len(updates)
    return written


def _traits(values: _Values, i: int, names: Mapping[str, str]) -> dict[str, Any]:
    alive = float(values.p_alive[i])
    return {
        names["clv"]: round(float(values.clv[i]), 2),
        names["purchases"]: round(float(values.purchases[i]), 4),
        names["p_alive"]: round(alive, 4),
        names["churn"]: round(1 - alive, 4),
        names["historical"]: round(float(values.historical[i]), 2),
        names["tier"]: values.tier_names[int(values.tier[i])],
    }


def as_json(report: LtvReport) -> dict[str, Any]:
    """Tidy data ready to plot: parameters with standard errors, likelihoods, the value by
    tier and stage, the calibration buckets."""

    def params(values: Mapping[str, Estimate]) -> list[dict[str, Any]]:
        return [
            {
                "param": name,
                "value": e.value,
                "standard_error": e.standard_error if np.isfinite(e.standard_error) else None,
            }
            for name, e in values.items()
        ]

    def group(g: Group) -> dict[str, Any]:
        return {
            "name": g.name,
            "customers": g.customers,
            "historical_ltv": round(g.historical_ltv, 2),
            "predicted_clv": round(g.predicted_clv, 2),
            "mean_predicted_clv": round(g.mean_predicted_clv, 2),
            "mean_p_alive": round(g.mean_p_alive, 4),
        }

    spend = report.spend
    checked = report.calibration
    return {
        "as_of": report.as_of.isoformat(),
        "purchase_event": report.purchase_event,
        "value_property": report.value_property,
        "horizon_months": report.horizon_months,
        "monthly_discount": report.monthly_discount,
        "time_unit": "day",
        "customers": report.customers,
        "repeat_buyers": report.repeat_buyers,
        "historical_ltv": round(report.historical_ltv, 2),
        "predicted_clv": round(report.predicted_clv, 2),
        "margin": report.margin,
        "models": [
            {
                "model": report.purchase_model,
                "params": params(report.purchases.params),
                "log_likelihood": report.purchases.log_likelihood,
                "customers": report.purchases.customers,
                "iterations": report.purchases.iterations,
                "converged": report.purchases.converged,
            },
            *(
                [
                    {
                        "model": "Gamma-Gamma",
                        "params": params(spend.params),
                        "log_likelihood": spend.log_likelihood,
                        "customers": spend.customers,
                        "iterations": spend.iterations,
                        "converged": spend.converged,
                    }
                ]
                if spend is not None
                else []
            ),
        ],
        "tiers": [group(g) for g in report.tiers],
        "segments": [group(g) for g in report.segments],
        "stages": [group(g) for g in report.stages],
        "calibration": None
        if checked is None
        else {
            "cutoff": checked.cutoff.isoformat(),
            "end": checked.end.isoformat(),
            "holdout_days": checked.holdout_days,
            "customers": checked.customers,
            "actual_total": checked.actual_total,
            "predicted_total": round(checked.predicted_total, 2),
            "buckets": [
                {
                    "repeat_purchases": b.repeat_purchases,
                    "customers": b.customers,
                    "actual": round(b.actual, 4),
                    "predicted": round(b.predicted, 4),
                }
                for b in checked.buckets
            ],
        },
        "written": report.written,
    }
