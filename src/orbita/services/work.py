"""One pass of a journeys worker on the wall clock: what `orbita worker` and `orbita serve`
repeat every second or so.

    schedule and date entries due since the last pass (the mark is stored, so a restarted
    or second worker neither misses a window nor enters anyone twice: run ids come from
    the entry's moment),
    runs due now, claimed in batches (several workers share them with SKIP LOCKED).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from orbita.core.errors import FieldProblem, InvalidInputError, NotFoundError
from orbita.model.events import EventRecord
from orbita.model.strategy import Strategy
from orbita.model.triggers import ApiTrigger
from orbita.services.apply import Applied, applied_strategy, applied_version
from orbita.services.attribution import attribute_due
from orbita.services.broadcasts import broadcasts_due
from orbita.services.journeys import (
    CustomerEvent,
    PublishedJourneys,
    advance_due,
    handle_events,
    load_journeys,
    resolve_customers,
)
from orbita.services.scheduler import segment_changes, timed_entries
from orbita.services.workspace import Workspace, read_value, write_value

SCHEDULER_KEY = "scheduler"
# A first pass looks back this far for schedule and date entries it should not miss.
FIRST_LOOK_BACK = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class PassReport:
    entered: int
    advanced: int
    messages: int
    batches: int


def work_once(
    *,
    workspace: Workspace,
    strategy: Strategy,
    journeys: PublishedJourneys,
    now: datetime,
    batch: int = 1000,
    worker_id: str = "worker",
    max_batches: int | None = None,
) -> PassReport:
    """Scheduled entries up to `now`, then every run due by `now` (or `max_batches`)."""
    entered = 0
    after = _scheduled_until(workspace) or now - FIRST_LOOK_BACK
    if now > after:
        entries = timed_entries(
            workspace=workspace, strategy=strategy, journeys=journeys, after=after, until=now
        )
        if entries:
            entered = handle_events(workspace=workspace, journeys=journeys, events=entries).entered
        _mark_scheduled(workspace, now)
    broadcasts_due(workspace=workspace, now=now, strategy=strategy)  # due sends, A/B decisions
    report = advance_due(
        workspace=workspace,
        journeys=journeys,
        now=now,
        limit=batch,
        worker_id=worker_id,
        max_batches=max_batches,
    )
    attribute_due(workspace=workspace, journeys=strategy.journeys, now=now)  # every 5 min
    return PassReport(
        entered=entered,
        advanced=report.claimed,
        messages=report.messages,
        batches=report.batches,
    )


def _scheduled_until(workspace: Workspace) -> datetime | None:
    value = read_value(workspace=workspace, key=SCHEDULER_KEY)
    return datetime.fromisoformat(value["until"]) if value else None


def _mark_scheduled(workspace: Workspace, until: datetime) -> None:
    write_value(
        workspace=workspace, key=SCHEDULER_KEY, value={"until": until.isoformat()}, now=until
    )


class LiveJourneys:
    """The applied strategy's journeys in a long-running process (`orbita serve`): loaded
    again after each `orbita apply`, asked at most every `recheck` seconds.

    `on_stored` is the ingestor's callback: events from the API reach the journeys as they
    are stored (wait_for, exit_on, goals, then triggers), in the writer's thread.
    """

    def __init__(self, *, workspace: Workspace, recheck: float = 1.0) -> None:
        self.workspace = workspace
        self.recheck = recheck
        self._lock = threading.Lock()
        self._version: int | None = None
        self._checked = -float("inf")
        self._loaded: tuple[Strategy, PublishedJourneys] | None = None
        self.applied: Applied | None = None  # the version loaded, with its file's path

    def current(self) -> tuple[Strategy, PublishedJourneys] | None:
        """The applied strategy and its journeys; None before the first apply."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= self.recheck:
                self._checked = now
                version = applied_version(workspace=self.workspace)
                if version != self._version:
                    applied = applied_strategy(workspace=self.workspace)
                    self.applied = applied
                    if applied is not None:
                        journeys = load_journeys(
                            workspace=self.workspace,
                            timezone=applied.strategy.timezone,
                            names=list(applied.strategy.journeys),
                        )
                        self._loaded = (applied.strategy, journeys)
                    self._version = version
            return self._loaded

    def on_stored(self, events: Sequence[CustomerEvent]) -> None:
        loaded = self.current()
        if loaded is not None and events:
            handle_events(workspace=self.workspace, journeys=loaded[1], events=events)

    def work(
        self,
        *,
        now: datetime,
        worker_id: str,
        batch: int = 1000,
        max_batches: int | None = None,
    ) -> PassReport | None:
        """One worker pass (see `work_once`); None before the first apply."""
        loaded = self.current()
        if loaded is None:
            return None
        strategy, journeys = loaded
        return work_once(
            workspace=self.workspace,
            strategy=strategy,
            journeys=journeys,
            now=now,
            batch=batch,
            worker_id=worker_id,
            max_batches=max_batches,
        )

    def segment_changes(self, *, as_of: datetime) -> None:
        """Hand a refresh's `Segment Entered` / `Segment Exited` to the journeys."""
        loaded = self.current()
        if loaded is None:
            return
        changes = segment_changes(workspace=self.workspace, journeys=loaded[1], as_of=as_of)
        if changes:
            handle_events(workspace=self.workspace, journeys=loaded[1], events=changes)


# --- POST /v1/journeys/{name}/trigger ------------------------------------------------------

API_TRIGGER_EVENT = "API Trigger"


@dataclass(frozen=True, slots=True)
class TriggerOutcome:
    customer_id: int
    message_id: str
    entered: bool


def api_trigger(
    *,
    workspace: Workspace,
    journeys: PublishedJourneys,
    journey: str,
    user_id: str,
    properties: Mapping[str, Any],
    message_id: str | None = None,
    at: datetime | None = None,
) -> TriggerOutcome:
    """Enter one known customer into a journey whose trigger is `api`. The message id is
    the idempotency key: the same call again starts nothing (the run id comes from it)."""
    compiled = journeys.current.get(journey)
    if compiled is None:
        raise NotFoundError(f"no journey {journey!r}")
    if not isinstance(compiled.journey.trigger, ApiTrigger):
        raise InvalidInputError(
            [FieldProblem(field="name", message=f"journey {journey!r} does not start on API calls")]
        )
    moment = at or workspace.clock.now()
    if moment.tzinfo is None:
        raise InvalidInputError([FieldProblem(field="timestamp", message="needs a time zone")])
    record = EventRecord(
        message_id=message_id or f"api:{uuid.uuid4()}",
        type="track",
        name=API_TRIGGER_EVENT,
        user_id=user_id,
        anonymous_id=None,
        properties=dict(properties),
        context={"library": {"name": "orbita-api"}},
        timestamp=moment,
        received_at=workspace.clock.now(),
    )
    found = resolve_customers(workspace=workspace, records=[record])
    if not found:
        raise NotFoundError(f"no customer with userId {user_id!r}")
    entry = CustomerEvent(customer_id=found[0].customer_id, record=record, journey=journey)
    report = handle_events(workspace=workspace, journeys=journeys, events=[entry])
    return TriggerOutcome(
        customer_id=entry.customer_id, message_id=record.message_id, entered=report.entered > 0
    )
