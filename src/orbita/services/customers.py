"""Reading and erasing customers: profile, timeline, GDPR erasure."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, delete, func, insert, select

from orbita.core.errors import NotFoundError
from orbita.model.customers import CustomerProfile
from orbita.model.events import StoredEvent
from orbita.services.identity import ANONYMOUS, USER
from orbita.services.segments import erase_memberships
from orbita.services.workspace import Workspace
from orbita.store.events import EventCursor
from orbita.store.state import (
    consents,
    customers,
    delivery_attempts,
    erasures,
    identities,
    journey_conversions,
    journey_runs,
    journey_steps,
    outbox,
)

MAX_PAGE = 1_000


@dataclass(frozen=True, slots=True)
class CustomerView:
    profile: CustomerProfile
    events_count: int
    latest_events: list[StoredEvent]


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[StoredEvent]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What an erasure removed."""

    user_id: str
    customer_id: int
    profiles: int
    identities: int
    events: int
    memberships: int  # segment memberships and lifecycle stage history
    journey_rows: int  # journey runs, their steps, conversions and outbox messages
    delivery_rows: int = 0  # delivery decisions and consents (suppressed addresses stay)


def get_customer(*, workspace: Workspace, user_id: str, latest: int = 50) -> CustomerView:
    profile = find_customer(workspace=workspace, user_id=user_id)
    latest_events = workspace.events.page(customer_id=profile.customer_id, limit=latest)
    return CustomerView(
        profile=profile,
        events_count=workspace.events.count(customer_id=profile.customer_id),
        latest_events=[event for event, _ in latest_events],
    )


def customer_events(
    *, workspace: Workspace, user_id: str, limit: int = 100, cursor: str | None = None
) -> EventPage:
    """One page of a customer's events, newest first; pass `next_cursor` back for the next."""
    profile = find_customer(workspace=workspace, user_id=user_id)
    after = EventCursor.decode(cursor) if cursor else None
    limit = max(1, min(limit, MAX_PAGE))
    # One more than asked tells whether another page exists.
    rows = workspace.events.page(customer_id=profile.customer_id, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    return EventPage(
        events=[event for event, _ in rows],
        next_cursor=rows[-1][1].encode() if more else None,
    )


def find_customer(*, workspace: Workspace, user_id: str) -> CustomerProfile:
    """A profile by user id (current or aliased), or else by anonymous id."""
    with workspace.state.connect() as connection:
        customer_id = _customer_id(connection, user_id)
        if customer_id is None:
            raise NotFoundError(f"no customer with id {user_id!r}")
        return _profile(connection, customer_id)


def delete_customer(*, workspace: Workspace, user_id: str) -> ErasureReport:
    """Erase a customer (GDPR): events first, then ids and profile; record what was removed."""
    profile = find_customer(workspace=workspace, user_id=user_id)
    customer_id = profile.customer_id
    events = workspace.events.delete_customers(customer_ids=[customer_id])
    with workspace.state.begin() as connection:
        removed_ids = connection.execute(
            delete(identities).where(identities.c.customer_id == customer_id)
        ).rowcount
        memberships = erase_memberships(
            connection=connection, customer_id=customer_id, now=workspace.clock.now()
        )
        journey_rows = _erase_journeys(connection, customer_id)
        delivery_rows = sum(
            connection.execute(delete(table).where(table.c.customer_id == customer_id)).rowcount
            for table in (delivery_attempts, consents)
        )
        removed_profiles = connection.execute(
            delete(customers).where(customers.c.customer_id == customer_id)
        ).rowcount
        report = ErasureReport(
            user_id=user_id,
            customer_id=customer_id,
            profiles=removed_profiles,
            identities=removed_ids,
            events=events,
            memberships=memberships,
            journey_rows=journey_rows,
            delivery_rows=delivery_rows,
        )
        connection.execute(
            insert(erasures).values(
                customer_id=customer_id,
                removed={
                    "profiles": report.profiles,
                    "identities": report.identities,
                    "events": report.events,
                    "memberships": report.memberships,
                    "journey_rows": report.journey_rows,
                    "delivery_rows": report.delivery_rows,
                },
                erased_at=workspace.clock.now(),
            )
        )
    return report


def _erase_journeys(connection: Connection, customer_id: int) -> int:
    runs = select(journey_runs.c.run_id).where(journey_runs.c.customer_id == customer_id)
    removed = connection.execute(
        delete(journey_steps).where(journey_steps.c.run_id.in_(runs))
    ).rowcount
    for table in (outbox, journey_conversions, journey_runs):
        removed += connection.execute(
            delete(table).where(table.c.customer_id == customer_id)
        ).rowcount
    return int(removed)


def count_customers(*, workspace: Workspace) -> int:
    with workspace.state.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(customers)).scalar_one())


def _customer_id(connection: Connection, value: str) -> int | None:
    for kind in (USER, ANONYMOUS):
        found = connection.execute(
            select(identities.c.customer_id).where(
                identities.c.kind == kind, identities.c.value == value
            )
        ).scalar_one_or_none()
        if found is not None:
            return int(found)
    return None


def _profile(connection: Connection, customer_id: int) -> CustomerProfile:
    row = connection.execute(select(customers).where(customers.c.customer_id == customer_id)).one()
    anonymous_ids = connection.execute(
        select(identities.c.value)
        .where(identities.c.customer_id == customer_id, identities.c.kind == ANONYMOUS)
        .order_by(identities.c.value)
    ).scalars()
    return CustomerProfile(
        customer_id=int(row.customer_id),
        user_id=row.user_id,
        anonymous_ids=tuple(anonymous_ids),
        email=row.email,
        phone=row.phone,
        telegram_chat_id=row.telegram_chat_id,
        timezone=row.timezone,
        locale=row.locale,
        traits=dict(row.traits or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
