"""Customers: profile and latest events, the event timeline, and GDPR erasure (admin key)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from orbita.api.auth import AdminKey
from orbita.api.deps import context_of
from orbita.api.schemas import Customer, Erasure, Event, EventPage, Profile
from orbita.services import customers as service

router = APIRouter(prefix="/v1/customers", tags=["customers"], dependencies=[AdminKey])

UserId = Annotated[str, Path(min_length=1, max_length=255, description="The customer's userId.")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown admin key."},
    403: {"description": "A write key cannot read or erase customers."},
    404: {"description": "No customer has this userId."},
}
LATEST_EVENTS = 50


# Plain `def`: FastAPI runs these in its thread pool, so store queries never block the loop.
# `:path` lets user ids hold "/" (sent as %2F); the /events route is declared first so that
# it is matched before the profile route swallows the suffix.
@router.get("/{user_id:path}/events", response_model=EventPage, responses=_ERRORS)
def customer_events(
    request: Request,
    user_id: UserId,
    limit: Annotated[int, Query(ge=1, le=1000, description="Events per page.")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
) -> EventPage:
    """The customer's events, newest first, a page at a time."""
    page = service.customer_events(
        workspace=context_of(request).workspace, user_id=user_id, limit=limit, cursor=cursor
    )
    return EventPage(events=[Event.of(e) for e in page.events], next_cursor=page.next_cursor)


@router.get("/{user_id:path}", response_model=Customer, responses=_ERRORS)
def get_customer(request: Request, user_id: UserId) -> Customer:
    """The profile, its traits, how many events it has and the 50 newest."""
    view = service.get_customer(
        workspace=context_of(request).workspace, user_id=user_id, latest=LATEST_EVENTS
    )
    return Customer(
        profile=Profile.of(view.profile),
        events_count=view.events_count,
        latest_events=[Event.of(e) for e in view.latest_events],
    )


@router.delete("/{user_id:path}", response_model=Erasure, responses=_ERRORS)
def delete_customer(request: Request, user_id: UserId) -> Erasure:
    """Erase the customer (GDPR): profile, identities and events. Answers what was removed."""
    context = context_of(request)
    # Run between ingest writes, so no write in flight brings back what was erased.
    report = context.ingestor.exclusive(
        lambda: service.delete_customer(workspace=context.workspace, user_id=user_id)
    )
    return Erasure.model_validate(dataclasses.asdict(report))
