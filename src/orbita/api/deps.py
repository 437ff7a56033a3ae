"""What the routes share: the settings, the opened workspace and its ingestor."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from orbita.api.errors import ApiError

if TYPE_CHECKING:
    from orbita.core.settings import Settings
    from orbita.services.ingest import BatchPreparer, Ingestor
    from orbita.services.work import LiveJourneys
    from orbita.services.workspace import Workspace


@dataclass(frozen=True, slots=True)
class ApiContext:
    """Set on `app.state.orbita` by the lifespan while the app is serving."""

    settings: Settings
    workspace: Workspace
    ingestor: Ingestor
    preparer: BatchPreparer
    journeys: LiveJourneys


def context_of(request: Request) -> ApiContext:
    context: ApiContext | None = getattr(request.app.state, "orbita", None)
    if context is None:
        raise ApiError(
            status_code=503,
            code="unavailable",
            message="the server is starting or stopping",
            headers={"Retry-After": "1"},
        )
    return context
