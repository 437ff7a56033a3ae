"""`where` filters and event patterns as plain Python predicates over one event.

The rules are the segment language's (a value's type is part of the test: `{price: {gte:
50}}` matches numbers only, `{category: shoes}` the text only); `tests/engine/journeys`
checks them against the segment reference evaluator. Each test is compiled once into a
closure specialised for its operator and value, because the trigger path runs them for
every incoming event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from orbita.model.events import EventRecord
from orbita.model.segments import PropertyTest
from orbita.model.triggers import EventPattern

Properties = Mapping[str, Any]
Predicate = Callable[[Properties, datetime], bool]


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_time(value: object) -> datetime | None:
    """A datetime, or ISO text that starts with a date, as an aware datetime (UTC if the
    text has no offset); None for anything else (the segment reference's rule)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    if not isinstance(value, str) or len(value) < 10:
        return None
    head = value[:10]
    if head[4] != "-" or head[7] != "-" or not (head[:4] + head[5:7] + head[8:10]).isdigit():
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _reader(like: object) -> Callable[[Any], Any]:
    """How a property is read for a comparison with `like`: None when of another type."""
    if isinstance(like, bool):
        return lambda raw: raw if isinstance(raw, bool) else None
    if is_number(like):
        return lambda raw: raw if is_number(raw) else None
    if isinstance(like, datetime | timedelta):
        return parse_time
    return lambda raw: raw if isinstance(raw, str) else None


def _anniversary_days(as_of: datetime, days: int) -> set[tuple[int, int]]:
    start = as_of.astimezone(UTC).date()
    pairs: set[tuple[int, int]] = set()
    for offset in range(days + 1):
        day = start + timedelta(days=offset)
        pairs.add((day.month, day.day))
        leap = day.year % 4 == 0 and (day.year % 100 != 0 or day.year % 400 == 0)
        if (day.month, day.day) == (2, 28) and not leap:
            pairs.add((2, 29))
    return pairs


def compile_test(test: PropertyTest) -> Predicate:
    """One `where` filter as a closure over (properties, as_of)."""
    key, op, value = test.property, test.op, test.value
    if op == "exists":
        if value:
            return lambda props, _: props.get(key) is not None
        return lambda props, _: props.get(key) is None
    if op == "eq" and isinstance(value, str):
        # `==` between a str and anything else is False: no type check needed.
        return lambda props, _: props.get(key) == value
    if op == "eq" and isinstance(value, bool):
        return lambda props, _: props.get(key) is value
    if op == "in" and isinstance(value[0], str):
        texts = frozenset(value)
        return lambda props, _: isinstance(raw := props.get(key), str) and raw in texts
    if op == "in":
        numbers = frozenset(value)
        return lambda props, _: is_number(raw := props.get(key)) and raw in numbers
    if op == "contains":
        return lambda props, _: isinstance(raw := props.get(key), str) and value in raw
    if op in ("eq", "ne", "gt", "gte", "lt", "lte", "between"):
        like = value[0] if op == "between" else value
        read = _reader(like)
        check = _ORDER[op]
        if op == "ne":
            return lambda props, _: not _equal(read(props.get(key)), value)
        return lambda props, _: (found := read(props.get(key))) is not None and check(found, value)
    if op == "anniversary_within":
        days = value.days

        def anniversary(props: Properties, as_of: datetime) -> bool:
            moment = parse_time(props.get(key))
            if moment is None:
                return False
            moment = moment.astimezone(UTC)
            return (moment.month, moment.day) in _anniversary_days(as_of, days)

        return anniversary
    window = _WINDOWS[op]
    return lambda props, as_of: (
        (found := parse_time(props.get(key))) is not None and window(found, as_of, value)
    )


def _equal(found: Any, value: Any) -> bool:
    return found is not None and bool(found == value)


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda found, value: bool(found == value),
    "ne": lambda found, value: bool(found != value),
    "gt": lambda found, value: bool(found > value),
    "gte": lambda found, value: bool(found >= value),
    "lt": lambda found, value: bool(found < value),
    "lte": lambda found, value: bool(found <= value),
    "between": lambda found, value: bool(value[0] <= found <= value[1]),
}
_WINDOWS: dict[str, Callable[[datetime, datetime, timedelta], bool]] = {
    "before": lambda moment, as_of, span: moment <= as_of - span,
    "within": lambda moment, as_of, span: as_of - span < moment <= as_of,
    "within_next": lambda moment, as_of, span: as_of <= moment < as_of + span,
}


def compile_where(tests: Sequence[PropertyTest]) -> Predicate:
    """All filters of a `where` as one predicate."""
    compiled = tuple(compile_test(test) for test in tests)
    if not compiled:
        return lambda props, as_of: True
    if len(compiled) == 1:
        return compiled[0]
    return lambda props, as_of: all(test(props, as_of) for test in compiled)


class PatternMatcher:
    """An `EventPattern` compiled: name, type, filters, then correlation with the run's
    trigger values. A run whose trigger lacked a correlated property is not tied on it."""

    __slots__ = ("correlate", "event", "message_type", "where")

    def __init__(self, pattern: EventPattern) -> None:
        self.event = pattern.event
        self.message_type = pattern.message_type
        self.where = compile_where(pattern.where)
        self.correlate = pattern.correlate

    def matches(self, event: EventRecord, *, correlation: Mapping[str, Any]) -> bool:
        if event.name != self.event or event.type != self.message_type:
            return False
        props = event.properties
        if not self.where(props, event.timestamp):
            return False
        for name in self.correlate:
            expected = correlation.get(name)
            if expected is not None and props.get(name) != expected:
                return False
        return True
