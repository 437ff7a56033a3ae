"""Measurement (admin key): KPIs, funnels and cohorts as tidy rows ready to plot, and the
strategy's goals with their progress.

    GET /v1/analytics/kpis              ?metric=…&dimension=…&period=week&start=…&end=…
    GET /v1/analytics/funnels/{name}    ?by=stage&start=…&end=…
    GET /v1/analytics/cohorts           ?period=month&by=period&acquisition=…&activity=…
    GET /v1/goals                       ?as_of=…

Ranges are [start, end): `end` defaults to the server's clock, `start` to a span before it
that suits the period. A bad value answers 400 naming the parameter; an unknown funnel 404.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from orbita.analytics.cohorts import compute_cohorts
from orbita.analytics.funnels import check_breakdown_segments, compute_funnel, funnel_of
from orbita.analytics.goals import goals_progress
from orbita.analytics.kpis import (
    PURCHASE_EVENT,
    REVENUE_PROPERTY,
    check_dimensions,
    check_metrics,
    compute_kpis,
    options_for,
)
from orbita.analytics.periods import default_range, parse_grain
from orbita.api.auth import AdminKey
from orbita.api.deps import ApiContext, context_of
from orbita.core.errors import UserError
from orbita.model.strategy import Strategy
from orbita.services.strategy import load_strategy, strategy_path

router = APIRouter(prefix="/v1", tags=["analytics"], dependencies=[AdminKey])
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A bad parameter, named in the message."},
    401: {"description": "Missing or unknown admin key."},
    403: {"description": "A write key cannot read analytics."},
}
Start = Annotated[datetime | None, Query(description="From (inclusive); ISO 8601 with a zone.")]
End = Annotated[datetime | None, Query(description="Until (exclusive); default: now.")]


def _strategy(context: ApiContext, *, required: bool) -> Strategy | None:
    """The applied strategy, else the workspace's strategy.yaml (None if neither exists and
    none is required)."""
    loaded = context.journeys.current()
    if loaded is not None:
        return loaded[0]
    path = strategy_path(workspace_dir=context.settings.workspace)
    if not required and not path.exists():
        return None
    return load_strategy(path=path)


def _range(
    context: ApiContext, grain: str, start: datetime | None, end: datetime | None
) -> tuple[datetime, datetime]:
    for name, moment in (("start", start), ("end", end)):
        if moment is not None and moment.tzinfo is None:
            raise UserError(f"{name}: {moment.isoformat()} needs a time zone, such as Z")
    return default_range(now=context.workspace.clock.now(), grain=grain, start=start, end=end)


@router.get("/analytics/kpis", responses=_ERRORS)
def kpis(
    request: Request,
    metric: Annotated[list[str] | None, Query(description="KPIs; default: all.")] = None,
    dimension: Annotated[
        list[str] | None,
        Query(description="all, journey, step, variant, channel, template, arm, segment, stage."),
    ] = None,
    period: Annotated[str, Query(description="day, week, month or total.")] = "week",
    start: Start = None,
    end: End = None,
    churn_days: Annotated[int | None, Query(ge=1, le=3650)] = None,
) -> dict[str, Any]:
    """KPIs per period and dimension: rows of (metric, grain, period, dimension, key, value,
    numerator, denominator)."""
    context = context_of(request)
    grain = parse_grain(period, field="period")
    metrics = check_metrics(metric, field="metric") if metric else None
    dimensions = check_dimensions(dimension, field="dimension") if dimension else None
    since, until = _range(context, grain, start, end)
    rows = compute_kpis(
        events=context.workspace.events,
        state=context.workspace.state,
        start=since,
        end=until,
        grain=grain,
        metrics=metrics,
        dimensions=dimensions,
        options=options_for(_strategy(context, required=False), churn_days=churn_days),
    )
    return {"start": since, "end": until, "rows": [dataclasses.asdict(r) for r in rows]}


@router.get(
    "/analytics/funnels/{name}",
    responses={**_ERRORS, 404: {"description": "No funnel of this name in the strategy."}},
)
def funnel(
    request: Request,
    name: Annotated[str, Path(min_length=1, max_length=200)],
    by: Annotated[
        str | None, Query(description="stage, segment:NAME[,NAME…] or trait:NAME.")
    ] = None,
    start: Start = None,
    end: End = None,
) -> dict[str, Any]:
    """Customers at each step (and breakdown group), conversion from the previous and the
    first step, median seconds from the previous step."""
    context = context_of(request)
    strategy = _strategy(context, required=True)
    assert strategy is not None
    chosen = funnel_of(strategy, name)
    check_breakdown_segments(strategy, by or chosen.by)
    since, until = _range(context, "month", start, end)
    result = compute_funnel(
        events=context.workspace.events,
        funnel=chosen,
        name=name,
        start=since,
        end=until,
        breakdown=by,
    )
    return dataclasses.asdict(result)


@router.get("/analytics/cohorts", responses=_ERRORS)
def cohorts(
    request: Request,
    period: Annotated[str, Query(description="day, week or month.")] = "month",
    by: Annotated[str, Query(description="period, trait:NAME or property:NAME.")] = "period",
    acquisition: Annotated[str, Query(min_length=1, max_length=200)] = PURCHASE_EVENT,
    activity: Annotated[str, Query(min_length=1, max_length=200)] = PURCHASE_EVENT,
    revenue: Annotated[str, Query(min_length=1, max_length=200)] = REVENUE_PROPERTY,
    start: Start = None,
    end: End = None,
) -> dict[str, Any]:
    """Retention and revenue per acquisition cohort over the following periods."""
    context = context_of(request)
    grain = parse_grain(period, field="period")
    since, until = _range(context, grain, start, end)
    rows = compute_cohorts(
        events=context.workspace.events,
        start=since,
        end=until,
        grain=grain,
        by=by,
        acquisition=acquisition,
        activity=activity,
        revenue_property=revenue,
    )
    return {"start": since, "end": until, "rows": [dataclasses.asdict(r) for r in rows]}


@router.get("/goals", responses=_ERRORS)
async def goals(
    request: Request,
    as_of: Annotated[datetime | None, Query(description="Default: the server's clock.")] = None,
) -> dict[str, Any]:
    """Each goal of the strategy: current value, baseline, expected by now on the straight
    path to the target, the share of the way covered, status and weekly trend."""
    context = context_of(request)
    if as_of is not None and as_of.tzinfo is None:
        raise UserError(f"as_of: {as_of.isoformat()} needs a time zone, such as Z")
    strategy = await run_in_threadpool(_strategy, context, required=True)
    assert strategy is not None
    found = await run_in_threadpool(
        goals_progress,
        events=context.workspace.events,
        state=context.workspace.state,
        strategy=strategy,
        now=as_of or context.workspace.clock.now(),
        options=options_for(strategy),
    )
    return {"goals": [dataclasses.asdict(g) for g in found]}
