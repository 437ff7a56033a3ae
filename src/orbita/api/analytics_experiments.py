"""Experiments (admin key): every journey holdout, split and A/B variant with its statistics
and verdict, and each journey's uplift over its holdout — tidy rows, ready to plot."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from orbita.analytics.experiments.report import experiments_report
from orbita.api.auth import AdminKey
from orbita.api.deps import context_of

router = APIRouter(prefix="/v1/analytics/experiments", tags=["analytics"], dependencies=[AdminKey])
JourneyName = Annotated[str, Path(min_length=1, max_length=200)]
Sequential = Annotated[
    bool,
    Query(description="Add each experiment's daily looks: always-valid p-values and "
          "confidence sequences over time."),
]  # fmt: skip
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown admin key."},
    403: {"description": "A write key cannot read analytics."},
    404: {"description": "No such journey."},
}


@router.get("", responses=_ERRORS)
async def list_experiments(request: Request, sequential: Sequential = False) -> dict[str, Any]:
    """`experiments`: per experiment its arms (one row each, compared with the control),
    sample-ratio check and verdicts; `uplift`: per journey with a holdout, incremental
    conversions and revenue with 95% intervals."""
    context = context_of(request)
    return await run_in_threadpool(
        experiments_report,
        state=context.workspace.state,
        events=context.workspace.events,
        timeline=sequential,
    )


@router.get("/{journey}", responses=_ERRORS)
async def journey_experiments(
    journey: JourneyName, request: Request, sequential: Sequential = False
) -> dict[str, Any]:
    """The same for one journey."""
    context = context_of(request)
    return await run_in_threadpool(
        experiments_report,
        state=context.workspace.state,
        events=context.workspace.events,
        journeys=[journey],
        timeline=sequential,
    )
