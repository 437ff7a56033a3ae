"""Segment AST -> an Ibis expression of one column, `customer_id`, the distinct members.

Built over unbound tables (`tables.py`), so one expression prints for DuckDB, PostgreSQL,
ClickHouse and Spark. `as_of` is a parameter that becomes literals in the query: the same
definition replays history and no query reads the wall clock.

The shapes are the SQL a person would write: one filtered scan of `events` per event
condition (name, type, window and `where` pushed into the WHERE clause), a GROUP BY
customer_id only when an aggregate needs one, semi-joins for `all`, UNION for `any`, and
anti-joins against `customers` for `not` and for absence (`count: "== 0"`).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import ibis

from orbita.core.errors import UserError
from orbita.engine.segments.features import FeatureColumn, FeaturePlan, feature_key
from orbita.engine.segments.json_access import DuckDBJson, JsonAccess, json_access
from orbita.engine.segments.prepared import not_reusable, timestamp_literal
from orbita.engine.segments.tables import (
    PROFILE_TEXT,
    PROFILE_TIMES,
    Dialect,
    SegmentTables,
    segment_tables,
)
from orbita.model.segments import (
    AllOf,
    AnyOf,
    Comparison,
    ComputedTrait,
    ComputedTraitCondition,
    Condition,
    EventCondition,
    Not,
    PredictedCondition,
    PropertyTest,
    RfmCell,
    Segment,
    SegmentRef,
    SequenceCondition,
    TraitCondition,
    Window,
)

__all__ = [
    "anniversary_days",
    "compile_many",
    "compile_segment",
    "feature_tables",
    "property_filters",
    "sample_value",
    "to_sql",
    "window_bounds",
]

Expr = Any  # Ibis ships no type stubs that mypy can use; expressions stay Any here.
Resolver = Callable[[str], Expr | None]
"""Given a segment name, a table with its members' customer_id (a materialised one, say),
or None to inline the segment's definition."""

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("as_of must be an aware datetime (UTC or with an offset)")
    return moment.astimezone(UTC)


def _timestamp(moment: datetime) -> Expr:
    # A parameter instead of a literal while a query is prepared (prepared.py).
    return timestamp_literal(moment)


def window_bounds(window: Window, *, as_of: datetime) -> tuple[datetime | None, datetime]:
    """(exclusive start or None, inclusive end) of a window: `within: 30d` is
    (as_of - 30d, as_of]; the shared definition of the compiler and the reference."""
    start = as_of - window.newer_than if window.newer_than is not None else None
    end = as_of - window.older_than if window.older_than is not None else as_of
    return start, end


def anniversary_days(*, as_of: datetime, days: int) -> set[tuple[int, int]]:
    """(month, day) pairs from as_of's UTC date to `days` later; 29 February is included on
    28 February in years without it, so those birthdays are not skipped."""
    start = _utc(as_of).date()
    pairs: set[tuple[int, int]] = set()
    for offset in range(days + 1):
        day = start + timedelta(days=offset)
        pairs.add((day.month, day.day))
        if (day.month, day.day) == (2, 28) and not _is_leap(day.year):
            pairs.add((2, 29))
    return pairs


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


class _Values:
    """Typed readers of one value (a trait, a property, a computed trait): each returns an
    expression that is NULL when the value is missing or of another type."""

    def __init__(
        self,
        *,
        text: Callable[[], Expr],
        number: Callable[[], Expr],
        boolean: Callable[[], Expr],
        timestamp: Callable[[], Expr],
        present: Callable[[], Expr],
        month_day: Callable[[], Expr] | None = None,
    ) -> None:
        self.text = text
        self.number = number
        self.boolean = boolean
        self.timestamp = timestamp
        self.present = present
        # month * 100 + day of a date, for anniversaries; by default from the timestamp.
        self.month_day = month_day or (lambda: timestamp().month() * 100 + timestamp().day())


def _json_values(access: JsonAccess, doc: Expr, key: str) -> _Values:
    return _Values(
        text=lambda: access.text(doc, key),
        number=lambda: access.number(doc, key),
        boolean=lambda: access.boolean(doc, key),
        # Dates in JSON are ISO 8601 text; a text without an offset is read as UTC.
        timestamp=lambda: _iso_date_text(access.text(doc, key)).cast("timestamp('UTC')"),
        present=lambda: access.present(doc, key),
        month_day=lambda: _month_day_of_text(access.text(doc, key)),
    )


_ISO_DATE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"


def _iso_date_text(text: Expr) -> Expr:
    """The text when it starts like an ISO date, else NULL: PostgreSQL has no TRY_CAST, and
    one customer's `birthday: unknown` must not fail the whole segment."""
    return ibis.ifelse(text.re_search(_ISO_DATE), text, None)


def _month_day_of_text(text: Expr) -> Expr:
    """From ISO text (`1990-05-17...`): a birthday has no time zone, so reading the date's
    own digits avoids shifting it through the session's zone."""
    date_text = _iso_date_text(text)
    return date_text.substr(5, 2).cast("int32") * 100 + date_text.substr(8, 2).cast("int32")


def _typed_column(column: Expr, *, kind: str, name: str) -> _Values:
    """A typed column (`kind`: text, number or date): only the reader of its type works."""

    def reader(own: str) -> Callable[[], Expr]:
        if own == kind:
            return lambda: column

        def fail() -> Expr:
            raise UserError(f"{name!r} holds a {kind}: it cannot be compared with a {own}")

        return fail

    return _Values(
        text=reader("text"),
        number=reader("number"),
        boolean=reader("true/false"),
        timestamp=reader("date"),
        present=lambda: column.notnull(),
    )


def _reader_for(values: _Values, value: object) -> Callable[[], Expr]:
    if isinstance(value, bool):
        return values.boolean
    if isinstance(value, int | float):
        return values.number
    if isinstance(value, datetime | timedelta):
        return values.timestamp
    return values.text


def _literal(value: object) -> Expr:
    if isinstance(value, datetime):
        return _timestamp(value)
    return ibis.literal(value)


def value_test(op: str, value: Any, values: _Values, *, as_of: datetime) -> Expr:
    """The boolean expression of one value test (see orbita.model.segments for the ops)."""
    if op == "exists":
        present = values.present()
        return present if value else ~present
    if op == "eq":
        return _reader_for(values, value)() == _literal(value)
    if op == "ne":
        # "Anything but": a missing value (NULL) counts as different.
        return (_reader_for(values, value)() != _literal(value)).fill_null(True)
    if op == "in":
        return _reader_for(values, value[0])().isin(list(value))
    if op in ("gt", "gte", "lt", "lte"):
        compare = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
        return compare[op](_reader_for(values, value)(), _literal(value))
    if op == "between":
        low, high = value
        return _reader_for(values, low)().between(_literal(low), _literal(high))
    if op == "contains":
        return values.text().contains(value)
    if op == "anniversary_within":
        not_reusable()  # the month-days listed depend on as_of's date
        days = anniversary_days(as_of=as_of, days=value.days)
        return values.month_day().isin(sorted(month * 100 + day for month, day in days))
    moment = values.timestamp()
    if op == "before":
        return moment <= _timestamp(as_of - value)
    if op == "within":
        return (moment > _timestamp(as_of - value)) & (moment <= _timestamp(as_of))
    if op == "within_next":
        return (moment >= _timestamp(as_of)) & (moment < _timestamp(as_of + value))
    raise UserError(f"unknown operator {op!r}")


def _comparison(expr: Expr, comparison: Comparison) -> Expr:
    return _COMPARE[comparison.op](expr, comparison.value)


class _Compiler:
    def __init__(
        self,
        *,
        as_of: datetime,
        tables: SegmentTables,
        segments: Mapping[str, Segment],
        computed_traits: Mapping[str, ComputedTrait],
        resolve: Resolver | None,
        features: FeaturePlan | None = None,
    ) -> None:
        self.as_of = _utc(as_of)
        self.features = features
        self.tables = tables
        self.json = json_access(tables.dialect)
        self.segments = segments
        self.computed_traits = computed_traits
        self.resolve = resolve
        self._inlining: list[str] = []

    def enter(self, name: str) -> None:
        self._inlining.append(name)

    # -- entry --------------------------------------------------------------------------

    def members(self, condition: Condition) -> Expr:
        """A table of one column, customer_id, each member once."""
        return self._expr(self._set(condition))

    def _set(self, condition: Condition) -> _Members:
        if isinstance(condition, EventCondition):
            return self._event(condition)
        if isinstance(condition, AllOf):
            return self._all(condition)
        if isinstance(condition, Not):
            return _Members(base=None, excluded=(self.members(condition.condition),))
        if isinstance(condition, SegmentRef):
            return self._reference(condition.segment)
        return _Members(base=self._leaf(condition))

    def _leaf(self, condition: Condition) -> Expr:
        if isinstance(condition, TraitCondition):
            return self._trait(condition)
        if isinstance(condition, ComputedTraitCondition):
            return self._computed(condition)
        if isinstance(condition, PredictedCondition):
            return self._predicted(condition)
        if isinstance(condition, RfmCell):
            cells = self.tables.rfm_cells
            return cells.filter(cells.cell == condition.rfm).select("customer_id").distinct()
        if isinstance(condition, SequenceCondition):
            return self._sequence(condition)
        if isinstance(condition, AnyOf):
            members = [self.members(child) for child in condition.any]
            return members[0] if len(members) == 1 else ibis.union(*members, distinct=True)
        raise UserError(f"cannot compile condition {condition!r}")

    def _expr(self, members: _Members) -> Expr:
        if members.base is not None and not members.excluded:
            return members.base
        result = members.base
        if result is None:
            result = self.tables.customers.select("customer_id")
        for excluded in members.excluded:
            result = result.anti_join(excluded, "customer_id")
        return result.select("customer_id")

    # -- events -------------------------------------------------------------------------

    def _matching_events(self, condition: EventCondition | ComputedTrait, events: Expr) -> Expr:
        start, end = window_bounds(condition.window, as_of=self.as_of)
        filters = [
            events.type == condition.message_type,
            events.name == condition.event,
            events.timestamp <= _timestamp(end),
        ]
        if start is not None:
            filters.append(events.timestamp > _timestamp(start))
        filters.extend(self._property_test(test, events) for test in condition.where)
        return events.filter(*filters)

    def _property_test(self, test: PropertyTest, events: Expr) -> Expr:
        values = _json_values(self.json, events.properties, test.property)
        return value_test(test.op, test.value, values, as_of=self.as_of)

    def _event(self, condition: EventCondition) -> _Members:
        column = self.features.column(condition) if self.features is not None else None
        if column is not None:
            return self._event_feature(condition, column)
        events = self._matching_events(condition, self.tables.events)
        aggregate = condition.aggregate
        if aggregate.function == "count" and aggregate.compare in _AT_LEAST_ONCE:
            return _Members(base=events.select("customer_id").distinct())
        if aggregate.function == "count" and aggregate.compare in _NEVER:
            return _Members(base=None, excluded=(events.select("customer_id"),))
        per_customer = self._aggregate(
            events, aggregate.function, aggregate.property, aggregate.compare.value
        )
        if aggregate.zero_holds:
            # Customers without events hold too: everyone but those whose total fails.
            failing = per_customer.filter(~_comparison(per_customer.value, aggregate.compare))
            return _Members(base=None, excluded=(failing.select("customer_id"),))
        passing = per_customer.filter(_comparison(per_customer.value, aggregate.compare))
        return _Members(base=passing.select("customer_id"))

    def _event_feature(self, condition: EventCondition, column: FeatureColumn) -> _Members:
        """The same sets as `_event`, read from a feature table (features.py) whose
        `matched` column counts the condition's events per customer."""
        assert self.features is not None
        table = feature_table(self.features, column.table)
        matched = table.filter(table[column.matched] > 0)
        aggregate = condition.aggregate
        if aggregate.function == "count" and aggregate.compare in _AT_LEAST_ONCE:
            return _Members(base=matched.select("customer_id"))
        if aggregate.function == "count" and aggregate.compare in _NEVER:
            return _Members(base=None, excluded=(matched.select("customer_id"),))
        if column.value is None:
            value = matched[column.matched]
        elif aggregate.function == "sum":
            value = matched[column.value].fill_null(0)
        else:
            value = matched[column.value]
        per_customer = matched.select("customer_id", value=value)
        if aggregate.zero_holds:
            failing = per_customer.filter(~_comparison(per_customer.value, aggregate.compare))
            return _Members(base=None, excluded=(failing.select("customer_id"),))
        passing = per_customer.filter(_comparison(per_customer.value, aggregate.compare))
        return _Members(base=passing.select("customer_id"))

    def feature_table(
        self, conditions: list[EventCondition], *, latest: frozenset[str] = frozenset()
    ) -> Expr:
        """One group's features: per customer with events of its name, each condition's
        matching count (n0, n1, ...), aggregate (v0, v1, ...) and, for the conditions keyed
        in `latest`, latest matching event time (t0, ...), in one scan."""
        original = conditions
        first = conditions[0]
        events = self.tables.events
        filters = [events.type == first.message_type, events.name == first.event]
        bounds = [window_bounds(c.window, as_of=self.as_of) for c in conditions]
        filters.append(events.timestamp <= _timestamp(max(end for _, end in bounds)))
        starts = [start for start, _ in bounds]
        if all(start is not None for start in starts):
            filters.append(events.timestamp > _timestamp(min(s for s in starts if s)))
        if len({c.where for c in conditions}) == 1:
            # The same property filters for all (one condition, say): filter the scan.
            filters.extend(self._property_test(test, events) for test in first.where)
            conditions = [c.model_copy(update={"where": ()}) for c in conditions]
        events, values = self._read_once(events.filter(*filters), conditions)
        columns: dict[str, Expr] = {}
        for index, (condition, (start, end)) in enumerate(zip(conditions, bounds, strict=True)):
            tests = [events.timestamp <= _timestamp(end)]
            if start is not None:
                tests.append(events.timestamp > _timestamp(start))
            tests.extend(
                value_test(test.op, test.value, values(test.property), as_of=self.as_of)
                for test in condition.where
            )
            match = tests[0]
            for test in tests[1:]:
                match = match & test
            columns[f"n{index}"] = events.count(where=match)
            if feature_key(original[index]) in latest:
                columns[f"t{index}"] = events.timestamp.max(where=match)
            function, prop = condition.aggregate.function, condition.aggregate.property
            if function != "count":
                assert prop is not None
                number = values(prop).number()
                reduce = {
                    "sum": number.sum,
                    "avg": number.mean,
                    "min": number.min,
                    "max": number.max,
                }[function]
                columns[f"v{index}"] = reduce(where=match)
        return events.group_by("customer_id").aggregate(**columns)

    def _read_once(
        self, events: Expr, conditions: list[EventCondition]
    ) -> tuple[Expr, Callable[[str], _Values]]:
        """The scan with each property the conditions read parsed once per event (on DuckDB:
        its JSON type and text as two columns), and readers of those columns. Elsewhere the
        readers parse where they read."""
        if not isinstance(self.json, DuckDBJson):
            return events, lambda key: _json_values(self.json, events.properties, key)
        keys = sorted(
            {t.property for c in conditions for t in c.where}
            | {c.aggregate.property for c in conditions if c.aggregate.property}
        )
        if not keys:
            return events, lambda key: _json_values(self.json, events.properties, key)
        # Two steps: each key's value out of the document (one parse of the document per
        # key), then its type and text out of that small value.
        extracted = events.select(
            "customer_id",
            "timestamp",
            **{f"_json{i}": self.json.value(events.properties, key) for i, key in enumerate(keys)},
        )
        parts: dict[str, Expr] = {}
        for index in range(len(keys)):
            kind, text = self.json.value_parts(extracted[f"_json{index}"])
            parts[f"_type{index}"], parts[f"_text{index}"] = kind, text
        read = extracted.select("customer_id", "timestamp", **parts)
        json = self.json

        def values(key: str) -> _Values:
            index = keys.index(key)
            kind, text = read[f"_type{index}"], read[f"_text{index}"]
            as_text = json.text_of(kind, text)
            return _Values(
                text=lambda: as_text,
                number=lambda: json.number_of(kind, text),
                boolean=lambda: json.boolean_of(kind, text),
                timestamp=lambda: _iso_date_text(as_text).cast("timestamp('UTC')"),
                present=lambda: json.present_of(kind),
                month_day=lambda: _month_day_of_text(as_text),
            )

        return read, values

    def _aggregate(self, events: Expr, function: str, prop: str | None, like: object) -> Expr:
        """(customer_id, value) per customer with matching events; `like` is a value of the
        type the property is read as."""
        if function == "count":
            return events.group_by("customer_id").aggregate(value=events.count())
        assert prop is not None  # the model requires a property for the other functions
        reader = _reader_for(_json_values(self.json, events.properties, prop), like)
        if function in ("first", "last"):
            return self._first_or_last(events, reader().name("value"), last=function == "last")
        number = self.json.number(events.properties, prop)
        if function == "sum":
            # Sum of values that are all missing is 0, as is the sum of no events.
            return events.group_by("customer_id").aggregate(value=number.sum().fill_null(0))
        reduce = {"avg": number.mean, "min": number.min, "max": number.max}[function]
        return events.group_by("customer_id").aggregate(value=reduce())

    def _first_or_last(self, events: Expr, value: Expr, *, last: bool) -> Expr:
        # Ties on the timestamp are broken by message_id, so every engine picks one event.
        order = [events.timestamp, events.message_id]
        order = [ibis.desc(key) for key in order] if last else order
        rank = ibis.row_number().over(group_by=events.customer_id, order_by=order)
        ranked = events.select(customer_id=events.customer_id, value=value, rank=rank)
        return ranked.filter(ranked["rank"] == 0).select("customer_id", "value")

    def _sequence(self, condition: SequenceCondition) -> Expr:
        """Did A, then (not) B within a time: a correlated [NOT] EXISTS per A event.

        The follow-up scan is bounded by the times the first step can reach: a B event
        counts only in (A, A + within], so it lies after the start of A's window and no
        later than the end of A's window plus `within`. Without those bounds the B side is
        every B event of all time (a year of orders for cart abandonment: 4x the hand-written
        query on 55 M events, bench/segments.py); with them it is a few days' worth.
        """
        start, end = window_bounds(condition.did.window, as_of=self.as_of)
        if condition.negated:
            # Only once the whole gap has passed do we know that nothing followed.
            end = min(end, self.as_of - condition.within)
        first = self._matching_events(condition.did, self.tables.events)
        if end < self.as_of:
            first = first.filter(first.timestamp <= _timestamp(end))
        follow = self._matching_events(condition.follow_up, self.tables.events.view())
        follow = follow.filter(follow.timestamp <= _timestamp(end + condition.within))
        if start is not None:
            follow = follow.filter(follow.timestamp > _timestamp(start))
        gap = ibis.interval(seconds=int(condition.within.total_seconds()))
        followed = (
            (follow.customer_id == first.customer_id)
            & (follow.timestamp > first.timestamp)
            & (follow.timestamp <= first.timestamp + gap)
        ).any()
        if self.tables.dialect == "clickhouse":
            # ClickHouse runs correlated subqueries only behind an experimental setting;
            # its joins take the same predicates.
            on = [
                first.customer_id == follow.customer_id,
                follow.timestamp > first.timestamp,
                follow.timestamp <= first.timestamp + gap,
            ]
            join = first.anti_join if condition.negated else first.semi_join
            return join(follow, on).select("customer_id").distinct()
        kept = first.filter(~followed if condition.negated else followed)
        return kept.select("customer_id").distinct()

    # -- profiles -------------------------------------------------------------------------

    def _trait(self, condition: TraitCondition) -> Expr:
        customers = self.tables.customers
        name = condition.trait
        if name in PROFILE_TEXT:
            values = _typed_column(customers[name], kind="text", name=name)
        elif name in PROFILE_TIMES:
            values = _typed_column(customers[name], kind="date", name=name)
        else:
            values = _json_values(self.json, customers.traits, name)
        test = value_test(condition.op, condition.value, values, as_of=self.as_of)
        return customers.filter(test).select("customer_id")

    def _computed(self, condition: ComputedTraitCondition) -> Expr:
        trait = self.computed_traits.get(condition.computed)
        if trait is None:
            raise UserError(f"unknown computed trait {condition.computed!r}")
        values = self._computed_values(trait)
        test_reader = _reader_for(values, sample_value(condition))
        # Every customer gets a value (NULL, or 0 for count and sum) so that tests like
        # `eq: 0` and `ne` see customers without events.
        table = test_reader()
        everyone = self.tables.customers.select("customer_id")
        joined = everyone.left_join(table, "customer_id")
        value = joined.value
        if trait.aggregate in ("count", "sum"):
            value = value.fill_null(0)
        column = _Values(
            text=lambda: value,
            number=lambda: value,
            boolean=lambda: value,
            timestamp=lambda: value,
            present=lambda: value.notnull(),
        )
        test = value_test(condition.op, condition.value, column, as_of=self.as_of)
        return joined.filter(test).select(customer_id=joined.customer_id)

    def _computed_values(self, trait: ComputedTrait) -> _Values:
        """Readers that each build the (customer_id, value) table for one value type."""
        events = self._matching_events(trait, self.tables.events)

        def table(like: object) -> Callable[[], Expr]:
            return lambda: self.computed_table(trait, events=events, like=like)

        return _Values(
            text=table(""),
            number=table(0.0),
            boolean=table(True),
            timestamp=table(self.as_of),
            present=table(None),
        )

    def computed_table(self, trait: ComputedTrait, *, events: Expr, like: object) -> Expr:
        """(customer_id, value) of a computed trait for customers with matching events."""
        function = trait.aggregate
        if function in ("first_at", "last_at", "days_since_last"):
            reduce = events.timestamp.min if function == "first_at" else events.timestamp.max
            per_customer = events.group_by("customer_id").aggregate(value=reduce())
            if function != "days_since_last":
                return per_customer
            seconds = _timestamp(self.as_of).epoch_seconds() - per_customer.value.epoch_seconds()
            return per_customer.select("customer_id", value=(seconds / 86400).floor())
        if function == "mode":
            assert trait.property is not None  # checked by the model
            values = _json_values(self.json, events.properties, trait.property)
            reader = values.number if isinstance(like, int | float) else values.text
            picked = events.select("customer_id", value=reader()).filter(ibis._.value.notnull())
            counts = picked.group_by("customer_id", "value").aggregate(n=picked.count())
            rank = ibis.row_number().over(
                group_by=counts.customer_id, order_by=[ibis.desc(counts.n), counts.value]
            )
            ranked = counts.mutate(rank=rank)
            return ranked.filter(ranked["rank"] == 0).select("customer_id", "value")
        return self._aggregate(events, function, trait.property, like if like is not None else "")

    def _predicted(self, condition: PredictedCondition) -> Expr:
        predictions = self.tables.predictions
        values = _typed_column(
            predictions[condition.predicted], kind="number", name=condition.predicted
        )
        test = value_test(condition.op, condition.value, values, as_of=self.as_of)
        return predictions.filter(test).select("customer_id")

    # -- combinations ---------------------------------------------------------------------

    def _all(self, condition: AllOf) -> _Members:
        parts = [self._set(child) for child in condition.all]
        bases = [part.base for part in parts if part.base is not None]
        base = None
        if bases:
            base = bases[0]
            for other in bases[1:]:
                base = base.semi_join(other, "customer_id").select("customer_id")
        excluded = tuple(expr for part in parts for expr in part.excluded)
        return _Members(base=base, excluded=excluded)

    def _reference(self, name: str) -> _Members:
        resolved = self.resolve(name) if self.resolve is not None else None
        if resolved is not None:
            return _Members(base=resolved)
        if name in self._inlining:
            cycle = " -> ".join([*self._inlining[self._inlining.index(name) :], name])
            raise UserError(f"segments refer to each other in a cycle: {cycle}")
        segment = self.segments.get(name)
        if segment is None:
            raise UserError(f"unknown segment {name!r}")
        self._inlining.append(name)
        try:
            return self._set(segment.condition)
        finally:
            self._inlining.pop()


@dataclass(frozen=True, slots=True)
class _Members:
    """Members as `base` (None: every customer) minus each of `excluded`. Kept apart until
    the end so that `all` anti-joins absences and `not`s onto its other conditions, as a
    person writes it, instead of first building "every customer but ..." tables."""

    base: Expr | None
    excluded: tuple[Expr, ...] = ()


_AT_LEAST_ONCE = (Comparison(op=">=", value=1.0), Comparison(op=">", value=0.0))
_NEVER = (
    Comparison(op="==", value=0.0),
    Comparison(op="<", value=1.0),
    Comparison(op="<=", value=0.0),
)


def sample_value(condition: ComputedTraitCondition) -> object:
    """A value of the type the test compares with (None for exists): it decides whether a
    computed trait over a property reads that property as text, number or date."""
    value = condition.value
    if condition.op in ("in", "between"):
        return value[0]
    if condition.op in ("before", "within", "within_next", "anniversary_within"):
        return datetime.min.replace(tzinfo=UTC)
    if condition.op == "exists":
        return None
    return value


def feature_table(plan: FeaturePlan, name: str) -> Expr:
    """The unbound feature table `name` of a plan (customer_id, n0, v0, n1, ...)."""
    index = plan.table_names().index(name)
    conditions = list(plan.groups.values())[index]
    schema: dict[str, str] = {"customer_id": "int64"}
    for number, condition in enumerate(conditions):
        schema[f"n{number}"] = "int64"
        if feature_key(condition) in plan.latest:
            schema[f"t{number}"] = "timestamp('UTC')"
        if condition.aggregate.function != "count":
            schema[f"v{number}"] = "float64"
    return ibis.table(schema, name=name)


def feature_tables(
    plan: FeaturePlan, *, as_of: datetime, tables: SegmentTables | None = None
) -> dict[str, Expr]:
    """Each feature table of a plan as an expression over `events`, by name: what a refresh
    materialises before it compiles the segments with `features=plan`."""
    compiler = _Compiler(
        as_of=as_of,
        tables=tables or segment_tables(),
        segments={},
        computed_traits={},
        resolve=None,
    )
    latest = frozenset(plan.latest)
    return {
        name: compiler.feature_table(conditions, latest=latest)
        for name, conditions in zip(plan.table_names(), plan.groups.values(), strict=True)
    }


def compile_segment(
    segment: Segment | Condition,
    *,
    as_of: datetime,
    tables: SegmentTables | None = None,
    segments: Mapping[str, Segment] | None = None,
    computed_traits: Mapping[str, ComputedTrait] | None = None,
    resolve: Resolver | None = None,
    name: str | None = None,
    features: FeaturePlan | None = None,
) -> Expr:
    """The members of a segment at `as_of`: an Ibis table with one column, customer_id.

    References to other segments are inlined from `segments`, or read from the table
    `resolve` returns for them (a materialised membership, say). `name` is the segment's
    own name, so that a cycle back to it is reported from its start.
    """
    compiler = _Compiler(
        as_of=as_of,
        tables=tables or segment_tables(),
        segments=segments or {},
        computed_traits=computed_traits or {},
        resolve=resolve,
        features=features,
    )
    if name is not None:
        compiler.enter(name)
    condition: Condition = segment.condition if isinstance(segment, Segment) else segment
    return compiler.members(condition)


def compile_many(
    segments: Mapping[str, Segment],
    *,
    as_of: datetime,
    tables: SegmentTables | None = None,
    computed_traits: Mapping[str, ComputedTrait] | None = None,
) -> dict[str, Expr]:
    """One expression per segment. Each stands alone for now; batching segments that share
    a scan into one conditional aggregation is a later step (measure it per layout first)."""
    return {
        name: compile_segment(
            segment,
            as_of=as_of,
            tables=tables,
            segments=segments,
            computed_traits=computed_traits,
            name=name,
        )
        for name, segment in segments.items()
    }


class _SparkPrintOptions(ibis.config.Config):  # type: ignore[misc]  # ibis is untyped
    treat_nan_as_null: bool = False


def to_sql(expr: Expr, *, dialect: Dialect) -> str:
    """The SQL of an expression as one engine runs it (what `orbita segments explain` shows)."""
    if dialect == "pyspark" and ibis.options.pyspark is None:
        # Ibis' Spark printer reads an option that only its backend (needing pyspark)
        # registers; printing SQL needs neither, so register the default ourselves.
        ibis.options.pyspark = _SparkPrintOptions()
    return str(ibis.to_sql(expr, dialect=dialect))


def property_filters(
    where: Sequence[PropertyTest], events: Expr, *, dialect: Dialect, as_of: datetime
) -> list[Expr]:
    """The boolean expressions of `where` tests on the properties of `events` rows, as event
    conditions compile them (funnel steps reuse the segment language's filters)."""
    access = json_access(dialect)
    return [
        value_test(
            test.op, test.value, _json_values(access, events.properties, test.property), as_of=as_of
        )
        for test in where
    ]
