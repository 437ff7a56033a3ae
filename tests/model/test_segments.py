"""The segment language as marketers write it: short YAML forms, the tagged long form they
become, and the errors a wrong definition gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from orbita.core.errors import InvalidInputError
from orbita.model.durations import format_duration, parse_duration, parse_percentage
from orbita.model.segments import (
    AllOf,
    ComputedTrait,
    EventCondition,
    Not,
    Segment,
    SegmentRef,
    SequenceCondition,
    TraitCondition,
    check_references,
    dependency_order,
    parse_segment,
)

DESIGN_SKETCH = """
segments:
  lapsed_30d:
    all:
      - {event: "Order Completed", count: ">= 1"}
      - {event: "Order Completed", within: 30d, count: "== 0"}
  shoe_browsers:
    all:
      - {event: "Product Viewed", where: {category: shoes}, within: 30d, count: ">= 2"}
      - {trait: country, in: [UA, PL]}
      - not: {segment: lapsed_30d}
"""


def _segments(text: str) -> dict[str, Segment]:
    data = yaml.safe_load(text)["segments"]
    return {name: parse_segment(spec, name=name) for name, spec in data.items()}


def _error(spec: object) -> str:
    with pytest.raises(InvalidInputError) as caught:
        parse_segment(yaml.safe_load(spec) if isinstance(spec, str) else spec, name="s")
    return str(caught.value)


# --- the contract of DESIGN.md's sketch ------------------------------------------------------


def test_design_sketch_parses_into_tagged_nodes() -> None:
    segments = _segments(DESIGN_SKETCH)
    lapsed = segments["lapsed_30d"].condition
    assert isinstance(lapsed, AllOf)
    ever, recent = lapsed.all
    assert isinstance(ever, EventCondition) and isinstance(recent, EventCondition)
    assert ever.window.newer_than is None
    assert recent.window.newer_than == timedelta(days=30)
    assert (recent.aggregate.function, recent.aggregate.compare.op) == ("count", "==")
    assert recent.aggregate.zero_holds  # absence: customers without orders qualify

    browsers = segments["shoe_browsers"].condition
    assert isinstance(browsers, AllOf)
    viewed, country, excluded = browsers.all
    assert isinstance(viewed, EventCondition)
    assert [(t.property, t.op, t.value) for t in viewed.where] == [("category", "eq", "shoes")]
    assert isinstance(country, TraitCondition)
    assert (country.trait, country.op, country.value) == ("country", "in", ("UA", "PL"))
    assert isinstance(excluded, Not) and excluded.condition == SegmentRef(segment="lapsed_30d")


def test_long_form_round_trips_and_keeps_its_tags() -> None:
    for segment in _segments(DESIGN_SKETCH).values():
        stored = segment.model_dump(mode="json")
        assert Segment.model_validate(stored) == segment
        assert Segment.model_validate_json(segment.model_dump_json()) == segment
    stored = _segments(DESIGN_SKETCH)["shoe_browsers"].model_dump(mode="json")
    assert stored["type"] == "all"
    assert [item["type"] for item in stored["all"]] == ["event", "trait", "not"]
    assert stored["all"][0]["window"] == {"newer_than": "30d", "older_than": None}
    assert stored["all"][0]["aggregate"]["compare"] == ">= 2"
    assert stored["all"][2]["not"] == {"type": "segment", "segment": "lapsed_30d"}


def test_every_short_form() -> None:
    spec = yaml.safe_load(
        """
all:
  - {event: "Product Viewed", where: {price: {gte: 50}, size: [40, 41]}}
  - {event: "Order Completed", sum: {revenue: ">= 300"}, between: [30d, 90d]}
  - {event: "Order Completed", before: 30d, last: {status: "== shipped"}}
  - {trait: created_at, before: 14d}
  - {trait: created_at, older_than: 14d}
  - {trait: birthday, anniversary_within: 3d}
  - {trait: age, range: [18, 30]}
  - {trait: signed_up, gte: 2024-01-01}
  - {did: {event: "Product Added"}, then_not: {event: "Order Completed"}, within: 4h}
  - {computed: orders_count, gte: 2}
  - {rfm: champions}
  - {predicted: churn_probability, gte: 0.7}
  - any: [{segment: a}, {not: {trait: vip, exists: true}}]
"""
    )
    segment = parse_segment(spec)
    kinds = [node["type"] for node in segment.model_dump(mode="json")["all"]]
    assert kinds == [
        "event",
        "event",
        "event",
        "trait",
        "trait",
        "trait",
        "trait",
        "trait",
        "sequence",
        "computed",
        "rfm",
        "predicted",
        "any",
    ]
    condition = segment.condition
    assert isinstance(condition, AllOf)
    sums = condition.all[1]
    assert isinstance(sums, EventCondition)
    # Either order of `between` reads as "from 90 to 30 days ago".
    assert (sums.window.newer_than, sums.window.older_than) == (
        timedelta(days=90),
        timedelta(days=30),
    )
    before, older = condition.all[3], condition.all[4]
    assert isinstance(before, TraitCondition) and isinstance(older, TraitCondition)
    assert before.op == older.op == "before"
    dated = condition.all[7]
    assert isinstance(dated, TraitCondition)
    assert dated.value == datetime(2024, 1, 1, tzinfo=UTC)
    sequence = condition.all[8]
    assert isinstance(sequence, SequenceCondition)
    assert sequence.negated and sequence.within == timedelta(hours=4)


def test_computed_trait_definitions() -> None:
    trait = ComputedTrait.model_validate(
        {"event": "Product Viewed", "aggregate": "mode", "property": "category", "within": "90d"}
    )
    assert trait.window.newer_than == timedelta(days=90)
    with pytest.raises(ValueError, match="needs a property"):
        ComputedTrait.model_validate({"event": "Order Completed", "aggregate": "sum"})
    with pytest.raises(ValueError, match="takes no property"):
        ComputedTrait.model_validate(
            {"event": "Order Completed", "aggregate": "count", "property": "revenue"}
        )


# --- errors a marketer understands -----------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{trait: country, greater: 3}", "s: unknown operator 'greater': use one of eq, ne, in"),
        ("{trait: country}", "s: say what to check about trait 'country'"),
        ("{trait: country, eq: UA, in: [PL]}", "one operator per condition, got eq, in"),
        ("{event: Order Completed, within: 30}", "30 has no unit: write a whole number and a unit"),
        ("{event: Order Completed, within: '30'}", "'30' has no unit"),
        ("{event: Order Completed, within: 3 days}", "'3 days' is not a duration"),
        (
            "{event: Order Completed, within: 30d, before: 5d}",
            "use one window, not within and before",
        ),
        ("{event: Order Completed, between: [30d]}", "between needs two durations"),
        ("{event: Order Completed, count: '>> 2'}", "bad comparator '>> 2': write an operator"),
        ("{event: Order Completed, count: 2}", "bad comparator 2: write an operator and a value"),
        ("{event: Order Completed, count: '>= many'}", ">= needs a number"),
        ("{event: Order Completed, sum: {revenue: '== big'}}", "sum compares with a number"),
        ("{event: Order Completed, sum: '>= 3'}", "sum needs one property and a comparator"),
        ("{event: Order Completed, count: '>= 1', sum: {revenue: '> 1'}}", "one aggregate"),
        ("{event: Order Completed, cnt: '>= 1'}", "unknown key 'cnt' in an event condition: use"),
        ("{trait: age, gte: old}", "gte needs a number or a date, got 'old'"),
        ("{trait: age, between: [30, 18]}", "between needs the low value first"),
        ("{trait: country, in: UA}", "in needs a list such as [UA, PL]"),
        ("{trait: country, in: [UA, 3]}", "in needs a list of texts or a list of numbers"),
        ("{trait: vip, exists: maybe}", "exists needs true or false"),
        ("{trait: birthday, anniversary_within: 36h}", "anniversary_within counts whole days"),
        ("{all: []}", "s: all needs at least one condition"),
        ("{all: [{evnt: Order Completed}]}", "s.all[0]: not a condition (got evnt)"),
        ("{all: [{type: bogus}]}", "s.all[0]: unknown condition type"),
        ("{all: [42]}", "s.all[0]: expected a condition, got 42"),
        (
            "{any: [{not: {all: [{event: A, where: {price: {gt: cheap}}}]}}]}",
            "s.any[0].not.all[0].where[0]: gt needs a number or a date, got 'cheap'",
        ),
        (
            "{did: {event: A}, then: {event: B}, then_not: {event: C}, within: 1h}",
            "exactly one of then or then_not",
        ),
        ("{did: {event: A}, then: {event: B, within: 2d}, within: 1h}", "takes no window"),
        ("{did: {event: A, count: '>= 2'}, then: {event: B}, within: 1h}", "takes no count"),
    ],
)
def test_validation_messages(spec: str, message: str) -> None:
    text = _error(spec)
    assert message in text
    assert "pydantic" not in text and "Value error" not in text and "union_tag" not in text


def test_errors_name_the_segment() -> None:
    with pytest.raises(InvalidInputError) as caught:
        parse_segment({"event": "A", "within": 7}, name="lapsed_30d")
    assert str(caught.value).startswith("invalid segment lapsed_30d: lapsed_30d: 7 has no unit")
    problem = caught.value.problems[0]
    assert problem.field == "lapsed_30d"


# --- references and cycles -------------------------------------------------------------------


def test_check_references_accepts_the_sketch() -> None:
    segments = _segments(DESIGN_SKETCH)
    check_references(segments)
    assert dependency_order(segments) == ["lapsed_30d", "shoe_browsers"]


def test_cycles_and_unknown_references_are_named() -> None:
    segments = _segments(
        """
segments:
  a: {all: [{segment: b}, {trait: plan, eq: pro}]}
  b: {any: [{not: {segment: a}}, {segment: ghost}]}
  c: {segment: c}
  d: {segment: a}
  e: {computed: lifetime_value, gt: 3}
"""
    )
    with pytest.raises(InvalidInputError) as caught:
        check_references(segments, computed_traits={})
    messages = [problem.describe() for problem in caught.value.problems]
    assert messages == [
        "b: unknown segment 'ghost'",
        "e: unknown computed trait 'lifetime_value'",
        "a: segments refer to each other in a cycle: a -> b -> a",
        "c: segments refer to each other in a cycle: c -> c",
    ]


# --- durations and percentages ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("36h", timedelta(hours=36)),
        ("14d", timedelta(weeks=2)),
    ],
)
def test_durations(text: str, value: timedelta) -> None:
    assert parse_duration(text) == value
    assert parse_duration(format_duration(value)) == value


def test_percentages() -> None:
    assert parse_percentage("10%") == pytest.approx(0.1)
    assert parse_percentage("12.5%") == pytest.approx(0.125)
    for bad in ("10", "150%", True, "ten%"):
        with pytest.raises(ValueError, match=r"percentage|between"):
            parse_percentage(bad)


def test_json_schema_is_generated() -> None:
    schema = Segment.model_json_schema()
    assert "EventCondition" in str(schema)
