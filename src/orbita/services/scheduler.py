"""Entries that no ingested event makes: cron schedules over a segment, dates held in
traits, and segment entries and exits found by a refresh.

Each entry is a `CustomerEvent` naming its journey, with a synthetic trigger record whose
message id is (trigger, journey, customer, moment): a window fired twice (a restarted
`orbita run`, two schedulers) enters nobody twice, because run ids come from it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from orbita.engine.journeys import next_cron_time, next_date_trigger
from orbita.engine.segments.compile import compile_segment
from orbita.engine.segments.tables import segment_tables
from orbita.model.events import EventRecord
from orbita.model.strategy import Strategy
from orbita.model.triggers import (
    SEGMENT_ENTERED_EVENT,
    SEGMENT_EXITED_EVENT,
    DateTrigger,
    ScheduleTrigger,
    SegmentTrigger,
)
from orbita.services.journeys import CustomerEvent, PublishedJourneys
from orbita.services.segments import PreparedRefresh, segment_event_id, sync_customer_snapshot
from orbita.services.workspace import Workspace
from orbita.store.state import customers, segment_memberships

SCHEDULE_FIRED = "Journey Scheduled"
DATE_REACHED = "Journey Date Reached"


@dataclass(frozen=True, slots=True)
class _Profile:
    customer_id: int
    user_id: str | None
    timezone: str | None
    traits: Mapping[str, Any]  # only the traits date triggers read


class DateFires:
    """When each date trigger next fires, remembered across the consecutive windows of one
    run: the first fire strictly after a moment stays the first one after any later moment
    that it is still after, so a customer's date is worked out again only once its fire has
    passed (not for every customer every simulated day)."""

    def __init__(self) -> None:
        self._known: dict[tuple[DateTrigger, Any, str], tuple[datetime, datetime | None]] = {}

    def next(
        self, trigger: DateTrigger, *, value: Any, after: datetime, timezone: str
    ) -> datetime | None:
        try:
            key = (trigger, value, timezone)
            known = self._known.get(key)
        except TypeError:  # a list or object trait: nothing to remember it by
            return next_date_trigger(trigger, value=value, after=after, timezone=timezone)
        if known is not None:
            since, fire = known
            if since <= after and (fire is None or fire > after):
                return fire
        fire = next_date_trigger(trigger, value=value, after=after, timezone=timezone)
        self._known[key] = (after, fire)
        return fire


def timed_entries(
    *,
    workspace: Workspace,
    strategy: Strategy,
    journeys: PublishedJourneys,
    after: datetime,
    until: datetime,
    fires: DateFires | None = None,
    prepared: PreparedRefresh | None = None,
) -> list[CustomerEvent]:
    """Every entry a schedule or date trigger makes in (after, until], in time order.
    `fires` and `prepared` (the schedules' segment queries compiled once): kept by a caller
    that asks for consecutive windows (`orbita run`)."""
    timed = {
        name: journey.journey.trigger
        for name, journey in journeys.current.items()
        if isinstance(journey.journey.trigger, ScheduleTrigger | DateTrigger)
    }
    if not timed or until <= after:
        return []
    fires = fires or DateFires()
    dates = {t.trait for t in timed.values() if isinstance(t, DateTrigger)}
    profiles = _profiles(workspace, traits=sorted(dates))
    if any(isinstance(t, ScheduleTrigger) and t.segment for t in timed.values()):
        sync_customer_snapshot(workspace=workspace, full=False)
    entries: list[CustomerEvent] = []
    for name, trigger in sorted(timed.items()):
        if isinstance(trigger, ScheduleTrigger):
            entries.extend(
                _scheduled(
                    workspace,
                    strategy,
                    journeys,
                    name,
                    trigger,
                    profiles,
                    after=after,
                    until=until,
                    prepared=prepared,
                )
            )
        elif isinstance(trigger, DateTrigger):
            entries.extend(
                _dated(journeys, name, trigger, profiles, fires, after=after, until=until)
            )
    entries.sort(key=lambda e: (e.record.timestamp, e.journey or "", e.customer_id))
    return entries


def _profiles(workspace: Workspace, *, traits: Sequence[str]) -> list[_Profile]:
    """Every profile with the traits named (read out of the JSON by the database: parsing
    every profile's traits each simulated day was most of the schedule's time)."""
    query = select(
        customers.c.customer_id,
        customers.c.user_id,
        customers.c.timezone,
        *(customers.c.traits[name] for name in traits),
    )
    with workspace.state.connect() as connection:
        rows = connection.execute(query).all()
    return [
        _Profile(
            int(r[0]),
            r[1],
            r[2],
            {name: value for name, value in zip(traits, r[3:], strict=True) if value is not None},
        )
        for r in rows
    ]


def _occurrences(cron: str, *, zone: str, after: datetime, until: datetime) -> Iterator[datetime]:
    moment = next_cron_time(cron, after=after, timezone=zone)
    while moment <= until:
        yield moment
        moment = next_cron_time(cron, after=moment, timezone=zone)


def _scheduled(
    workspace: Workspace,
    strategy: Strategy,
    journeys: PublishedJourneys,
    name: str,
    trigger: ScheduleTrigger,
    profiles: list[_Profile],
    *,
    after: datetime,
    until: datetime,
    prepared: PreparedRefresh | None = None,
) -> Iterator[CustomerEvent]:
    by_zone: dict[str, list[_Profile]] = defaultdict(list)
    for profile in profiles:
        if trigger.timezone == "customer":
            zone = profile.timezone or journeys.timezone
        else:
            zone = journeys.timezone if trigger.timezone == "workspace" else trigger.timezone
        by_zone[zone].append(profile)
    # Zones with one offset share their moments: each moment's members are computed once.
    at_moment: dict[datetime, set[int]] = {}
    for zone, members in sorted(by_zone.items()):
        for moment in _occurrences(trigger.cron, zone=zone, after=after, until=until):
            wanted: set[int] | None = None
            if trigger.segment is not None:
                if moment not in at_moment:
                    at_moment[moment] = _members_at(
                        workspace, strategy, trigger.segment, moment, prepared=prepared
                    )
                wanted = at_moment[moment]
            for profile in members:
                if wanted is None or profile.customer_id in wanted:
                    yield _entry(name, profile, moment, kind="schedule", event=SCHEDULE_FIRED)


def _dated(
    journeys: PublishedJourneys,
    name: str,
    trigger: DateTrigger,
    profiles: list[_Profile],
    fires: DateFires,
    *,
    after: datetime,
    until: datetime,
) -> Iterator[CustomerEvent]:
    for profile in profiles:
        value = profile.traits.get(trigger.trait)
        if value is None:
            continue
        zone = profile.timezone or journeys.timezone
        moment = fires.next(trigger, value=value, after=after, timezone=zone)
        while moment is not None and moment <= until:
            props = {trigger.trait: value}
            yield _entry(name, profile, moment, kind="date", event=DATE_REACHED, properties=props)
            moment = fires.next(trigger, value=value, after=moment, timezone=zone)


def _members_at(
    workspace: Workspace,
    strategy: Strategy,
    segment: str,
    moment: datetime,
    *,
    prepared: PreparedRefresh | None = None,
) -> set[int]:
    """The segment's members at `moment`, computed then (as the in-memory runner does), not
    as of the last refresh: a daily schedule must not wait for the refresh to see a lapse.
    With `prepared`, the query is compiled once for every moment of the run."""
    dialect = workspace.events.backend

    def build(at: datetime) -> Any:
        return compile_segment(
            strategy.segments[segment],
            as_of=at,
            tables=segment_tables(dialect),  # type: ignore[arg-type]
            segments=strategy.segments,
            computed_traits=strategy.computed_traits,
            name=segment,
        ).select("customer_id")

    backend = workspace.events.ibis()
    if prepared is not None and dialect in ("duckdb", "postgres"):
        query = prepared.query(
            strategy,
            ("schedule", segment),
            build,
            as_of=moment,
            dialect=dialect,  # type: ignore[arg-type]
        )
        if query is not None:
            return {int(row[0]) for row in query.fetchall(backend, moment)}
    found = backend.to_pyarrow(build(moment))
    return set(found.column("customer_id").to_pylist())


def _entry(
    name: str,
    profile: _Profile,
    moment: datetime,
    *,
    kind: str,
    event: str,
    properties: Mapping[str, Any] | None = None,
) -> CustomerEvent:
    record = EventRecord(
        message_id=f"{kind}:{name}:{profile.customer_id}:{moment.isoformat()}",
        type="track",
        name=event,
        user_id=profile.user_id,
        anonymous_id=None,
        properties={"journey": name, **(properties or {})},
        context={"library": {"name": "orbita"}},
        timestamp=moment,
        received_at=moment,
    )
    return CustomerEvent(customer_id=profile.customer_id, record=record, journey=name)


def segment_changes(
    *, workspace: Workspace, journeys: PublishedJourneys, as_of: datetime
) -> list[CustomerEvent]:
    """The `Segment Entered` / `Segment Exited` events a refresh at `as_of` made, for the
    segments that journeys trigger on (the refresh stores them; this hands them on)."""
    watched = sorted(
        {
            journey.journey.trigger.segment
            for journey in journeys.current.values()
            if isinstance(journey.journey.trigger, SegmentTrigger)
        }
    )
    if not watched:
        return []
    table = segment_memberships.c
    query = (
        select(table.segment, table.customer_id, table.entered_at, table.exited_at)
        .where(table.segment.in_(watched))
        .where(or_(table.entered_at == as_of, table.exited_at == as_of))
    )
    with workspace.state.connect() as connection:
        rows = connection.execute(query).all()
        ids = _user_ids(connection, {int(r[1]) for r in rows})
    changes = []
    for segment, customer_id, entered_at, exited_at in rows:
        for direction, event, at in (
            ("entered", SEGMENT_ENTERED_EVENT, entered_at),
            ("exited", SEGMENT_EXITED_EVENT, exited_at),
        ):
            if at != as_of:
                continue
            record = EventRecord(
                message_id=segment_event_id(segment, direction, int(customer_id), as_of),
                type="track",
                name=event,
                user_id=ids.get(int(customer_id)),
                anonymous_id=None,
                properties={"segment": segment},
                context={"library": {"name": "orbita"}},
                timestamp=as_of,
                received_at=as_of,
            )
            changes.append(CustomerEvent(customer_id=int(customer_id), record=record))
    return changes


def _user_ids(connection: Any, customer_ids: Iterable[int]) -> dict[int, str | None]:
    wanted = sorted(customer_ids)
    found: dict[int, str | None] = {}
    for start in range(0, len(wanted), 10_000):
        chunk = wanted[start : start + 10_000]
        query = select(customers.c.customer_id, customers.c.user_id).where(
            customers.c.customer_id.in_(chunk)
        )
        found.update({int(cid): uid for cid, uid in connection.execute(query)})
    return found
