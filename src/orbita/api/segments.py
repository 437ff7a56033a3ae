"""Segments (admin key): sizes, one segment, its members, and a refresh on demand.

The strategy is the workspace's `strategy.yaml`, read at each request (parsing it costs
about a millisecond), so an edited file is used without a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from orbita.api.auth import AdminKey
from orbita.api.deps import ApiContext, context_of
from orbita.model.strategy import Strategy
from orbita.services import segments as service
from orbita.services.strategy import load_strategy, strategy_path

log = logging.getLogger("orbita.api.segments")
router = APIRouter(prefix="/v1/segments", tags=["segments"], dependencies=[AdminKey])
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown admin key."},
    403: {"description": "A write key cannot read segments."},
    404: {"description": "No segment of this name in the strategy."},
}
SegmentName = Annotated[str, Path(min_length=1, max_length=200)]


class SegmentInfo(BaseModel):
    name: str
    size: int | None = Field(description="Members at the last refresh; null: never refreshed.")
    entered: int = Field(description="Customers who entered at the last refresh that changed.")
    exited: int
    refreshed_as_of: datetime | None
    definition_changed: bool = Field(
        description="The strategy's definition differs from the one last refreshed."
    )


class SegmentList(BaseModel):
    segments: list[SegmentInfo]


class MemberInfo(BaseModel):
    customer_id: int
    user_id: str | None
    entered_at: datetime


class MemberPage(BaseModel):
    members: list[MemberInfo]
    next_offset: int | None


class RefreshRequest(BaseModel):
    names: list[str] | None = Field(default=None, description="Segments; default: all.")
    as_of: datetime | None = Field(default=None, description="Default: the server's clock.")


class RefreshInfo(BaseModel):
    name: str
    kind: str
    as_of: datetime
    size: int
    entered: int
    exited: int
    definition_hash: str
    changed: bool
    seconds: float


class RefreshResult(BaseModel):
    refreshed: list[RefreshInfo]


def _strategy(context: ApiContext) -> Strategy:
    """The applied strategy (`orbita apply`), or the workspace's strategy.yaml before one."""
    loaded = context.journeys.current()
    if loaded is not None:
        return loaded[0]
    return load_strategy(path=strategy_path(workspace_dir=context.settings.workspace))


# Plain `def`: FastAPI runs them in its thread pool, off the event loop.
@router.get("", response_model=SegmentList, responses=_ERRORS)
def list_segments(request: Request) -> SegmentList:
    """Every segment of the strategy with its size and change at the last refresh."""
    context = context_of(request)
    found = service.list_segments(workspace=context.workspace, strategy=_strategy(context))
    return SegmentList(segments=[SegmentInfo(**dataclasses.asdict(s)) for s in found])


@router.get("/{name}", response_model=SegmentInfo, responses=_ERRORS)
def get_segment(request: Request, name: SegmentName) -> SegmentInfo:
    context = context_of(request)
    found = service.segment_summary(
        workspace=context.workspace, strategy=_strategy(context), name=name
    )
    return SegmentInfo(**dataclasses.asdict(found))


@router.get("/{name}/members", response_model=MemberPage, responses=_ERRORS)
def get_members(
    request: Request,
    name: SegmentName,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> MemberPage:
    """Current members by customer id, a page at a time."""
    context = context_of(request)
    service.segment_summary(workspace=context.workspace, strategy=_strategy(context), name=name)
    found = service.segment_members(
        workspace=context.workspace, name=name, limit=limit + 1, offset=offset
    )
    more = len(found) > limit
    return MemberPage(
        members=[MemberInfo(**dataclasses.asdict(m)) for m in found[:limit]],
        next_offset=offset + limit if more else None,
    )


@router.post("/refresh", response_model=RefreshResult, responses=_ERRORS)
def refresh(request: Request, body: RefreshRequest | None = None) -> RefreshResult:
    """Refresh now: members recomputed, entries and exits recorded and emitted as events."""
    context = context_of(request)
    wanted = body or RefreshRequest()
    strategy = _strategy(context)
    reports = refresh_now(context, strategy=strategy, names=wanted.names, as_of=wanted.as_of)
    return RefreshResult(refreshed=[RefreshInfo(**dataclasses.asdict(r)) for r in reports])


def refresh_now(
    context: ApiContext,
    *,
    strategy: Strategy,
    names: list[str] | None = None,
    as_of: datetime | None = None,
    full_snapshot: bool = True,
) -> list[service.RefreshReport]:
    # In the ingest writer, between writes: a refresh never races ingestion or an erasure.
    return context.ingestor.exclusive(
        lambda: service.refresh_segments(
            workspace=context.workspace,
            strategy=strategy,
            names=names,
            as_of=as_of,
            full_snapshot=full_snapshot,
        )
    )


async def refresh_every(context: ApiContext, *, seconds: float) -> None:
    """The server's schedule: refresh every `seconds` once a strategy is applied (or a
    strategy file exists), then hand the changes to the journeys. A failed refresh is logged
    and retried at the next tick."""
    path = strategy_path(workspace_dir=context.settings.workspace)
    while True:
        await asyncio.sleep(seconds)
        if not path.exists() and context.journeys.current() is None:
            continue
        try:
            strategy = await run_in_threadpool(_strategy, context)
            reports = await run_in_threadpool(
                refresh_now, context, strategy=strategy, full_snapshot=False
            )
            if reports:  # entering or leaving a segment may start journeys
                await run_in_threadpool(context.journeys.segment_changes, as_of=reports[0].as_of)
        except Exception:
            log.exception("scheduled segment refresh failed")
