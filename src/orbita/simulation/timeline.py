"""Turning blocks of generated rows into one time-ordered EventBatch.

Generators add rows in blocks, one block per kind of event, each row either inside a
session (ordered by a position key, timed by gaps from the session's start) or at an
explicit time. `RowSet.finish` times the sessions, keeps one customer's sessions from
overlapping, numbers each customer's events and sorts the lot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from orbita.simulation.calendar import rank_within, segment_starts
from orbita.simulation.records import (
    Bools,
    Column,
    EventBatch,
    Floats,
    Int64s,
    Kind,
    ObjectList,
    Property,
    text,
)


@dataclass(frozen=True, slots=True)
class Sessions:
    """Visits: who, when they start, and how their events are labelled."""

    customer: Int64s  # local (chunk) customer index
    start: Int64s  # ms
    identified: Bools  # False: every event of the session is anonymous
    context: Mapping[str, Column]  # one value per session, copied to its events


@dataclass(slots=True)
class _Block:
    code: int
    rows: int
    session: Int64s | None
    position: Floats | None
    time: Int64s | None
    customer: Int64s | None
    gap: Floats | None
    anonymous: Bools | None
    properties: Mapping[str, Property]
    context: Mapping[str, Column]


class RowSet:
    """Accumulates blocks of event rows for one chunk."""

    def __init__(self, *, events: Sequence[str], property_order: Sequence[str]) -> None:
        self.events = tuple(events)
        self.property_order = tuple(property_order)
        self._blocks: list[_Block] = []

    def in_sessions(
        self,
        event: str,
        *,
        session: Int64s,
        position: Floats,
        gap_seconds: Floats,
        properties: Mapping[str, Property] | None = None,
        anonymous: Bools | None = None,
    ) -> None:
        """Rows inside sessions, ordered by `position` and `gap_seconds` after the previous."""
        self._blocks.append(
            _Block(
                code=self.events.index(event),
                rows=len(session),
                session=session,
                position=position,
                time=None,
                customer=None,
                gap=gap_seconds,
                anonymous=anonymous,
                properties=properties or {},
                context={},
            )
        )

    def at(
        self,
        event: str,
        *,
        customer: Int64s,
        time: Int64s,
        properties: Mapping[str, Property] | None = None,
        context: Mapping[str, Column] | None = None,
    ) -> None:
        """Rows at explicit times (outside any session), with their own context."""
        self._blocks.append(
            _Block(
                code=self.events.index(event),
                rows=len(customer),
                session=None,
                position=None,
                time=time,
                customer=customer,
                gap=None,
                anonymous=None,
                properties=properties or {},
                context=context or {},
            )
        )

    def finish(
        self,
        *,
        sessions: Sessions,
        first_customer: int,
        anonymous_ids: Sequence[str],
        start_ms: int,
        end_ms: int,
        min_session_gap_ms: int,
        user_prefix: str,
        user_width: int,
        context_keys: Sequence[str],
    ) -> tuple[EventBatch, Int64s]:
        """The sorted batch, and each session's final start time (sessions may be pushed)."""
        blocks = [b for b in self._blocks if b.rows]
        in_session = [b for b in blocks if b.session is not None]
        at_time = [b for b in blocks if b.session is None]

        # --- rows inside sessions: order, gaps, session durations ------------------------
        s_rows = sum(b.rows for b in in_session)
        session = _cat([b.session for b in in_session], np.int64)
        position = _cat([b.position for b in in_session], np.float64)
        gap = _cat([b.gap for b in in_session], np.float64)
        order = np.lexsort((position, session))
        session, gap = session[order], gap[order]
        starts = segment_starts(session)
        gap_ms = np.maximum(np.round(gap * 1000), 1000).astype(np.int64)
        gap_ms[starts] = 0
        cum = np.cumsum(gap_ms)
        lengths = np.diff(np.concatenate([starts, [s_rows]]))
        offset = cum - np.repeat(cum[starts], lengths)
        duration = np.zeros(len(sessions.start), dtype=np.int64)
        np.maximum.at(duration, session, offset)
        session_start = _separate(sessions, duration, min_session_gap_ms)
        s_time = session_start[session] + offset
        s_customer = sessions.customer[session]
        block_anonymous = _cat(
            [b.anonymous if b.anonymous is not None else np.zeros(b.rows, np.bool_)
             for b in in_session],
            np.bool_,
        )  # fmt: skip
        s_anonymous = ~sessions.identified[session] | block_anonymous[order]

        # --- all rows together --------------------------------------------------------------
        time = np.concatenate([s_time, *[b.time for b in at_time if b.time is not None]])
        customer = np.concatenate(
            [s_customer, *[b.customer for b in at_time if b.customer is not None]]
        )
        anonymous = np.concatenate([s_anonymous, np.zeros(len(time) - s_rows, np.bool_)])
        codes = np.concatenate(
            [np.repeat([b.code for b in in_session], [b.rows for b in in_session])[order]]
            + [np.full(b.rows, b.code) for b in at_time]
        ).astype(np.int64)
        # Positions of rows in the unsorted concatenation, to line properties up.
        source = np.concatenate([order, np.arange(s_rows, len(time), dtype=np.int64)])
        row_session = np.concatenate([session, np.full(len(time) - s_rows, -1)])

        # --- keep the period, number each customer's events, sort -------------------------
        keep = np.flatnonzero((time >= start_ms) & (time < end_ms))
        time, customer, anonymous, codes = time[keep], customer[keep], anonymous[keep], codes[keep]
        row_session, source = row_session[keep], source[keep]
        # Sorts are stable: ties keep generation order, in numbering and in the final order.
        by_customer = np.lexsort((time, customer))
        ordinal = np.empty(len(time), dtype=np.int64)
        ordinal[by_customer] = rank_within(customer[by_customer])
        final = np.lexsort((customer, time))

        time, customer, anonymous = time[final], customer[final], anonymous[final]
        codes, row_session, ordinal = codes[final], row_session[final], ordinal[final]
        source = source[final]
        block, block_row, blocks_props = self._property_blocks(in_session + at_time, source)
        has_session = row_session >= 0
        context = self._context(context_keys, sessions, in_session, at_time, source)
        # Anonymous events carry only the anonymousId; a customer's sessions that began
        # anonymously (the sign-up visit) keep it on their identified events too.
        session_anon = np.zeros(len(time), np.bool_)
        if len(sessions.start):
            mixed = _mixed_sessions(row_session, anonymous, len(sessions.start))
            session_anon = has_session & mixed[np.maximum(row_session, 0)]
        batch = EventBatch(
            timestamp=time,
            customer=customer + first_customer,
            ordinal=ordinal,
            event=text(codes, self.events),
            # Customer numbers are 0-based; userIds count from 1.
            user_id=Column(
                Kind.ID,
                customer + first_customer + 1,
                ~anonymous,
                prefix=user_prefix,
                width=user_width,
            ),
            anonymous_id=text(customer, anonymous_ids, anonymous | session_anon),
            blocks=blocks_props,
            block=block,
            block_row=block_row,
            context=context,
        )
        return batch, session_start

    def _context(
        self,
        keys: Sequence[str],
        sessions: Sessions,
        in_session: Sequence[_Block],
        at_time: Sequence[_Block],
        source: Int64s,
    ) -> dict[str, Column]:
        """Context per row: the session's for rows in sessions, the block's for the others."""
        session = _cat([b.session for b in in_session], np.int64)
        context: dict[str, Column] = {}
        for key in keys:
            parts: list[Property | None] = []
            sizes: list[int] = []
            if key in sessions.context:
                parts.append(sessions.context[key].take(session))
                sizes.append(len(session))
            else:
                parts.append(None)
                sizes.append(len(session))
            for block in at_time:
                parts.append(block.context.get(key))
                sizes.append(block.rows)
            model = next((p for p in parts if isinstance(p, Column)), None)
            if model is None:
                continue
            context[key] = _concat_columns(key, model, parts, sizes).take(source)
        return context

    def _property_blocks(
        self, blocks: Sequence[_Block], source: Int64s
    ) -> tuple[Int64s, Int64s, list[Mapping[str, Property]]]:
        """Properties stay in their blocks (no full-length columns of mostly nothing).

        Returns, per final row, its block and its row within the block, and each block's
        properties restricted to the rows that were kept, in the store's property order.
        """
        sizes = np.array([b.rows for b in blocks], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        row_block = np.searchsorted(offsets, source, side="right") - 1
        kept = np.zeros(int(offsets[-1]), dtype=np.bool_)
        kept[source] = True
        # Kept rows before each position: a kept row's place within its block's kept rows.
        kept_before = np.concatenate([[0], np.cumsum(kept)])
        block_row = kept_before[source] - kept_before[offsets[row_block]]
        result: list[Mapping[str, Property]] = []
        for index, b in enumerate(blocks):
            for key in b.properties:
                if key not in self.property_order:
                    raise ValueError(f"property {key!r} has no place in the property order")
            lo, hi = int(offsets[index]), int(offsets[index + 1])
            keep = np.flatnonzero(kept[lo:hi])
            ordered = {k: b.properties[k] for k in self.property_order if k in b.properties}
            if len(keep) == b.rows:
                result.append(ordered)
            else:
                result.append({k: p.take(keep) for k, p in ordered.items()})
        return row_block.astype(np.int64), block_row.astype(np.int64), result


def _cat(parts: Sequence[npt.NDArray[Any] | None], dtype: type) -> npt.NDArray[Any]:
    arrays = [p for p in parts if p is not None]
    if not arrays:
        return np.zeros(0, dtype=dtype)
    return np.concatenate(arrays).astype(dtype, copy=False)


def _concat_columns(
    key: str, model: Column, parts: Sequence[Property | None], sizes: Sequence[int]
) -> Column:
    """One column from the blocks' parts; text vocabularies are merged (codes remapped)."""
    vocabulary: dict[str, int] = {}
    values = []
    valid = []
    for part, size in zip(parts, sizes, strict=True):
        if part is None:
            values.append(np.zeros(size, dtype=model.values.dtype))
            valid.append(np.zeros(size, dtype=np.bool_))
            continue
        if not isinstance(part, Column) or part.kind != model.kind:
            raise TypeError(f"property {key!r} must have one kind in every block")
        if (part.prefix, part.width) != (model.prefix, model.width):
            raise ValueError(f"id property {key!r} must have one prefix and width in every block")
        codes = part.values
        if part.kind == Kind.TEXT:
            remap = np.array(
                [vocabulary.setdefault(word, len(vocabulary)) for word in part.vocabulary],
                dtype=np.int64,
            )
            codes = remap[codes] if len(remap) else codes
        values.append(codes)
        valid.append(part.present())
    mask = np.concatenate(valid)
    return Column(
        model.kind,
        np.concatenate(values),
        None if mask.all() else mask,
        tuple(vocabulary) if model.kind == Kind.TEXT else model.vocabulary,
        model.prefix,
        model.width,
    )


def _concat_lists(
    model: ObjectList, parts: Sequence[Property | None], sizes: Sequence[int]
) -> ObjectList:
    start, count, valid = [], [], []
    for part, size in zip(parts, sizes, strict=True):
        if part is None:
            start.append(np.zeros(size, np.int64))
            count.append(np.zeros(size, np.int64))
            valid.append(np.zeros(size, np.bool_))
            continue
        if not isinstance(part, ObjectList) or part.items is not model.items:
            raise ValueError("one list property must list rows of one item table")
        start.append(part.start)
        count.append(part.count)
        valid.append(part.present())
    return ObjectList(
        model.items, np.concatenate(start), np.concatenate(count), np.concatenate(valid)
    )


def _separate(sessions: Sessions, duration: Int64s, min_gap_ms: int) -> Int64s:
    """Push each customer's sessions later until none starts before the last one ended."""
    order = np.lexsort((sessions.start, sessions.customer))
    start = sessions.start[order].copy()
    length = duration[order]
    same = sessions.customer[order][1:] == sessions.customer[order][:-1]
    while True:
        ready = start[:-1] + length[:-1] + min_gap_ms
        late = same & (start[1:] < ready)
        if not late.any():
            break
        # Each pass settles at least the first clash of every run of clashing sessions.
        start[1:][late] = ready[late]
    result = np.empty_like(start)
    result[order] = start
    return result


def _mixed_sessions(row_session: Int64s, anonymous: Bools, n_sessions: int) -> Bools:
    """Sessions with at least one anonymous event (the sign-up visit)."""
    mixed = np.zeros(n_sessions, np.bool_)
    rows = (row_session >= 0) & anonymous
    mixed[row_session[rows]] = True
    return mixed
