"""The segment language in plain Python over lists of dicts: the oracle the compiled queries
are tested against. Written for clarity, not speed; each rule mirrors one in `compile.py`.

Rows look like the tables of `tables.py`: events carry `customer_id`, `message_id`, `type`,
`name`, `properties` (a dict) and an aware `timestamp`; customers carry `customer_id`, the
profile columns and `traits` (a dict).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from orbita.core.errors import UserError
from orbita.engine.segments.compile import anniversary_days, sample_value, window_bounds
from orbita.engine.segments.tables import PROFILE_TEXT, PROFILE_TIMES
from orbita.model.segments import (
    AllOf,
    AnyOf,
    ComputedTrait,
    ComputedTraitCondition,
    Condition,
    EventCondition,
    Not,
    PredictedCondition,
    RfmCell,
    Segment,
    SegmentRef,
    SequenceCondition,
    TraitCondition,
)

Row = Mapping[str, Any]
MISSING = None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or len(value) < 10 or not _looks_like_date(value):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _looks_like_date(text: str) -> bool:
    head = text[:10]
    return head[4] == "-" and head[7] == "-" and (head[:4] + head[5:7] + head[8:10]).isdigit()


@dataclass(frozen=True, slots=True)
class _Value:
    """One value as the typed readers of the compiler see it (None: missing or other type)."""

    raw: Any
    present: bool
    column_type: str | None = None  # set for profile columns and computed values

    def read(self, like: object) -> Any:
        raw = self.raw
        if raw is None:
            return None
        if self.column_type is not None:
            return raw
        if isinstance(like, bool):
            return raw if isinstance(raw, bool) else None
        if _is_number(like):
            return float(raw) if _is_number(raw) else None
        if isinstance(like, datetime | timedelta):
            return _parse_time(raw)
        return raw if isinstance(raw, str) else None

    def month_day(self) -> int | None:
        raw = self.raw
        if isinstance(raw, datetime):
            moment = raw.astimezone(UTC)
            return moment.month * 100 + moment.day
        if isinstance(raw, str) and len(raw) >= 10 and _looks_like_date(raw):
            return int(raw[5:7]) * 100 + int(raw[8:10])
        return None


def _json_value(document: Mapping[str, Any], key: str) -> _Value:
    raw = document.get(key)
    return _Value(raw=raw, present=raw is not None)


def value_test(op: str, value: Any, subject: _Value, *, as_of: datetime) -> bool:
    if op == "exists":
        return subject.present if value else not subject.present
    if op == "eq":
        return _equal(subject.read(value), value)
    if op == "ne":
        read = subject.read(value)
        return read is None or not _equal(read, value)
    if op == "in":
        read = subject.read(value[0])
        return read is not None and any(_equal(read, item) for item in value)
    if op in ("gt", "gte", "lt", "lte"):
        read = subject.read(value)
        if read is None:
            return False
        return bool(
            {
                "gt": read > value,
                "gte": read >= value,
                "lt": read < value,
                "lte": read <= value,
            }[op]
        )
    if op == "between":
        low, high = value
        read = subject.read(low)
        return read is not None and bool(low <= read <= high)
    if op == "contains":
        read = subject.read("")
        return read is not None and value in read
    if op == "anniversary_within":
        days = anniversary_days(as_of=as_of, days=value.days)
        month_day = subject.month_day()
        return month_day is not None and month_day in {m * 100 + d for m, d in days}
    moment = subject.read(as_of)
    if moment is None:
        return False
    if op == "before":
        return bool(moment <= as_of - value)
    if op == "within":
        return bool(as_of - value < moment <= as_of)
    if op == "within_next":
        return bool(as_of <= moment < as_of + value)
    raise UserError(f"unknown operator {op!r}")


def _equal(read: Any, value: Any) -> bool:
    return read is not None and read == value


@dataclass
class ReferenceData:
    """The rows a segment is evaluated over."""

    events: Sequence[Row]
    customers: Sequence[Row]
    rfm_cells: Sequence[Row] = ()
    predictions: Sequence[Row] = ()
    _by_customer: dict[int, list[Row]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        grouped: dict[int, list[Row]] = defaultdict(list)
        for event in sorted(self.events, key=lambda e: (e["timestamp"], e["message_id"])):
            grouped[event["customer_id"]].append(event)
        self._by_customer = dict(grouped)

    @property
    def everyone(self) -> set[int]:
        return {row["customer_id"] for row in self.customers}

    def events_of(self) -> Iterable[tuple[int, list[Row]]]:
        return self._by_customer.items()


class _Evaluator:
    def __init__(
        self,
        *,
        data: ReferenceData,
        as_of: datetime,
        segments: Mapping[str, Segment],
        computed_traits: Mapping[str, ComputedTrait],
    ) -> None:
        self.data = data
        self.as_of = as_of.astimezone(UTC)
        self.segments = segments
        self.computed_traits = computed_traits

    def members(self, condition: Condition) -> set[int]:
        if isinstance(condition, EventCondition):
            return self._event(condition)
        if isinstance(condition, TraitCondition):
            return self._trait(condition)
        if isinstance(condition, ComputedTraitCondition):
            return self._computed(condition)
        if isinstance(condition, PredictedCondition):
            return {
                row["customer_id"]
                for row in self.data.predictions
                if value_test(
                    condition.op,
                    condition.value,
                    _Value(
                        raw=row.get(condition.predicted),
                        present=row.get(condition.predicted) is not None,
                        column_type="number",
                    ),
                    as_of=self.as_of,
                )
            }
        if isinstance(condition, RfmCell):
            return {r["customer_id"] for r in self.data.rfm_cells if r["cell"] == condition.rfm}
        if isinstance(condition, SegmentRef):
            return self.members(self.segments[condition.segment].condition)
        if isinstance(condition, SequenceCondition):
            return self._sequence(condition)
        if isinstance(condition, AllOf):
            positive = [self.members(c) for c in condition.all if not isinstance(c, Not)]
            result = set.intersection(*positive) if positive else self.data.everyone
            for child in condition.all:
                if isinstance(child, Not):
                    result -= self.members(child.condition)
            return result
        if isinstance(condition, AnyOf):
            return set().union(*(self.members(child) for child in condition.any))
        if isinstance(condition, Not):
            return self.data.everyone - self.members(condition.condition)
        raise UserError(f"cannot evaluate {condition!r}")

    def _matches(self, condition: EventCondition | ComputedTrait, event: Row) -> bool:
        start, end = window_bounds(condition.window, as_of=self.as_of)
        stamp = event["timestamp"]
        if event["type"] != condition.message_type or event["name"] != condition.event:
            return False
        if stamp > end or (start is not None and stamp <= start):
            return False
        properties = event["properties"]
        return all(
            value_test(t.op, t.value, _json_value(properties, t.property), as_of=self.as_of)
            for t in condition.where
        )

    def _matching(self, condition: EventCondition | ComputedTrait) -> dict[int, list[Row]]:
        result = {}
        for customer, events in self.data.events_of():
            matching = [event for event in events if self._matches(condition, event)]
            if matching:
                result[customer] = matching
        return result

    def _event(self, condition: EventCondition) -> set[int]:
        aggregate = condition.aggregate
        matching = self._matching(condition)
        values = {
            customer: _aggregate(
                events, aggregate.function, aggregate.property, aggregate.compare.value
            )
            for customer, events in matching.items()
        }
        if aggregate.zero_holds:
            return {
                customer
                for customer in self.data.everyone
                if aggregate.compare.holds(values.get(customer, 0.0))
            }
        return {c for c, value in values.items() if aggregate.compare.holds(value)}

    def _sequence(self, condition: SequenceCondition) -> set[int]:
        firsts = self._matching(condition.did)
        follows = self._matching(condition.follow_up)
        gap = condition.within
        members = set()
        for customer, events in firsts.items():
            later = [e["timestamp"] for e in follows.get(customer, [])]
            for event in events:
                at = event["timestamp"]
                followed = any(at < stamp <= at + gap for stamp in later)
                if condition.negated and not followed and at + gap <= self.as_of:
                    members.add(customer)
                if not condition.negated and followed:
                    members.add(customer)
        return members

    def _trait(self, condition: TraitCondition) -> set[int]:
        members = set()
        for row in self.data.customers:
            name = condition.trait
            if name in PROFILE_TEXT or name in PROFILE_TIMES:
                raw = row.get(name)
                kind = "text" if name in PROFILE_TEXT else "time"
                subject = _Value(raw=raw, present=raw is not None, column_type=kind)
            else:
                subject = _json_value(row.get("traits") or {}, name)
            if value_test(condition.op, condition.value, subject, as_of=self.as_of):
                members.add(row["customer_id"])
        return members

    def _computed(self, condition: ComputedTraitCondition) -> set[int]:
        trait = self.computed_traits[condition.computed]
        like = sample_value(condition)
        values = self.computed_values(trait, like=like)
        members = set()
        for customer in self.data.everyone:
            raw = values.get(customer)
            if raw is None and trait.aggregate in ("count", "sum"):
                raw = 0
            subject = _Value(raw=raw, present=raw is not None, column_type="computed")
            if value_test(condition.op, condition.value, subject, as_of=self.as_of):
                members.add(customer)
        return members

    def computed_values(self, trait: ComputedTrait, *, like: object) -> dict[int, Any]:
        """customer_id -> value for customers with matching events."""
        result: dict[int, Any] = {}
        for customer, events in self._matching(trait).items():
            function = trait.aggregate
            if function == "first_at":
                result[customer] = events[0]["timestamp"]
            elif function == "last_at":
                result[customer] = events[-1]["timestamp"]
            elif function == "days_since_last":
                elapsed = self.as_of - events[-1]["timestamp"]
                result[customer] = math.floor(elapsed.total_seconds() / 86400)
            elif function == "mode":
                assert trait.property is not None
                reading = 0.0 if _is_number(like) else ""
                seen = [_json_value(e["properties"], trait.property).read(reading) for e in events]
                counts = Counter(value for value in seen if value is not None)
                if counts:
                    result[customer] = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0]
            else:
                result[customer] = _aggregate(
                    events, function, trait.property, like if like is not None else ""
                )
        return result


def _aggregate(events: Sequence[Row], function: str, prop: str | None, like: object) -> Any:
    """count / sum / avg / min / max / first / last over events in (timestamp, id) order."""
    if function == "count":
        return float(len(events))
    assert prop is not None
    if function in ("first", "last"):
        event = events[0] if function == "first" else events[-1]
        return _json_value(event["properties"], prop).read(like)
    numbers = [
        value
        for value in (_json_value(e["properties"], prop).read(0.0) for e in events)
        if value is not None
    ]
    if function == "sum":
        return float(sum(numbers))
    if not numbers:
        return None
    reducers: dict[str, Callable[[list[float]], float]] = {
        "avg": lambda xs: sum(xs) / len(xs),
        "min": min,
        "max": max,
    }
    return reducers[function](numbers)


def evaluate(
    segment: Segment | Condition,
    *,
    as_of: datetime,
    data: ReferenceData,
    segments: Mapping[str, Segment] | None = None,
    computed_traits: Mapping[str, ComputedTrait] | None = None,
) -> set[int]:
    """The customer ids of a segment's members at `as_of`."""
    evaluator = _Evaluator(
        data=data, as_of=as_of, segments=segments or {}, computed_traits=computed_traits or {}
    )
    condition: Condition = segment.condition if isinstance(segment, Segment) else segment
    return evaluator.members(condition)
