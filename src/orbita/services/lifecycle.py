"""The lifecycle map (CJM): the stage each customer is in, and who moved where between dates.

Stages are refreshed with the segments (`services.segments.refresh_segments`); their history
is the `stage_history` record, so any past date can be asked about.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, literal, or_, select

from orbita.core.errors import UserError
from orbita.model.strategy import Strategy
from orbita.services.workspace import Workspace
from orbita.store.state import stage_history

NO_STAGE = ""  # customers in no stage (or not yet known) at a date


@dataclass(frozen=True, slots=True)
class StageSize:
    stage: str
    customers: int


@dataclass(frozen=True, slots=True)
class Transition:
    from_stage: str  # NO_STAGE: in no stage at the start
    to_stage: str  # NO_STAGE: in no stage at the end
    customers: int


@dataclass(frozen=True, slots=True)
class TransitionMatrix:
    start: datetime
    end: datetime
    stages: tuple[str, ...]
    transitions: tuple[Transition, ...]

    def count(self, from_stage: str, to_stage: str) -> int:
        for item in self.transitions:
            if item.from_stage == from_stage and item.to_stage == to_stage:
                return item.customers
        return 0


def stage_sizes(
    *, workspace: Workspace, strategy: Strategy, at: datetime | None = None
) -> list[StageSize]:
    """Customers per stage, in the strategy's order: now, or at a past date."""
    moment = _aware(at) if at is not None else None
    table = stage_history.c
    statement = select(table.stage, func.count()).group_by(table.stage)
    if moment is None:
        statement = statement.where(table.exited_at.is_(None))
    else:
        statement = statement.where(_stage_at(moment))
    with workspace.state.connect() as connection:
        counts = {stage: int(n) for stage, n in connection.execute(statement).all()}
    return [StageSize(stage=s.name, customers=counts.get(s.name, 0)) for s in strategy.stages]


def _stage_at(moment: datetime) -> ColumnElement[bool]:
    table = stage_history.c
    return and_(
        table.entered_at <= moment, or_(table.exited_at.is_(None), table.exited_at > moment)
    )


def transition_matrix(*, workspace: Workspace, start: datetime, end: datetime) -> TransitionMatrix:
    """How many customers were in stage A at `start` and in stage B at `end`, for every
    (A, B) seen; a customer in no stage at one of the dates counts under NO_STAGE."""
    start, end = _aware(start), _aware(end)
    if end < start:
        raise UserError("the end of a transition matrix comes after its start")
    table = stage_history.c
    before = select(table.customer_id, table.stage).where(_stage_at(start)).subquery()
    after = select(table.customer_id, table.stage).where(_stage_at(end)).subquery()
    # A full outer join written as two outer joins (SQLite < 3.39 has no FULL JOIN).
    moved = select(
        func.coalesce(before.c.stage, literal(NO_STAGE)).label("a"),
        func.coalesce(after.c.stage, literal(NO_STAGE)).label("b"),
        func.count().label("n"),
    ).select_from(before.outerjoin(after, before.c.customer_id == after.c.customer_id))
    moved = moved.group_by("a", "b")
    arrived = (
        select(
            literal(NO_STAGE).label("a"),
            after.c.stage.label("b"),
            func.count().label("n"),
        )
        .select_from(after.outerjoin(before, before.c.customer_id == after.c.customer_id))
        .where(before.c.customer_id.is_(None))
        .group_by(after.c.stage)
    )
    with workspace.state.connect() as connection:
        rows = [*connection.execute(moved).all(), *connection.execute(arrived).all()]
    transitions = tuple(
        sorted(
            (Transition(from_stage=a, to_stage=b, customers=int(n)) for a, b, n in rows),
            key=lambda t: (t.from_stage, t.to_stage),
        )
    )
    stages = sorted({t.from_stage for t in transitions} | {t.to_stage for t in transitions})
    return TransitionMatrix(
        start=start, end=end, stages=tuple(s for s in stages if s), transitions=transitions
    )


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UserError("dates need a time zone, such as 2026-03-01T00:00:00Z")
    return moment
