"""LTV (admin key): BG/NBD and Gamma-Gamma parameters with standard errors and
log-likelihoods, CLV by tier, segment and stage, and the calibration buckets — tidy rows,
ready to plot."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from orbita.api.auth import AdminKey
from orbita.api.deps import context_of
from orbita.services.ltv import as_json, ltv_report, ltv_strategy

router = APIRouter(prefix="/v1/analytics/ltv", tags=["analytics"], dependencies=[AdminKey])
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A bad cutoff, or no purchases to fit on."},
    401: {"description": "Missing or unknown admin key."},
    403: {"description": "A write key cannot read analytics."},
}
Cutoff = Annotated[
    date | None,
    Query(description="The models see only purchases before this date (midnight UTC)."),
]
Calibration = Annotated[
    bool,
    Query(description="Compare the purchases predicted after `cutoff` with those that came."),
]


@router.get("", responses=_ERRORS)
async def ltv(
    request: Request, cutoff: Cutoff = None, calibration: Calibration = False
) -> dict[str, Any]:
    """`models`: per model its parameters with standard errors and the log-likelihood;
    `tiers`, `segments`, `stages`: customers, historical and predicted value; `calibration`:
    mean actual and predicted purchases after the cutoff by repeat purchases before it."""
    context = context_of(request)

    def report() -> dict[str, Any]:
        strategy = ltv_strategy(settings=context.settings)
        as_of = (
            datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC)
            if cutoff is not None
            else None
        )
        return as_json(
            ltv_report(
                workspace=context.workspace,
                strategy=strategy,
                as_of=as_of,
                with_calibration=calibration,
            )
        )

    return await run_in_threadpool(report)
