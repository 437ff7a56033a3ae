"""Dead letters: outbox messages given up on (a terminal failure, or out of attempts), read
page by page and put back in the queue by hand once the cause is fixed.

    dead_letters(workspace=…, channel="email", journey=None, limit=50, after=None)
    retry_dead_letters(workspace=…, ids=[…] or None for all, now=…)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, insert, or_, select, update

from orbita.core.errors import InvalidInputError, NotFoundError
from orbita.model.strategy import Strategy
from orbita.services.apply import applied_strategy
from orbita.services.workspace import Workspace
from orbita.store.state import delivery_attempts, outbox

MAX_PAGE = 1_000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    outbox_id: int
    key: str
    journey: str
    node: str
    template: str | None
    channel: str | None
    customer_id: int
    attempts: int
    reason: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetterPage:
    items: tuple[DeadLetter, ...]
    # The outbox id to pass as `after` for the next page; None on the last page.
    next_cursor: int | None


def _filters(
    *, strategy: Strategy | None, channel: str | None, journey: str | None
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [outbox.c.status == "dead"]
    if journey is not None:
        where.append(outbox.c.journey == journey)
    if channel is not None:
        # A send step without its own channel uses its template's.
        templates = sorted(
            name
            for name, template in (strategy.templates.items() if strategy is not None else [])
            if template.channel == channel
        )
        where.append(
            or_(
                outbox.c.channel == channel,
                and_(outbox.c.channel.is_(None), outbox.c.template.in_(templates)),
            )
        )
    return where


def _strategy(workspace: Workspace) -> Strategy | None:
    applied = applied_strategy(workspace=workspace)
    return applied.strategy if applied is not None else None


def dead_letters(
    *,
    workspace: Workspace,
    channel: str | None = None,
    journey: str | None = None,
    limit: int = 50,
    after: int | None = None,
) -> DeadLetterPage:
    """Dead letters, newest first, `limit` at a time after the cursor `after`."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError([], summary=f"limit: between 1 and {MAX_PAGE}")
    where = _filters(
        strategy=_strategy(workspace) if channel else None, channel=channel, journey=journey
    )
    if after is not None:
        where.append(outbox.c.outbox_id < after)
    query = select(outbox).where(*where).order_by(outbox.c.outbox_id.desc()).limit(limit + 1)
    with workspace.state.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(query)]
    items = tuple(_letter(row) for row in rows[:limit])
    more = len(rows) > limit
    return DeadLetterPage(items=items, next_cursor=items[-1].outbox_id if more else None)


def _letter(row: dict[str, Any]) -> DeadLetter:
    return DeadLetter(
        outbox_id=int(row["outbox_id"]),
        key=row["idempotency_key"],
        journey=row["journey"],
        node=row["node"],
        template=row["template"],
        channel=row["channel"],
        customer_id=int(row["customer_id"]),
        attempts=int(row["attempts"]),
        reason=str((row["result"] or {}).get("reason", "")),
        created_at=row["created_at"],
    )


def retry_dead_letters(
    *,
    workspace: Workspace,
    ids: Sequence[int] | None,
    now: datetime,
    channel: str | None = None,
    journey: str | None = None,
) -> int:
    """Put dead letters back in the queue, due now, with their attempts counted afresh:
    the ones named (NotFoundError naming any that is not a dead letter), or with `ids`
    None every one (of a channel or journey). Returns how many were requeued."""
    if now.tzinfo is None:
        raise InvalidInputError([], summary="retry_dead_letters needs an aware datetime")
    where = _filters(
        strategy=_strategy(workspace) if channel else None, channel=channel, journey=journey
    )
    if ids is not None:
        where.append(outbox.c.outbox_id.in_(sorted(set(ids))))
    with workspace.state.begin() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        query = select(outbox.c.outbox_id, outbox.c.customer_id, outbox.c.attempts).where(*where)
        if connection.dialect.name == "postgresql":
            query = query.with_for_update()
        rows = list(connection.execute(query))
        if ids is not None:
            missing = sorted(set(ids) - {int(row.outbox_id) for row in rows})
            if missing:
                raise NotFoundError(
                    f"not dead letters: {', '.join(map(str, missing))} "
                    "(no such message, or it is not dead)"
                )
        if not rows:
            return 0
        found = [int(row.outbox_id) for row in rows]
        connection.execute(
            update(outbox)
            .where(outbox.c.outbox_id.in_(found), outbox.c.status == "dead")
            .values(status="queued", attempts=0, next_attempt_at=now)
        )
        connection.execute(
            insert(delivery_attempts),
            [
                {
                    "outbox_id": row.outbox_id,
                    "customer_id": row.customer_id,
                    "attempt": row.attempts,
                    "at": now,
                    "outcome": "requeued",
                    "reason": "a dead letter put back in the queue by hand",
                    "worker": None,
                }
                for row in rows
            ],
        )
    return len(found)
