"""The segment language: who a segment holds, as an AST of tagged pydantic models.

Marketers write the short YAML forms of DESIGN.md; every node also has a long form with a
`type` tag (what the API and the database store; a stored tag is never renamed). A
`BeforeValidator` on the `Condition` union recognises the short forms, so they nest freely:

    {event: "Order Completed", within: 30d, count: ">= 1"}            -> EventCondition
    {event: "Product Viewed", where: {category: shoes, price: {gte: 50}}}
    {event: "Order Completed", sum: {revenue: ">= 300"}}
    {trait: country, in: [UA, PL]}                                     -> TraitCondition
    {trait: created_at, before: 14d}           signed up more than 14 days ago
    {trait: birthday, anniversary_within: 3d}  birthday today or in the next 3 days
    {computed: orders_count, gte: 2}                                   -> ComputedTraitCondition
    {did: {event: "Product Added"}, then_not: {event: "Order Completed"}, within: 4h}
    all: [...]  any: [...]  not: {...}  {segment: lapsed_30d}
    {rfm: champions}  {predicted: churn_probability, gte: 0.7}         (filled by analytics)

Value tests (`op` in the long form) — the same for traits, event properties, computed
traits and predictions:
    eq, ne          equals / differs (ne also holds when the value is missing)
    in              one of a list of strings or numbers
    gt gte lt lte   numbers or dates (`2024-01-01`)
    between         inclusive range `[low, high]` of numbers or dates (alias: range)
    exists          `true`: has a non-null value; `false`: has none
    contains        the text contains a substring
    before          a date more than the duration ago (alias: older_than)
    within          a date in the last duration (not in the future)
    within_next     a date from now up to the duration ahead (trial ends in 3 days)
    anniversary_within  the date's month and day come up today or within the next whole
                    days (birthdays; 29 February is celebrated on 28 February in other years)
A value's type is part of the test: `{price: {gte: 50}}` matches numbers only, never the
text "50"; `{category: shoes}` matches the text "shoes" only.

Event windows are relative to the query's `as_of` time: `within: 30d` is the last 30 days,
`between: [90d, 30d]` is from 90 to 30 days ago, `before: 30d` is older than 30 days, no
window is all history up to `as_of`. Aggregates compare with a comparator string:
`count: ">= 2"`, `count: "== 0"` (absence), `sum|avg|min|max: {property: "> 100"}`,
`first|last: {property: "== premium"}` (the value on the first / last matching event). Count
and sum of no events are 0; avg, min, max, first and last of no events match nothing.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal, TypeAlias, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    RootModel,
    ValidationError,
    field_serializer,
    model_serializer,
    model_validator,
)
from pydantic_core import CoreSchema

from orbita.core.errors import FieldProblem, InvalidInputError
from orbita.model.durations import DURATION_SCHEMA, Duration, parse_duration
from orbita.model.graphs import cycles_in
from orbita.model.schema import (
    JsonSchema,
    as_forms,
    at_most_one,
    closed_object,
    exactly_one,
    with_forms,
)

# --- value tests ---------------------------------------------------------------------------

Operator = Literal[
    "eq",
    "ne",
    "in",
    "gt",
    "gte",
    "lt",
    "lte",
    "between",
    "exists",
    "contains",
    "before",
    "within",
    "within_next",
    "anniversary_within",
]
OPERATORS: tuple[str, ...] = get_args(Operator)
OPERATOR_ALIASES = {"range": "between", "older_than": "before"}
DATE_OPERATORS = frozenset({"before", "within", "within_next", "anniversary_within"})
ORDER_OPERATORS = frozenset({"gt", "gte", "lt", "lte"})

Scalar: TypeAlias = str | bool | int | float
TestValue: TypeAlias = Scalar | datetime | timedelta | tuple[Any, ...]


def _operator_list() -> str:
    return ", ".join(OPERATORS)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_datetime(value: object) -> datetime | None:
    """A date or datetime (or its ISO text) as an aware UTC datetime; None if it is not one."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def _orderable(op: str, value: object) -> float | int | datetime:
    if _is_number(value):
        return value  # type: ignore[return-value]  # _is_number checked int | float
    moment = _as_datetime(value)
    if moment is None:
        raise ValueError(f"{op} needs a number or a date, got {value!r}")
    return moment


def normalise_test_value(op: str, value: object) -> TestValue:
    """Check that `value` suits `op` and bring it to one canonical Python type."""
    if op in ("eq", "ne"):
        if isinstance(value, date):
            return _orderable(op, value)
        if not isinstance(value, str | bool | int | float):
            raise ValueError(f"{op} needs one text, number or true/false, got {value!r}")
        return value
    if op == "in":
        if not isinstance(value, list | tuple) or not value:
            raise ValueError(f"in needs a list such as [UA, PL], got {value!r}")
        if all(isinstance(item, str) for item in value) or all(_is_number(i) for i in value):
            return tuple(value)
        raise ValueError(f"in needs a list of texts or a list of numbers, got {value!r}")
    if op in ORDER_OPERATORS:
        return _orderable(op, value)
    if op == "between":
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise ValueError(f"between needs two values [low, high], got {value!r}")
        low, high = (_orderable(op, item) for item in value)
        if _is_number(low) != _is_number(high):
            raise ValueError(f"between needs two numbers or two dates, got {value!r}")
        if low > high:  # type: ignore[operator]  # both numbers or both datetimes (checked)
            raise ValueError(f"between needs the low value first, got {value!r}")
        return (low, high)
    if op == "exists":
        if not isinstance(value, bool):
            raise ValueError(f"exists needs true or false, got {value!r}")
        return value
    if op == "contains":
        if not isinstance(value, str) or not value:
            raise ValueError(f"contains needs a text, got {value!r}")
        return value
    if op in DATE_OPERATORS:
        duration = parse_duration(value)
        if duration <= timedelta(0):
            raise ValueError(f"{op} needs a positive duration, got {value!r}")
        if op == "anniversary_within" and duration % timedelta(days=1):
            raise ValueError(f"anniversary_within counts whole days (3d, 1w), got {value!r}")
        return duration
    raise ValueError(f"unknown operator {op!r}: use one of {_operator_list()}")


_NUMBER_OR_DATE: JsonSchema = {
    "anyOf": [{"type": "number"}, {"type": "string", "pattern": r"^\d{4}-?\d{2}-?\d{2}"}]
}
_SCALAR: JsonSchema = {"type": ["string", "number", "boolean"]}
# What normalise_test_value accepts for each operator (and alias), for the JSON Schema.
OPERATOR_SCHEMAS: dict[str, JsonSchema] = {
    "eq": {**_SCALAR, "description": "Equals"},
    "ne": {**_SCALAR, "description": "Differs (or is missing)"},
    "in": {
        "type": "array",
        "minItems": 1,
        "anyOf": [{"items": {"type": "string"}}, {"items": {"type": "number"}}],
        "description": "One of a list of texts or numbers",
    },
    "gt": {**_NUMBER_OR_DATE, "description": "Greater than a number or date"},
    "gte": {**_NUMBER_OR_DATE, "description": "At least a number or date"},
    "lt": {**_NUMBER_OR_DATE, "description": "Less than a number or date"},
    "lte": {**_NUMBER_OR_DATE, "description": "At most a number or date"},
    "between": {
        "type": "array",
        "minItems": 2,
        "maxItems": 2,
        "items": _NUMBER_OR_DATE,
        "description": "From low to high, inclusive: two numbers or two dates",
    },
    "exists": {"type": "boolean", "description": "true: has a value; false: has none"},
    "contains": {"type": "string", "minLength": 1, "description": "The text contains this"},
    "before": {**DURATION_SCHEMA, "description": "A date more than the duration ago"},
    "within": {**DURATION_SCHEMA, "description": "A date in the last duration"},
    "within_next": {**DURATION_SCHEMA, "description": "A date within the duration ahead"},
    "anniversary_within": {
        **DURATION_SCHEMA,
        "pattern": r"^\s*\d+\s*[dw]\s*$",
        "description": "The date's day and month come within whole days (birthdays)",
    },
}
OPERATOR_SCHEMAS |= {alias: OPERATOR_SCHEMAS[op] for alias, op in OPERATOR_ALIASES.items()}


def _test_forms(schema: JsonSchema, *, subject: str) -> None:
    """A test's long form (`op`, `value`) and its short form (`{trait: x, gte: 1}`)."""
    properties = schema["properties"]
    short = closed_object(
        {"type": properties["type"], subject: properties[subject], **OPERATOR_SCHEMAS},
        required=[subject],
        **exactly_one(OPERATOR_SCHEMAS),
    )
    as_forms(schema, short)


def _serialise_value(value: Any) -> Any:
    from orbita.model.durations import format_duration

    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_serialise_value(item) for item in value]
    return value


def _split_test(data: dict[str, Any], *, subject: str, what: str) -> dict[str, Any]:
    """`{trait: country, in: [UA]}` -> `{trait: country, op: in, value: [UA]}`."""
    if "op" in data:
        return data
    rest = {key: value for key, value in data.items() if key not in (subject, "type")}
    if not rest:
        raise ValueError(f"say what to check about {what}: one of {_operator_list()}")
    if len(rest) > 1:
        raise ValueError(f"one operator per condition, got {', '.join(map(str, rest))}")
    ((key, value),) = rest.items()
    op = OPERATOR_ALIASES.get(str(key), str(key))
    if op not in OPERATORS:
        raise ValueError(f"unknown operator {key!r}: use one of {_operator_list()}")
    return {**{k: v for k, v in data.items() if k in (subject, "type")}, "op": op, "value": value}


class _Test(BaseModel):
    """An operator and its value, checked together (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: Operator
    value: Any = None

    @model_validator(mode="after")
    def _check_value(self) -> _Test:
        # Frozen: the canonical value replaces the input through the back door, once.
        object.__setattr__(self, "value", normalise_test_value(self.op, self.value))
        return self

    @field_serializer("value")
    def _dump_value(self, value: Any) -> Any:
        return _serialise_value(value)


class PropertyTest(_Test):
    """One `where` filter on an event property."""

    property: str = Field(min_length=1)


def _where_list(where: object) -> object:
    """`{category: shoes, price: {gte: 50}, size: [40, 41]}` -> a list of PropertyTest dicts."""
    if not isinstance(where, Mapping):
        return where  # the long form is already a list; pydantic checks it
    tests: list[dict[str, Any]] = []
    for name, spec in where.items():
        if isinstance(spec, Mapping):
            tests.append(_split_test({"property": name, **spec}, subject="property", what=name))
        elif isinstance(spec, list):
            tests.append({"property": name, "op": "in", "value": spec})
        else:
            tests.append({"property": name, "op": "eq", "value": spec})
    return tests


# `where: {category: shoes, price: {gte: 50}, size: [40, 41]}`, as _where_list reads it.
WHERE_SCHEMA: JsonSchema = {
    "type": "object",
    "description": "Property filters: a value (equals), a list (one of), or {operator: value}",
    "additionalProperties": {
        "anyOf": [
            {"type": ["string", "number", "boolean"]},
            OPERATOR_SCHEMAS["in"],
            closed_object(OPERATOR_SCHEMAS, **exactly_one(OPERATOR_SCHEMAS)),
            closed_object({"op": {"enum": list(OPERATORS)}, "value": {}}, required=["op"]),
        ]
    },
}


# --- windows and aggregates ---------------------------------------------------------------


class Window(BaseModel):
    """Which events count, relative to `as_of`: newer than `newer_than` ago (exclusive) and
    at least `older_than` ago (inclusive); None on a side leaves it open."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    newer_than: Duration | None = None
    older_than: Duration | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if (
            self.newer_than is not None
            and self.older_than is not None
            and self.newer_than <= self.older_than
        ):
            raise ValueError("between needs two different durations, such as [90d, 30d]")
        return self


WINDOW_KEYS = ("within", "between", "before")


def _window_from(data: dict[str, Any]) -> dict[str, Any] | None:
    """Pops `within` / `between` / `before` out of a short form into one window."""
    given = [key for key in WINDOW_KEYS if key in data]
    if len(given) > 1:
        raise ValueError(f"use one window, not {' and '.join(given)}")
    if not given:
        return None
    key = given[0]
    value = data.pop(key)
    if key == "within":
        return {"newer_than": parse_duration(value)}
    if key == "before":
        return {"older_than": parse_duration(value)}
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"between needs two durations such as [90d, 30d], got {value!r}")
    first, second = (parse_duration(item) for item in value)
    # Either order reads naturally ("between 30 and 90 days ago"): the longer is the start.
    return {"newer_than": max(first, second), "older_than": min(first, second)}


ComparatorOp = Literal["==", "!=", ">", ">=", "<", "<="]
_COMPARATOR = re.compile(r"^\s*(==|!=|>=|<=|>|<|=)\s*([^\s<>=!].*?)\s*$")
COMPARATOR_HINT = 'write an operator and a value in quotes, such as ">= 2" or "== 0"'
# The texts Comparison._parse reads: a number after any operator, a text after == and !=.
_COMPARATOR_TEXT: JsonSchema = {
    "type": "string",
    "anyOf": [
        {"pattern": r"^\s*(==|!=|=)\s*[^\s<>=!]"},
        {"pattern": r"^\s*(>=|<=|>|<)\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"},
    ],
    "examples": [">= 2", "== 0"],
}


class Comparison(BaseModel):
    """`">= 2"`: an aggregate compared with a value; written and read as that text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    op: ComparatorOp
    value: float | str

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        return with_forms(core_schema, handler, lambda schema: as_forms(schema, _COMPARATOR_TEXT))

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return data
        if isinstance(data, bool) or _is_number(data):
            raise ValueError(f"bad comparator {data!r}: {COMPARATOR_HINT}")
        if not isinstance(data, str) or (match := _COMPARATOR.match(data)) is None:
            raise ValueError(f"bad comparator {data!r}: {COMPARATOR_HINT}")
        op, text = match.groups()
        op = "==" if op == "=" else op
        value: float | str
        try:
            value = float(text)
        except ValueError:
            value = text.strip("\"'")
            if op not in ("==", "!="):
                raise ValueError(
                    f"bad comparator {data!r}: {op} needs a number; {COMPARATOR_HINT}"
                ) from None
        return {"op": op, "value": value}

    @model_serializer
    def _as_text(self) -> str:
        value = self.value
        if isinstance(value, float) and value.is_integer():
            return f"{self.op} {int(value)}"
        return f"{self.op} {value}"

    def holds(self, left: object) -> bool:
        """The comparison in Python (the reference evaluator's and the compiler's `0` test)."""
        if left is None:
            return False
        if isinstance(self.value, str):
            equal = left == self.value
        elif not _is_number(left):
            return False
        else:
            number: float = left  # type: ignore[assignment]  # _is_number checked it
            return {
                "==": number == self.value,
                "!=": number != self.value,
                ">": number > self.value,
                ">=": number >= self.value,
                "<": number < self.value,
                "<=": number <= self.value,
            }[self.op]
        return equal if self.op == "==" else not equal


AggregateFunction = Literal["count", "sum", "avg", "min", "max", "first", "last"]
AGGREGATE_KEYS: tuple[str, ...] = get_args(AggregateFunction)
NUMERIC_AGGREGATES = frozenset({"count", "sum", "avg", "min", "max"})


class Aggregate(BaseModel):
    """What is compared over the matching events: their count, or one property's
    sum / avg / min / max, or its value on the first / last event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    function: AggregateFunction = "count"
    property: str | None = None
    compare: Comparison = Comparison(op=">=", value=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> Aggregate:
        if self.function == "count" and self.property is not None:
            raise ValueError('count takes no property: write count: ">= 2"')
        if self.function != "count" and not self.property:
            raise ValueError(
                f'{self.function} needs a property: {self.function}: {{revenue: ">= 300"}}'
            )
        if self.function in NUMERIC_AGGREGATES and isinstance(self.compare.value, str):
            raise ValueError(f"{self.function} compares with a number, not {self.compare.value!r}")
        return self

    # The field `property` hides the builtin inside this class body.
    @builtins.property
    def zero_holds(self) -> bool:
        """Whether a customer with no matching events satisfies the aggregate (absence)."""
        if self.function in ("count", "sum"):
            return self.compare.holds(0.0)
        return False


def _aggregate_from(data: dict[str, Any]) -> dict[str, Any] | None:
    given = [key for key in AGGREGATE_KEYS if key in data]
    if len(given) > 1:
        raise ValueError(f"compare one aggregate per condition, not {' and '.join(given)}")
    if not given:
        return None
    function = given[0]
    spec = data.pop(function)
    if function == "count":
        return {"function": "count", "compare": spec}
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ValueError(f'{function} needs one property and a comparator: {{revenue: ">= 300"}}')
    ((name, compare),) = spec.items()
    return {"function": function, "property": name, "compare": compare}


MessageType = Literal["track", "page", "screen"]
_LONG_ONLY = frozenset({"type", "window", "aggregate"})
EVENT_KEYS = ("type", "event", "message_type", "where", "window", "aggregate", *AGGREGATE_KEYS)


def _event_short_form(data: Any, *, allowed: tuple[str, ...], kind: str) -> Any:
    """Shared by event conditions and computed traits: where + window keys."""
    if not isinstance(data, Mapping) or "window" in data:
        return data
    result = dict(data)
    unknown = [str(key) for key in result if key not in allowed and key not in WINDOW_KEYS]
    if unknown:
        keys = ", ".join(key for key in (*allowed, *WINDOW_KEYS) if key not in _LONG_ONLY)
        raise ValueError(f"unknown key {unknown[0]!r} in {kind}: use {keys}")
    window = _window_from(result)
    if window is not None:
        result["window"] = window
    if "where" in result:
        result["where"] = _where_list(result["where"])
    return result


def _event_forms(schema: JsonSchema, *, comparison: JsonSchema | None) -> None:
    """Event conditions' and computed traits' short keys: `where` as a mapping, one of
    within / between / before for `window`, and (given `comparison`) the aggregate keys."""
    properties = schema["properties"]
    where = dict(properties["where"])
    as_forms(where, WHERE_SCHEMA)
    properties["where"] = where
    properties["within"] = {**DURATION_SCHEMA, "description": "Events of the last duration"}
    properties["before"] = {**DURATION_SCHEMA, "description": "Events older than the duration"}
    properties["between"] = {
        "type": "array",
        "items": DURATION_SCHEMA,
        "minItems": 2,
        "maxItems": 2,
        "description": "Events from one duration ago to the other, such as [90d, 30d]",
    }
    rules = [
        at_most_one(("window", *WINDOW_KEYS)),
        # The long `window` takes the long `where` (a list) too.
        {"if": {"required": ["window"]}, "then": {"properties": {"where": {"type": "array"}}}},
    ]
    if comparison is not None:
        properties["count"] = {**comparison, "description": 'How many, such as ">= 2"'}
        for function in AGGREGATE_KEYS[1:]:
            properties[function] = {
                "type": "object",
                "additionalProperties": comparison,
                "minProperties": 1,
                "maxProperties": 1,
                "description": f'The {function} of a property, such as {{revenue: ">= 300"}}',
            }
        rules.append(at_most_one(("aggregate", *AGGREGATE_KEYS)))
    schema["allOf"] = rules


# --- conditions ----------------------------------------------------------------------------


class EventCondition(BaseModel):
    """Customers whose matching events (name, type, `where`, window) satisfy the aggregate.

    Without an aggregate the condition means "did it at least once" (`count: ">= 1"`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["event"] = "event"
    event: str = Field(min_length=1)
    message_type: MessageType = "track"
    where: tuple[PropertyTest, ...] = ()
    window: Window = Window()
    aggregate: Aggregate = Aggregate()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        def describe(schema: JsonSchema) -> None:
            aggregate = handler.resolve_ref_schema(schema["properties"]["aggregate"])
            comparison = {"$ref": aggregate["properties"]["compare"]["$ref"]}
            _event_forms(schema, comparison=comparison)

        return with_forms(core_schema, handler, describe)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        result = dict(data)
        if "aggregate" not in result:
            aggregate = _aggregate_from(result)
            if aggregate is not None:
                result["aggregate"] = aggregate
        return _event_short_form(result, allowed=EVENT_KEYS, kind="an event condition")


class TraitCondition(_Test):
    """A profile value: `traits[name]`, or one of the profile columns (email, phone,
    timezone, locale, user_id, created_at, updated_at)."""

    type: Literal["trait"] = "trait"
    trait: str = Field(min_length=1)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        return with_forms(core_schema, handler, lambda s: _test_forms(s, subject="trait"))

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return _split_test(dict(data), subject="trait", what=f"trait {data.get('trait')!r}")
        return data


class ComputedTraitCondition(_Test):
    """A computed trait declared in the strategy (`computed_traits:`), tested like a trait."""

    type: Literal["computed"] = "computed"
    computed: str = Field(min_length=1)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        return with_forms(core_schema, handler, lambda s: _test_forms(s, subject="computed"))

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            what = f"computed trait {data.get('computed')!r}"
            return _split_test(dict(data), subject="computed", what=what)
        return data


PredictedValue = Literal["ltv", "churn_probability"]


class PredictedCondition(_Test):
    """A predicted value the analytics step writes per customer (seam: the `predictions`
    table with one column per value)."""

    type: Literal["predicted"] = "predicted"
    predicted: PredictedValue

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        return with_forms(core_schema, handler, lambda s: _test_forms(s, subject="predicted"))

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            what = f"prediction {data.get('predicted')!r}"
            return _split_test(dict(data), subject="predicted", what=what)
        return data


RFM_CELLS = (
    "champions",
    "loyal",
    "potential_loyalist",
    "new_customers",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cant_lose_them",
    "hibernating",
    "lost",
)


class RfmCell(BaseModel):
    """Customers in one named RFM cell (seam: the analytics step writes `rfm_cells`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["rfm"] = "rfm"
    rfm: str = Field(min_length=1)


class SegmentRef(BaseModel):
    """The members of another segment of the strategy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["segment"] = "segment"
    segment: str = Field(min_length=1)


class SequenceCondition(BaseModel):
    """Did A, then (not) B within a time: `{did: A, then_not: B, within: 4h}`.

    `then_not` holds for an A event when no B event follows it within the time and that
    time has fully passed by `as_of` (a cart added ten minutes ago is not abandoned yet).
    `then` holds when a B event follows an A event within the time (and by `as_of`).
    A and B are event conditions without aggregates; only A may have a window.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["sequence"] = "sequence"
    did: EventCondition
    then: EventCondition | None = None
    then_not: EventCondition | None = None
    within: Duration

    @model_validator(mode="after")
    def _one_follow_up(self) -> SequenceCondition:
        if (self.then is None) == (self.then_not is None):
            raise ValueError("a sequence needs exactly one of then or then_not")
        for label, step in (("did", self.did), ("then", self.follow_up)):
            if step.aggregate != Aggregate():
                raise ValueError(f"{label} in a sequence takes no count or other aggregate")
        if self.follow_up.window != Window():
            raise ValueError("the step after did takes no window: within applies to it")
        return self

    @property
    def follow_up(self) -> EventCondition:
        step = self.then if self.then is not None else self.then_not
        assert step is not None  # checked by _one_follow_up
        return step

    @property
    def negated(self) -> bool:
        return self.then_not is not None


class AllOf(BaseModel):
    """Every condition holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["all"] = "all"
    all: tuple[Condition, ...]

    @model_validator(mode="after")
    def _not_empty(self) -> AllOf:
        if not self.all:
            raise ValueError("all needs at least one condition")
        return self


class AnyOf(BaseModel):
    """At least one condition holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["any"] = "any"
    any: tuple[Condition, ...]

    @model_validator(mode="after")
    def _not_empty(self) -> AnyOf:
        if not self.any:
            raise ValueError("any needs at least one condition")
        return self


class Not(BaseModel):
    """Every customer for whom the condition does not hold."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", populate_by_name=True, serialize_by_alias=True
    )

    type: Literal["not"] = "not"
    condition: Condition = Field(alias="not")


# Keys that make a short form recognisable, in the order they are tried.
_SHORT_FORMS: tuple[tuple[str, str], ...] = (
    ("did", "sequence"),
    ("event", "event"),
    ("trait", "trait"),
    ("computed", "computed"),
    ("predicted", "predicted"),
    ("rfm", "rfm"),
    ("segment", "segment"),
    ("all", "all"),
    ("any", "any"),
    ("not", "not"),
)
CONDITION_HINT = "a condition starts with one of " + ", ".join(key for key, _ in _SHORT_FORMS)


def _tag_short_form(data: Any) -> Any:
    """Adds the `type` tag a short form implies, so the discriminated union can dispatch."""
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a condition, got {data!r}: {CONDITION_HINT}")
    if "type" in data:
        return data
    for key, tag in _SHORT_FORMS:
        if key in data:
            return {"type": tag, **data}
    keys = ", ".join(map(str, data)) or "nothing"
    raise ValueError(f"not a condition (got {keys}): {CONDITION_HINT}")


_Conditions: TypeAlias = (
    EventCondition
    | TraitCondition
    | ComputedTraitCondition
    | PredictedCondition
    | RfmCell
    | SegmentRef
    | SequenceCondition
    | AllOf
    | AnyOf
    | Not
)
# The schema of the input: a short form names no `type`, so it cannot be a tagged union's.
Condition = Annotated[
    _Conditions,
    Discriminator("type"),
    BeforeValidator(_tag_short_form, json_schema_input_type=_Conditions),
]

for _model in (AllOf, AnyOf, Not):
    _model.model_rebuild()


class Segment(RootModel[Condition]):
    """A segment definition: one condition (usually `all` / `any` of several)."""

    model_config = ConfigDict(frozen=True)

    @property
    def condition(self) -> Condition:
        return self.root


# --- computed traits -----------------------------------------------------------------------

ComputedFunction = Literal[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "first",
    "last",
    "first_at",
    "last_at",
    "days_since_last",
    "mode",
]
NEEDS_PROPERTY = frozenset({"sum", "avg", "min", "max", "first", "last", "mode"})


class ComputedTrait(BaseModel):
    """A per-customer value computed from events, declared once in the strategy:

        orders_count:          {event: "Order Completed", aggregate: count}
        total_revenue:         {event: "Order Completed", aggregate: sum, property: revenue}
        avg_order_value:       {event: "Order Completed", aggregate: avg, property: revenue}
        last_order_at:         {event: "Order Completed", aggregate: last_at}
        days_since_last_order: {event: "Order Completed", aggregate: days_since_last}
        favourite_category:    {event: "Product Viewed", aggregate: mode, property: category,
                                within: 90d}

    `first_at` / `last_at` are timestamps; `days_since_last` counts whole days to `as_of`;
    `mode` is the most frequent value (ties: the smallest). Count and sum of no events are 0;
    the others are missing (null) for a customer without matching events.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event: str = Field(min_length=1)
    message_type: MessageType = "track"
    where: tuple[PropertyTest, ...] = ()
    window: Window = Window()
    aggregate: ComputedFunction
    property: str | None = None

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        return with_forms(core_schema, handler, lambda s: _event_forms(s, comparison=None))

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        return _event_short_form(data, allowed=tuple(cls.model_fields), kind="a computed trait")

    @model_validator(mode="after")
    def _property_when_needed(self) -> ComputedTrait:
        if self.aggregate in NEEDS_PROPERTY and not self.property:
            raise ValueError(f"aggregate {self.aggregate} needs a property, such as revenue")
        if self.aggregate not in NEEDS_PROPERTY and self.property is not None:
            raise ValueError(f"aggregate {self.aggregate} takes no property")
        return self


# --- walking, parsing, checking ------------------------------------------------------------


def children(condition: Condition) -> tuple[Condition, ...]:
    """The conditions directly inside a condition."""
    if isinstance(condition, AllOf):
        return condition.all
    if isinstance(condition, AnyOf):
        return condition.any
    if isinstance(condition, Not):
        return (condition.condition,)
    return ()


def walk(condition: Condition) -> Iterator[Condition]:
    """Every condition in the tree, depth first, the root first."""
    yield condition
    for child in children(condition):
        yield from walk(child)


def referenced_segments(condition: Condition) -> list[str]:
    return [node.segment for node in walk(condition) if isinstance(node, SegmentRef)]


def _location(loc: tuple[int | str, ...]) -> str:
    """Pydantic's error location in the words of the YAML (`all[1].count`), without the
    tags pydantic inserts where a condition union is validated."""
    parts: list[str] = []
    expect_tag = True  # the root is a condition union
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
            expect_tag = parts[-2:-1] in ([".all"], ["all"], [".any"], ["any"])
            continue
        if item.startswith("function-"):
            continue
        if expect_tag and item in _TAGS:
            expect_tag = False
            continue
        parts.append(f".{item}" if parts else item)
        expect_tag = item == "not"
    return "".join(parts)


_TAGS = frozenset(tag for _, tag in _SHORT_FORMS)


def problems_of(error: ValidationError, *, prefix: str = "") -> list[FieldProblem]:
    """A pydantic error as one plain line per problem (no pydantic jargon)."""
    problems = []
    for item in error.errors(include_url=False):
        message = str(item["msg"])
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "union_tag_invalid":
            message = f"unknown condition type: {CONDITION_HINT}"
        location = _location(tuple(item["loc"]))
        field = ".".join(part for part in (prefix, location) if part)
        problems.append(FieldProblem(field=field, message=message))
    return problems


def parse_segment(data: object, *, name: str = "") -> Segment:
    """A segment from its YAML / JSON data, or InvalidInputError naming what is wrong where."""
    try:
        return Segment.model_validate(data)
    except ValidationError as error:
        label = f"segment {name}" if name else "segment"
        raise InvalidInputError(
            problems_of(error, prefix=name), summary=f"invalid {label}"
        ) from None


def check_references(
    segments: Mapping[str, Segment],
    *,
    computed_traits: Mapping[str, ComputedTrait] | None = None,
) -> None:
    """Raise InvalidInputError for references to unknown segments (or, when given, unknown
    computed traits) and for cycles, naming each cycle: `a -> b -> a`."""
    problems: list[FieldProblem] = []
    for name, segment in segments.items():
        for node in walk(segment.condition):
            if isinstance(node, SegmentRef) and node.segment not in segments:
                problems.append(
                    FieldProblem(field=name, message=f"unknown segment {node.segment!r}")
                )
            if (
                computed_traits is not None
                and isinstance(node, ComputedTraitCondition)
                and node.computed not in computed_traits
            ):
                problems.append(
                    FieldProblem(field=name, message=f"unknown computed trait {node.computed!r}")
                )
    for cycle in find_cycles(segments):
        problems.append(
            FieldProblem(
                field=cycle[0],
                message=f"segments refer to each other in a cycle: {' -> '.join(cycle)}",
            )
        )
    if problems:
        raise InvalidInputError(problems, summary="invalid segment references")


def find_cycles(segments: Mapping[str, Segment]) -> list[list[str]]:
    """Each cycle of segment references once, as the path that closes it (`[a, b, a]`)."""
    return cycles_in({name: referenced_segments(seg.condition) for name, seg in segments.items()})


def dependency_order(segments: Mapping[str, Segment]) -> list[str]:
    """Segment names so that each comes after the segments it refers to (no cycles assumed)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in segments:
            return
        seen.add(name)
        for target in referenced_segments(segments[name].condition):
            visit(target)
        order.append(name)

    for name in sorted(segments):
        visit(name)
    return order
