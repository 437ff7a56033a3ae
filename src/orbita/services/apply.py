"""`orbita plan` and `orbita apply`: a strategy file against the version the workspace runs.

A plan lists what applying would change — segments, computed traits, stages, journeys,
templates, channels, broadcasts, goals added, changed or removed — and, for a changed
journey, how many customers are in it at each step and what happens to them: they finish on
the version they started, or (`on_change: migrate`) move to the new version where their step
still exists.
Applying publishes the changed journeys, then stores the file as a new strategy version and
moves the runs that migrate, in one transaction; publishing is idempotent (by definition),
so an apply cut off between the two is completed by applying the file again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, func, insert, inspect, select, update

from orbita.core.errors import UserError
from orbita.core.settings import Settings
from orbita.engine.journeys import RunState, compile_journey
from orbita.model.journeys import JourneyGraph
from orbita.model.strategy import Strategy, parse_strategy
from orbita.services.journeys import PublishedJourneys, load_journeys, publish_journeys
from orbita.services.strategy import load_strategy, strategy_path
from orbita.services.workspace import Workspace
from orbita.store.state import (
    LIVE_RUNS,
    create_state_engine,
    journey_runs,
    strategy_versions,
)

Action = Literal["added", "changed", "removed"]
# The named parts of a strategy, compared entry by entry.
NAMED_PARTS = ("segments", "computed_traits", "journeys", "templates", "channels", "broadcasts")
# The parts compared whole.
WHOLE_PARTS = ("timezone", "stages", "rfm", "goals")


@dataclass(frozen=True, slots=True)
class Change:
    part: str  # segments, journeys, … (the strategy's key)
    name: str  # the entry's name; the part's own name for whole parts
    action: Action


@dataclass(frozen=True, slots=True)
class RunsAtStep:
    """Customers in a changed journey at one step of one running version."""

    journey: str
    version: int
    node: str | None
    customers: int
    outcome: Literal["finish", "migrate"]  # what applying does to them


@dataclass(frozen=True, slots=True)
class Plan:
    current_version: int | None  # the applied strategy's version; None before the first
    changes: tuple[Change, ...]
    runs: tuple[RunsAtStep, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.changes


@dataclass(frozen=True, slots=True)
class Applied:
    version: int
    strategy: Strategy
    source: str


@dataclass(frozen=True, slots=True)
class ApplyReport:
    plan: Plan
    version: int | None  # the new strategy version; None when nothing changed
    published: tuple[tuple[str, int], ...] = ()  # journeys with their new version
    migrated: int = 0  # runs moved onto a new version
    journeys: PublishedJourneys | None = field(default=None, compare=False)


def _digest(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


def _dump(value: Any) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    elif isinstance(value, list | tuple):
        value = [_plain(item) for item in value]
    return json.dumps(value, sort_keys=True, default=str)


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def applied_strategy(*, workspace: Workspace) -> Applied | None:
    """The newest applied strategy, or None before the first `orbita apply`."""
    return _newest(workspace.state)


def applied_strategy_of(*, settings: Settings) -> Applied | None:
    """`applied_strategy` reading the state store only (the event store may be held by a
    running server); None for a workspace that was never initialised or applied."""
    if not settings.keys_path.exists():
        return None
    engine = create_state_engine(settings.state_url)
    try:
        if not inspect(engine).has_table(strategy_versions.name):
            return None
        return _newest(engine)
    finally:
        engine.dispose()


def strategy_in_use(*, settings: Settings, path: Path | None = None) -> tuple[Path, Strategy]:
    """The strategy a command works with, and the file its template paths are relative to:
    `path` when given; else the applied strategy (`orbita apply`); else the workspace's
    strategy.yaml."""
    found = _in_use(settings=settings, path=path, required=True)
    assert found is not None  # required: a missing file is the loader's user error
    return found


def strategy_if_any(*, settings: Settings) -> Strategy | None:
    """`strategy_in_use` for commands that also work without one (KPIs): None when the
    workspace has neither an applied strategy nor a strategy.yaml."""
    found = _in_use(settings=settings, path=None, required=False)
    return found[1] if found is not None else None


def _in_use(
    *, settings: Settings, path: Path | None, required: bool
) -> tuple[Path, Strategy] | None:
    if path is None:
        applied = applied_strategy_of(settings=settings)
        if applied is not None:
            return Path(applied.source), applied.strategy
    found = strategy_path(workspace_dir=settings.workspace, path=path)
    if not required and not found.exists():
        return None
    return found, load_strategy(path=found)


def _newest(engine: Engine) -> Applied | None:
    query = (
        select(strategy_versions.c.version, strategy_versions.c.source, strategy_versions.c.content)
        .order_by(strategy_versions.c.version.desc())
        .limit(1)
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    version, source, content = row
    return Applied(version=version, strategy=parse_strategy(content, source=source), source=source)


def applied_version(*, workspace: Workspace) -> int | None:
    """The newest applied strategy's version (cheap: workers ask before each pass)."""
    with workspace.state.connect() as connection:
        found: int | None = connection.execute(
            select(func.max(strategy_versions.c.version))
        ).scalar()
    return found


def require_applied(*, workspace: Workspace) -> Applied:
    found = applied_strategy(workspace=workspace)
    if found is None:
        raise UserError("no strategy is applied to this workspace yet: run `orbita apply FILE`")
    return found


def _changes(old: Strategy | None, new: Strategy) -> list[Change]:
    changes: list[Change] = []
    for part in NAMED_PARTS:
        before: Mapping[str, Any] = getattr(old, part) if old is not None else {}
        after: Mapping[str, Any] = getattr(new, part)
        for name in sorted(set(before) | set(after)):
            if name not in before:
                changes.append(Change(part, name, "added"))
            elif name not in after:
                changes.append(Change(part, name, "removed"))
            elif _dump(before[name]) != _dump(after[name]):
                changes.append(Change(part, name, "changed"))
    # Before the first apply, a whole part counts as added when it is not the default.
    baseline = old if old is not None else Strategy(workspace=new.workspace)
    for part in WHOLE_PARTS:
        if _dump(getattr(baseline, part)) != _dump(getattr(new, part)):
            action: Action = "added" if old is None else "changed"
            changes.append(Change(part, part, action))
    return changes


def _live_runs(connection: Connection, names: list[str]) -> list[tuple[str, int, str | None, int]]:
    if not names:
        return []
    query = (
        select(
            journey_runs.c.journey,
            journey_runs.c.version,
            journey_runs.c.node,
            func.count(),
        )
        .where(LIVE_RUNS, journey_runs.c.journey.in_(names))
        .group_by(journey_runs.c.journey, journey_runs.c.version, journey_runs.c.node)
        .order_by(journey_runs.c.journey, journey_runs.c.version, journey_runs.c.node)
    )
    return [(j, int(v), n, int(c)) for j, v, n, c in connection.execute(query)]


def _node_kept(old: JourneyGraph, new: JourneyGraph, node: str | None) -> bool:
    """Whether a run at `node` of the old definition has the same step in the new one."""
    before = old.nodes.get(node) if node is not None else None
    after = new.nodes.get(node) if node is not None else None
    return before is not None and after is not None and type(before.step) is type(after.step)


def _runs_at_steps(
    connection: Connection, workspace: Workspace, old: Strategy | None, new: Strategy
) -> list[RunsAtStep]:
    changed = [
        name
        for name in sorted(new.journeys)
        if old is not None
        and name in old.journeys
        and _dump(old.journeys[name]) != _dump(new.journeys[name])
    ]
    removed = sorted(set(old.journeys) - set(new.journeys)) if old is not None else []
    versions = load_journeys(workspace=workspace).versions
    # The new definitions' graphs, for the journeys whose runs may migrate.
    graphs = {
        name: compile_journey(name, new.journeys[name]).graph
        for name in changed
        if new.journeys[name].on_change == "migrate"
    }
    found: list[RunsAtStep] = []
    for journey, version, node, count in _live_runs(connection, changed + removed):
        outcome: Literal["finish", "migrate"] = "finish"
        definition = versions.get((journey, version))
        if (
            journey in graphs
            and definition is not None
            and _node_kept(definition.graph, graphs[journey], node)
        ):
            outcome = "migrate"
        found.append(RunsAtStep(journey, version, node, count, outcome))
    return found


def plan_strategy(*, workspace: Workspace, strategy: Strategy) -> Plan:
    """What applying `strategy` would change (nothing is written)."""
    current = applied_strategy(workspace=workspace)
    old = current.strategy if current is not None else None
    with workspace.state.connect() as connection:
        runs = _runs_at_steps(connection, workspace, old, strategy)
    return Plan(
        current_version=current.version if current is not None else None,
        changes=tuple(_changes(old, strategy)),
        runs=tuple(runs),
    )


def apply_strategy(
    *, workspace: Workspace, strategy: Strategy, content: str, source: str
) -> ApplyReport:
    """Store `content` as the next strategy version, publish changed journeys and move the
    runs that `on_change: migrate` asks to move. A file that changes nothing stores nothing."""
    plan = plan_strategy(workspace=workspace, strategy=strategy)
    if plan.current_version is not None and plan.empty:
        journeys = load_journeys(
            workspace=workspace, timezone=strategy.timezone, names=list(strategy.journeys)
        )
        return ApplyReport(plan=plan, version=None, journeys=journeys)
    published = publish_journeys(
        workspace=workspace, journeys=strategy.journeys, timezone=strategy.timezone
    )
    version = (plan.current_version or 0) + 1
    migrated = 0
    with workspace.state.begin() as connection:
        connection.execute(
            insert(strategy_versions).values(
                version=version,
                digest=_digest(content),
                source=source,
                content=content,
                applied_at=workspace.clock.now(),
            )
        )
        new_versions = dict(published.published)
        for runs in plan.runs:
            if runs.outcome == "migrate" and runs.journey in new_versions:
                migrated += _migrate(connection, runs, to_version=new_versions[runs.journey])
    return ApplyReport(
        plan=plan,
        version=version,
        published=published.published,
        migrated=migrated,
        journeys=published.journeys,
    )


def _migrate(connection: Connection, runs: RunsAtStep, *, to_version: int) -> int:
    """Move the live runs of one (journey, version, node) onto `to_version`."""
    query = select(journey_runs.c.run_id, journey_runs.c.state).where(
        LIVE_RUNS,
        journey_runs.c.journey == runs.journey,
        journey_runs.c.version == runs.version,
        journey_runs.c.node == runs.node,
    )
    moved: dict[str, dict[str, Any]] = {}
    for run_id, data in connection.execute(query):
        state = RunState.from_json(data)
        moved[run_id] = {**state.to_json(), "version": to_version}
    for run_id, data in moved.items():
        connection.execute(
            update(journey_runs)
            .where(journey_runs.c.run_id == run_id)
            .values(version=to_version, state=data)
        )
    return len(moved)
