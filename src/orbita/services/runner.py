"""`orbita run --until T`: move a workspace through time, doing everything due, in order.

The clock moves in windows (`step`, an hour by default). In each window the runner
1. stores the window's events (a replayed file, or what a simulation's customers did) and
   plays them through the journeys; scheduled and date entries of the window go with them,
   each at its own time,
2. refreshes the segments when `refresh_every` has passed, and hands the refresh's
   `Segment Entered` / `Segment Exited` events to the journeys,
3. advances every run due by the window's end (each at its own wake time),
4. tells `on_window` (the demo's simulated customers answer the messages sent).

Per customer the order is exact: before an event reaches a customer's runs, those runs take
every step due before it (`handle_events` catches them up). Across customers nothing
depends on order. What a window cannot see is a refresh's membership before the window
ends: segment facts are as fresh as `refresh_every`.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from orbita.core.clock import SimulatedClock
from orbita.core.errors import InvalidInputError, UserError
from orbita.model.events import EventRecord
from orbita.model.strategy import Strategy
from orbita.services.apply import require_applied
from orbita.services.attribution import attribute_window
from orbita.services.broadcasts import broadcasts_due, next_broadcast_at
from orbita.services.identity import IdentityResolver
from orbita.services.importer import read_events
from orbita.services.ingest import store_records
from orbita.services.journeys import (
    CustomerEvent,
    EventsReport,
    PublishedJourneys,
    advance_due,
    handle_events,
    load_journeys,
    resolve_customers,
)
from orbita.services.scheduler import DateFires, segment_changes, timed_entries
from orbita.services.segments import PreparedRefresh, refresh_segments
from orbita.services.workspace import Workspace, read_value, write_value
from orbita.store.state import LIVE_RUNS, journey_runs

CHUNK = 20_000  # events stored and played per transaction
TIMED_HORIZON = timedelta(days=1)  # schedule and date entries are worked out a day at a time

OnWindow = Callable[[datetime, datetime], Iterable[EventRecord]]
"""Called after each window (start, end) with the clock at its end; returns events that
happen later (at or after the end), which the runner merges into its timeline."""


@dataclass(slots=True)
class RunReport:
    started: datetime
    until: datetime
    windows: int = 0
    events: int = 0
    entered: int = 0
    messages: int = 0
    suppressed: int = 0
    conversions: int = 0
    ended: int = 0
    advanced: int = 0
    refreshes: int = 0
    late_events: int = 0  # events older than the clock when they came: played at once
    per_window: list[int] = field(default_factory=list)
    # Wall seconds per phase: events (stored and played), schedule (scheduled and date
    # entries), refresh (segments and their enter/exit events), advance (due steps),
    # on_window (the caller's hook), attribution (goal events credited at the end).
    seconds: dict[str, float] = field(default_factory=dict)

    def _spent(self, phase: str, started: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started


class _Timeline:
    """Events in time order: the given stream merged with what `on_window` adds."""

    def __init__(self, events: Iterable[EventRecord]) -> None:
        self._stream: Iterator[EventRecord] = iter(events)
        # (time, arrival order, from the stream, record): the order keeps ties stable.
        self._heap: list[tuple[datetime, int, bool, EventRecord]] = []
        self._count = itertools.count()
        self._last: datetime | None = None
        self._pull()

    def _pull(self) -> None:
        record = next(self._stream, None)
        if record is None:
            return
        if self._last is not None and record.timestamp < self._last:
            raise InvalidInputError(
                [], summary=f"events must come in time order: {record.message_id} goes back"
            )
        self._last = record.timestamp
        heapq.heappush(self._heap, (record.timestamp, next(self._count), True, record))

    def add(self, records: Iterable[EventRecord]) -> None:
        for record in records:
            heapq.heappush(self._heap, (record.timestamp, next(self._count), False, record))

    def next_time(self) -> datetime | None:
        return self._heap[0][0] if self._heap else None

    def before(self, moment: datetime, *, limit: int) -> list[EventRecord]:
        taken: list[EventRecord] = []
        while self._heap and self._heap[0][0] < moment and len(taken) < limit:
            _, _, from_stream, record = heapq.heappop(self._heap)
            if from_stream:
                self._pull()
            taken.append(record)
        return taken


def run_until(
    *,
    workspace: Workspace,
    strategy: Strategy,
    journeys: PublishedJourneys,
    start: datetime,
    until: datetime,
    events: Iterable[EventRecord] = (),
    step: timedelta = timedelta(hours=1),
    refresh_every: timedelta | None = timedelta(days=1),
    on_window: OnWindow | None = None,
    progress: Callable[[datetime], None] | None = None,
) -> RunReport:
    """Process everything due in (start, until], window by window (see the module doc).

    The workspace's clock must be a `SimulatedClock` at `start`; it ends at `until`.
    `events` must come in time order; those before `start` are played first.
    """
    clock = workspace.clock
    if not isinstance(clock, SimulatedClock):
        raise UserError("run_until moves a simulated clock: open the workspace with one")
    if start.tzinfo is None or until.tzinfo is None:
        raise InvalidInputError([], summary="run_until needs aware datetimes")
    if until < start:
        raise UserError(f"--until {until.isoformat()} is before the clock ({start.isoformat()})")
    if step <= timedelta(0):
        raise UserError("the step must be positive")
    report = RunReport(started=start, until=until)
    timeline = _Timeline(events)
    resolver = IdentityResolver()  # one cache of ids for the whole run
    refreshing = refresh_every is not None and bool(strategy.segments or strategy.stages)
    last_refresh = start
    timed: list[CustomerEvent] = []  # scheduled entries worked out up to `timed_until`
    timed_until = start
    fires = DateFires()  # date triggers' next fires, worked out once per customer and fire
    prepared = PreparedRefresh()  # the refresh's queries, compiled once for the run
    window_start = start
    while window_start < until:
        if timed_until <= window_start:
            began = time.perf_counter()
            horizon = min(window_start + TIMED_HORIZON, until)
            timed = timed_entries(
                workspace=workspace,
                strategy=strategy,
                journeys=journeys,
                after=timed_until,
                until=horizon,
                fires=fires,
                prepared=prepared,
            )
            timed_until = horizon
            report._spent("schedule", began)
        window_end = min(window_start + step, until)
        # Nothing due before the next event, wake time, entry or refresh: jump to it.
        upcoming = [timeline.next_time(), _next_wake(workspace), timed_until]
        upcoming.append(timed[0].record.timestamp if timed else None)
        upcoming.append(last_refresh + refresh_every if refreshing and refresh_every else None)
        upcoming.append(
            next_broadcast_at(workspace=workspace, strategy=strategy, after=window_start)
        )
        soonest = min((t for t in upcoming if t is not None), default=until)
        if soonest > window_end:
            window_end = min(soonest, until)
        played = 0
        began = time.perf_counter()
        while True:
            # Events exactly at the window's end belong to the next window (they are due
            # once the clock passes them); the last window takes its end too.
            edge = window_end + timedelta(microseconds=1) if window_end == until else window_end
            records = timeline.before(edge, limit=CHUNK)
            cut = records[-1].timestamp if len(records) == CHUNK else edge
            split = bisect.bisect_left([e.record.timestamp for e in timed], cut)
            now_due, timed = timed[:split], timed[split:]
            if not records and not now_due:
                break
            clock.set(max(clock.now(), records[-1].timestamp if records else window_start))
            played += _play(workspace, journeys, records, now_due, report, resolver)
        report._spent("events", began)
        clock.set(window_end)
        if (
            refreshing
            and refresh_every is not None
            and (window_end - last_refresh >= refresh_every or window_end == until)
        ):
            began = time.perf_counter()
            refresh_segments(
                workspace=workspace, strategy=strategy, as_of=window_end, prepared=prepared
            )
            report.refreshes += 1
            last_refresh = window_end
            changes = segment_changes(workspace=workspace, journeys=journeys, as_of=window_end)
            if changes:
                found = handle_events(workspace=workspace, journeys=journeys, events=changes)
                _account(report, found)
            report._spent("refresh", began)
        began = time.perf_counter()
        advanced = advance_due(workspace=workspace, journeys=journeys, now=window_end)
        report.advanced += advanced.claimed
        report.messages += advanced.messages
        report.suppressed += advanced.suppressed
        report.conversions += advanced.conversions
        report.ended += advanced.ended
        broadcasts_due(workspace=workspace, now=window_end, strategy=strategy, since=start)
        save_clock(workspace=workspace, now=window_end)
        report._spent("advance", began)
        if on_window is not None:
            began = time.perf_counter()
            later = list(on_window(window_start, window_end))
            report.late_events += sum(1 for r in later if r.timestamp < window_end)
            timeline.add(later)
            report._spent("on_window", began)
        report.windows += 1
        report.per_window.append(played)
        if progress is not None:
            progress(window_end)
        window_start = window_end
    began = time.perf_counter()
    # Goal events credited to the messages (or holdout arms) before them, as a worker does.
    attribute_window(workspace=workspace, journeys=strategy.journeys, start=start, end=until)
    report._spent("attribution", began)
    return report


def _next_wake(workspace: Workspace) -> datetime | None:
    query = select(func.min(journey_runs.c.wake_at)).where(LIVE_RUNS)
    with workspace.state.connect() as connection:
        found: datetime | None = connection.execute(query).scalar()
    return found


def _play(
    workspace: Workspace,
    journeys: PublishedJourneys,
    records: Sequence[EventRecord],
    entries: Sequence[CustomerEvent],
    report: RunReport,
    resolver: IdentityResolver,
) -> int:
    stored: list[CustomerEvent] = []
    if records:
        store_records(workspace=workspace, records=records, resolver=resolver)
        stored = resolve_customers(workspace=workspace, records=records)
    report.events += len(records)
    if stored or entries:
        found = handle_events(workspace=workspace, journeys=journeys, events=[*stored, *entries])
        _account(report, found)
    return len(records)


def _account(report: RunReport, found: EventsReport) -> None:
    for name in ("entered", "messages", "suppressed", "conversions", "ended"):
        setattr(report, name, getattr(report, name) + getattr(found, name))


def run_applied(
    *,
    workspace: Workspace,
    until: datetime | None,
    start: datetime | None = None,
    step: timedelta = timedelta(hours=1),
    refresh_every: timedelta | None = timedelta(days=1),
    events_file: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunReport:
    """`orbita run` / `import events --replay`: the applied strategy from where the
    workspace's simulated clock stands (`start` sets it on the first run) to `until`
    (default: the file's last event). Events the clock has passed are not played again.
    `progress` gets the percentage of simulated time done."""
    begin = saved_clock(workspace=workspace)
    if begin is None:
        if start is None:
            raise UserError(
                "this workspace has no simulated clock yet: give --from (where time starts)"
            )
        begin = start
    elif start is not None and start != begin:
        raise UserError(
            f"--from: the workspace's clock is at {begin.isoformat()} already "
            "(a clock does not go back)"
        )
    workspace.clock = SimulatedClock(begin)
    events = read_events(workspace=workspace, path=events_file) if events_file else []
    events = [record for record in events if record.timestamp >= begin]
    if until is None:
        if not events:
            raise UserError("--until: where should the clock stop?")
        until = max(begin, events[-1].timestamp)
    applied = require_applied(workspace=workspace)
    journeys = load_journeys(
        workspace=workspace,
        timezone=applied.strategy.timezone,
        names=list(applied.strategy.journeys),
    )
    total = max((until - begin).total_seconds(), 1.0)
    return run_until(
        workspace=workspace,
        strategy=applied.strategy,
        journeys=journeys,
        start=begin,
        until=until,
        events=events,
        step=step,
        refresh_every=refresh_every,
        progress=(
            (lambda now: progress(int(100 * (now - begin).total_seconds() / total)))
            if progress is not None
            else None
        ),
    )


# --- the workspace's simulated clock ------------------------------------------------------

CLOCK_KEY = "clock"


def saved_clock(*, workspace: Workspace) -> datetime | None:
    """Where `orbita run` left the workspace's simulated time (None: it never ran)."""
    value = read_value(workspace=workspace, key=CLOCK_KEY)
    return datetime.fromisoformat(value["now"]) if value else None


def save_clock(*, workspace: Workspace, now: datetime) -> None:
    write_value(workspace=workspace, key=CLOCK_KEY, value={"now": now.isoformat()}, now=now)
