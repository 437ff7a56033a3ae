"""`/healthz`: 200 once the workspace is open and the ingestor runs (no key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from orbita.api.deps import context_of
from orbita.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"description": "Starting or stopping."}},
)
async def healthz(request: Request) -> Health:
    context_of(request)  # 503 until the lifespan has opened everything
    return Health(status="ok")
