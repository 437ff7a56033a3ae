"""One pass of a journeys worker on the wall clock: what `orbita worker` and `orbita serve`
repeat every second or so.

    schedule and date entries due since the last pass (the mark is stored, so a restarted
    or second worker neither misses a window nor enters anyone twice: run ids come from
    the entry's moment),
    runs due now, claimed in batches (several workers share them with SKIP LOCKED).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from orbita.model.strategy import Strategy
from orbita.services.journeys import PublishedJourneys, advance_due, handle_events
from orbita.services.scheduler import timed_entries
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
    report = advance_due(
        workspace=workspace,
        journeys=journeys,
        now=now,
        limit=batch,
        worker_id=worker_id,
        max_batches=max_batches,
    )
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
