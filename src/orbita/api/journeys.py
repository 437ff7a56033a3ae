"""Journeys (admin key): start one for a customer, read what they did; and the server's
own worker, which advances due steps every second."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from orbita.api.auth import AdminKey
from orbita.api.deps import ApiContext, context_of
from orbita.api.errors import ApiError
from orbita.services.journey_stats import JourneyStats, journey_stats, journeys_stats
from orbita.services.work import api_trigger

log = logging.getLogger("orbita.api.journeys")
router = APIRouter(prefix="/v1/journeys", tags=["journeys"], dependencies=[AdminKey])
JourneyName = Annotated[str, Path(min_length=1, max_length=200)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown admin key."},
    403: {"description": "A write key cannot start journeys."},
    404: {"description": "No such journey, or no such customer."},
}


class TriggerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    user_id: str = Field(alias="userId", min_length=1, max_length=255)
    properties: dict[str, Any] = Field(default_factory=dict)
    message_id: str | None = Field(
        default=None,
        alias="messageId",
        min_length=1,
        max_length=255,
        description="Idempotency key: a retried call with the same id starts nothing twice.",
    )
    timestamp: datetime | None = Field(default=None, description="Default: the server's clock.")


class TriggerResult(BaseModel):
    journey: str
    customer_id: int
    message_id: str
    entered: bool = Field(description="False: the entry rules said no, or it ran already.")


@router.post("/{name}/trigger", response_model=TriggerResult, responses=_ERRORS)
async def trigger(name: JourneyName, body: TriggerRequest, request: Request) -> TriggerResult:
    """Enter one customer into a journey whose trigger is `api`, with the call's properties."""
    context = context_of(request)
    loaded = await run_in_threadpool(context.journeys.current)
    if loaded is None or name not in loaded[1].current:
        raise ApiError(status_code=404, code="not_found", message=f"no journey {name!r}")
    outcome = await run_in_threadpool(
        api_trigger,
        workspace=context.workspace,
        journeys=loaded[1],
        journey=name,
        user_id=body.user_id,
        properties=body.properties,
        message_id=body.message_id,
        at=body.timestamp,
    )
    return TriggerResult(
        journey=name,
        customer_id=outcome.customer_id,
        message_id=outcome.message_id,
        entered=outcome.entered,
    )


@router.get("", responses=_ERRORS)
async def list_journeys(request: Request) -> list[dict[str, Any]]:
    """Every published journey: entered, live, sent, converted per arm, uplift."""
    context = context_of(request)
    found = await run_in_threadpool(journeys_stats, workspace=context.workspace)
    return [_plain(item) for item in found]


@router.get("/{name}/stats", responses=_ERRORS)
async def stats(name: JourneyName, request: Request) -> dict[str, Any]:
    """Per step: waiting, left by each edge, messages by template and variant; per arm."""
    context = context_of(request)
    found = await run_in_threadpool(journey_stats, workspace=context.workspace, name=name)
    return _plain(found)


def _plain(item: JourneyStats) -> dict[str, Any]:
    return {
        "name": item.name,
        "versions": item.versions,
        "live": item.live,
        "ended": item.ended,
        "sent": item.sent,
        "suppressed": item.suppressed,
        "arms": {
            arm: {"entered": a.entered, "converted": a.converted, "rate": a.conversion_rate}
            for arm, a in item.arms.items()
        },
        "uplift": item.uplift,
        "variants": {
            name: {"runs": v.entered, "converted": v.converted, "rate": v.conversion_rate}
            for name, v in item.variants.items()
        },
        "steps": [
            {"node": s.node, "waiting": s.waiting, "passed": s.passed, "messages": s.messages}
            for s in item.steps
        ],
        "attributed": [asdict(totals) for totals in item.attributed],
    }


async def work_every(context: ApiContext, *, seconds: float) -> None:
    """The server's own worker: scheduled entries and due steps every `seconds`. A failed
    pass is logged and tried again at the next tick."""
    name = f"serve:{os.getpid()}"
    while True:
        await asyncio.sleep(seconds)
        try:
            await run_in_threadpool(
                context.journeys.work, now=context.workspace.clock.now(), worker_id=name
            )
        except Exception:
            log.exception("journey worker pass failed")
