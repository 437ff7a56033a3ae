"""Broadcasts (admin key): list, show, plan and report them; send, pause, resume, cancel.

The applied strategy's broadcasts (`orbita apply`); the server's worker sends scheduled
ones when they are due (`broadcasts_due`)."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from orbita.api.auth import AdminKey
from orbita.api.deps import context_of
from orbita.api.errors import ApiError
from orbita.model.strategy import Strategy
from orbita.services.apply import applied_strategy
from orbita.services.broadcasts import (
    broadcast_report,
    cancel_broadcast,
    list_broadcasts,
    pause_broadcast,
    plan_broadcast,
    resume_broadcast,
    send_broadcast,
    show_broadcast,
)
from orbita.services.workspace import Workspace

router = APIRouter(prefix="/v1/broadcasts", tags=["broadcasts"], dependencies=[AdminKey])
BroadcastName = Annotated[str, Path(min_length=1, max_length=200)]
OccurrenceQuery = Annotated[
    str | None,
    Query(max_length=64, description="An occurrence's time or id; default: the newest."),
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown admin key."},
    403: {"description": "A write key cannot manage broadcasts."},
    404: {"description": "No such broadcast, or it was never sent."},
}


def _applied(workspace: Workspace) -> tuple[int, FilePath, Strategy]:
    applied = applied_strategy(workspace=workspace)
    if applied is None:
        raise ApiError(status_code=409, code="no_strategy", message="no strategy applied yet")
    return applied.version, FilePath(applied.source), applied.strategy


@router.get("", responses=_ERRORS)
async def list_(request: Request) -> list[dict[str, Any]]:
    """Every broadcast: its schedule and its latest occurrence."""
    workspace = context_of(request).workspace
    applied = await run_in_threadpool(applied_strategy, workspace=workspace)
    strategy = applied.strategy if applied is not None else None
    return await run_in_threadpool(list_broadcasts, workspace=workspace, strategy=strategy)


@router.get("/{name}", responses=_ERRORS)
async def show(name: BroadcastName, request: Request) -> dict[str, Any]:
    """The definition and every occurrence (state, audience, A/B decision)."""
    workspace = context_of(request).workspace
    applied = await run_in_threadpool(applied_strategy, workspace=workspace)
    strategy = applied.strategy if applied is not None else None
    return await run_in_threadpool(
        show_broadcast, workspace=workspace, strategy=strategy, name=name
    )


@router.get("/{name}/plan", responses=_ERRORS)
async def plan(name: BroadcastName, request: Request) -> dict[str, Any]:
    """A dry run: audience, per variant and time zone, who the rules hold back and why."""
    workspace = context_of(request).workspace
    _version, source, strategy = await run_in_threadpool(_applied, workspace)
    found = await run_in_threadpool(
        plan_broadcast,
        workspace=workspace,
        strategy=strategy,
        base_dir=source.parent,
        name=name,
        now=workspace.clock.now(),
    )
    # A frozen dataclass of plain values, datetimes and counts: orjson writes it as is.
    plain: dict[str, Any] = orjson.loads(orjson.dumps(found, option=orjson.OPT_UTC_Z))
    return plain


@router.get("/{name}/report", responses=_ERRORS)
async def report(
    name: BroadcastName, request: Request, occurrence: OccurrenceQuery = None
) -> dict[str, Any]:
    """Audience, sent, delivered, opens, clicks, conversions, revenue, unsubscribes per
    variant and holdout, with the A/B decision."""
    workspace = context_of(request).workspace
    return await run_in_threadpool(
        broadcast_report,
        workspace=workspace,
        name=name,
        now=workspace.clock.now(),
        occurrence=occurrence,
    )


@router.post("/{name}/send", responses=_ERRORS)
async def send(name: BroadcastName, request: Request) -> dict[str, Any]:
    """Write the recipients to the outbox (again: nobody twice)."""
    workspace = context_of(request).workspace
    version, _source, strategy = await run_in_threadpool(_applied, workspace)
    found = await run_in_threadpool(
        send_broadcast,
        workspace=workspace,
        strategy=strategy,
        name=name,
        now=workspace.clock.now(),
        version=version,
    )
    return {
        **found.occurrence.summary(),
        "written": found.written,
        "holdout": found.holdout,
        "sample": found.sample,
        "rest": found.rest,
        "by_arm": dict(found.by_arm),
    }


@router.post("/{name}/pause", responses=_ERRORS)
async def pause(
    name: BroadcastName, request: Request, occurrence: OccurrenceQuery = None
) -> dict[str, Any]:
    """The sender skips its messages until resumed."""
    workspace = context_of(request).workspace
    found = await run_in_threadpool(
        pause_broadcast,
        workspace=workspace,
        name=name,
        now=workspace.clock.now(),
        occurrence=occurrence,
    )
    return found.summary()


@router.post("/{name}/resume", responses=_ERRORS)
async def resume(
    name: BroadcastName, request: Request, occurrence: OccurrenceQuery = None
) -> dict[str, Any]:
    """Go on where it stopped."""
    workspace = context_of(request).workspace
    _version, _source, strategy = await run_in_threadpool(_applied, workspace)
    found = await run_in_threadpool(
        resume_broadcast,
        workspace=workspace,
        strategy=strategy,
        name=name,
        now=workspace.clock.now(),
        occurrence=occurrence,
    )
    return found.summary()


@router.post("/{name}/cancel", responses=_ERRORS)
async def cancel(
    name: BroadcastName, request: Request, occurrence: OccurrenceQuery = None
) -> dict[str, Any]:
    """Send nothing more: every message not sent yet is cancelled."""
    workspace = context_of(request).workspace
    found, cancelled = await run_in_threadpool(
        cancel_broadcast,
        workspace=workspace,
        name=name,
        now=workspace.clock.now(),
        occurrence=occurrence,
    )
    return {**found.summary(), "cancelled": cancelled}
