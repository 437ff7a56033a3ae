"""The strategy file's JSON Schema: checked in without drift, valid itself, and in agreement
with the loader — every file the loader reads validates, every mistake below fails both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from orbita.cli.main import app
from orbita.core.errors import InvalidInputError
from orbita.model.schema import SCHEMA_FILE, strategy_json_schema, strategy_json_schema_text
from orbita.model.strategy import parse_strategy

ROOT = Path(__file__).parents[2]
SCHEMA_PATH = ROOT / SCHEMA_FILE
EXAMPLES = sorted(ROOT.glob("examples/*/strategy.yaml"))
TEST_YAML = sorted((ROOT / "tests").rglob("*.yaml"))


class _EditorLoader(yaml.SafeLoader):
    """YAML as an editor's language server sees it: dates stay text, as in JSON."""


_EditorLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def as_editor_reads(text: str) -> Any:
    return yaml.load(text, Loader=_EditorLoader)  # a SafeLoader subclass


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    return Draft202012Validator(strategy_json_schema())


def loader_accepts(text: str) -> bool:
    try:
        parse_strategy(text, source="strategy.yaml")
    except InvalidInputError:
        return False
    return True


def schema_errors(validator: Draft202012Validator, text: str) -> list[str]:
    return [
        f"{'.'.join(map(str, error.absolute_path))}: {error.message[:200]}"
        for error in validator.iter_errors(as_editor_reads(text))
    ]


def test_the_checked_in_schema_is_the_generated_one() -> None:
    assert SCHEMA_PATH.read_text(encoding="utf-8") == strategy_json_schema_text(), (
        f"{SCHEMA_FILE} is out of date: run `orbita schema --out {SCHEMA_FILE}`"
    )


def test_the_schema_is_valid_draft_2020_12_and_every_reference_resolves() -> None:
    schema = strategy_json_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    references = set(_references(schema))
    assert references, "the models are described through shared definitions"
    for reference in references:
        assert reference.startswith("#/$defs/"), reference
        assert reference.removeprefix("#/$defs/") in schema["$defs"], reference


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        if "$ref" in value:
            yield value["$ref"]
        for item in value.values():
            yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def test_models_lend_their_help_to_editors() -> None:
    defs = strategy_json_schema()["$defs"]
    assert defs["Journey"]["description"] == "One automated scenario of the strategy."
    assert defs["SendStep"]["description"].startswith("Send a template")
    assert "whole number and a unit" in defs["Duration"]["description"]
    # The short forms are described where the long form is: one definition per model.
    assert {"TraitCondition", "WaitStep", "SegmentTrigger", "Entry"} <= set(defs)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_the_examples_validate_and_name_the_schema(
    path: Path, validator: Draft202012Validator
) -> None:
    text = path.read_text(encoding="utf-8")
    assert loader_accepts(text)
    assert schema_errors(validator, text) == []
    modeline = text.splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert modeline.startswith(prefix)
    assert (path.parent / modeline.removeprefix(prefix)).resolve() == SCHEMA_PATH.resolve()


@pytest.mark.parametrize("path", TEST_YAML, ids=lambda p: str(p.relative_to(ROOT / "tests")))
def test_test_yaml_gets_the_loaders_verdict(path: Path, validator: Draft202012Validator) -> None:
    """Strategies the loader reads validate; the scenario files, which wrap journeys and
    segments in a timeline, are no strategies to either — their journeys and segments are."""
    text = path.read_text(encoding="utf-8")
    accepted = loader_accepts(text)
    errors = schema_errors(validator, text)
    assert (errors == []) == accepted, errors
    if accepted:
        return
    data = as_editor_reads(text)
    defs = validator.schema["$defs"]
    for name, part in (("journeys", "Journey"), ("segments", "Segment")):
        part_validator = Draft202012Validator({"$ref": f"#/$defs/{part}", "$defs": defs})
        for key, value in (data.get(name) or {}).items():
            problems = [e.message[:200] for e in part_validator.iter_errors(value)]
            assert problems == [], f"{name}.{key}: {problems}"


# A strategy each snippet is added to: the names the snippets refer to exist.
BASE = """workspace: shop
channels:
  sms: {type: sms, account_sid: AC1, token_env: SMS_TOKEN, from: "+15550001111"}
computed_traits:
  orders_count: {event: "Order Completed", aggregate: count}
segments:
  buyers: {event: "Order Completed"}
"""

VALID_SEGMENTS = [
    "{trait: country, in: [UA, PL]}",
    "{trait: created_at, before: 14d}",
    "{trait: created_at, older_than: 14d}",
    "{trait: birthday, anniversary_within: 3d}",
    "{trait: age, range: [18, 30]}",
    "{trait: email, exists: true}",
    "{trait: signed_up, gte: 2024-01-01}",
    "{type: trait, trait: country, op: eq, value: UA}",
    "{computed: orders_count, gte: 2}",
    "{predicted: churn_probability, gte: 0.7}",
    "{rfm: champions}",
    '{event: "Order Completed", within: 30d, count: ">= 1"}',
    '{event: "Order Completed", between: [90d, 30d], count: "== 0"}',
    '{event: "Order Completed", sum: {revenue: ">= 300"}}',
    '{event: "Order Completed", last: {currency: "== UAH"}}',
    '{event: "Product Viewed", where: {category: shoes, price: {gte: 50}, size: [40, 41]}}',
    '{event: "Product Viewed", where: {price: {op: gte, value: 50}}}',
    '{event: "Page", message_type: page, count: {op: ">=", value: 2}}',
    (
        '{type: event, event: "Order Completed", window: {newer_than: 30d},'
        " where: [{property: revenue, op: gt, value: 10}],"
        ' aggregate: {function: sum, property: revenue, compare: ">= 100"}}'
    ),
    '{did: {event: "Product Added", within: 7d}, then_not: {event: "Order Completed"}, within: 4h}',
    "{all: [{segment: buyers}, {not: {trait: country, eq: UA}}]}",
    "{any: [{segment: buyers}, {type: segment, segment: buyers}]}",
]

INVALID_SEGMENTS = [
    '{event: "Order Completed", wihtin: 30d}',  # unknown key
    "{trait: country, in: [UA], eq: UA}",  # two operators
    "{trait: country, is: UA}",  # unknown operator
    "{trait: country}",  # no operator
    "{trait: country, in: []}",  # an empty list
    "{trait: email, exists: yes please}",  # wrong type
    '{event: "Order Completed", within: 30}',  # a duration without its unit
    '{event: "Order Completed", within: 30 days}',  # not a duration
    '{event: "Order Completed", within: 30d, before: 10d}',  # two windows
    '{event: "Order Completed", count: 2}',  # a comparator is text
    '{event: "Order Completed", count: "about 2"}',  # not a comparator
    '{event: "Order Completed", sum: {revenue: "> lots"}}',  # a number after >
    '{event: "Order Completed", count: ">= 1", sum: {revenue: "> 1"}}',  # two aggregates
    "{segment: 5}",  # wrong type
    "{segmnet: buyers}",  # not a condition
    "{all: {segment: buyers}}",  # all takes a list
]

VALID_JOURNEYS = [
    "trigger: {event: Signed Up}\n    steps: [{send: welcome}]",
    "trigger: {event: X, where: {price: {gte: 50}}}\n    entry: once",
    "trigger: {segment_entered: buyers}\n    entry: {cooldown: 7d}",
    "trigger: {segment_exited: buyers}\n    entry: {once: true}",
    'trigger: {type: segment, segment: buyers, "on": exited}\n    entry: {key: cart_id}',
    'trigger: {schedule: "0 10 * * *", segment: buyers, timezone: customer}',
    'trigger: {date_trait: birthday, yearly: true, at: "10:00"}',
    "trigger: {date_trait: card_activated_at, after: 14d}\n    holdout: 10%",
    "trigger: api\n    holdout: 0.1",
    "trigger: {api: true}\n    entry: {mode: cooldown, cooldown: 3d}",
    "trigger: {type: event, event: X}\n    exit_on: [{event: Y, correlate: cart_id}]",
    "trigger: {event: X}\n    goal: {event: Y, within: 7d, correlate: [cart_id, sku]}",
    """trigger: {event: X}
    steps:
      - wait: 1h
      - wait: {until: "09:00", days: [mon, fri]}
      - wait: {until_trait: renewal_date, before: 3d, at: "10:00"}
      - send: a
      - send: {template: a, channel: sms}
      - {send: a, channel: sms, id: second}
      - {type: send, template: a, variant: B}
      - id: clicked
        wait_for: {event: Email Clicked, timeout: 2d, on_timeout: [{send: a}]}
      - {wait_for: {event: Email Opened}, timeout: 1d, on_event: clicked}
      - branch:
          - {when: {trait: score, lt: 600}, then: [{exit: low score}]}
          - {when: {segment: buyers}, then: clicked}
        else: [{send: a}]
      - split:
          - {name: A, percent: 50%, then: [{send: a}]}
          - {name: B, percent: 50%}
      - update: {trait: last_offer, set: winback_1}
      - {update: {trait: offers_sent, increment: 1}}
      - webhook: https://crm.example.com/hook
      - webhook: {url: "https://crm.example.com/hook", method: PUT, body: {a: 1}}
      - exit""",
    "trigger: {event: X}\n    steps: [{exit: true, id: done}]",
    "trigger: {event: X}\n    steps: [{id: again, wait: 1d}, {goto: again}]",
    "trigger: {event: X}\n    steps: [{exit: {reason: bought}}]",
]

INVALID_JOURNEYS = [
    "trigger: {event: X}\n    steps: [{sleep: 1h}]",  # unknown step kind
    "trigger: {event: X}\n    steps: [{wait: 2 days}]",  # bad duration
    "trigger: {event: X}\n    steps: [{wait: 30}]",  # a duration without its unit
    "trigger: {event: X}\n    steps: [{send: a, wait: 1h}]",  # two steps in one item
    "trigger: {event: X}\n    steps: [{send: {template: a, colour: red}}]",  # unknown key
    "trigger: {event: X}\n    steps: [{wait_for: {event: Y}}]",  # no timeout
    "trigger: {event: X}\n    steps: [{update: 5}]",  # update takes a mapping
    "trigger: {event: X}\n    steps: [5]",  # not a step
    'trigger: {event: X}\n    steps: [{wait: {until: "25:00"}}]',  # not a time of day
    "trigger: {event: X}\n    steps: [{webhook: ftp://example.com}]",  # not http(s)
    "trigger: {event: X}\n    entry: sometimes",  # unknown entry rule
    "trigger: {event: X}\n    entry: {once: false}",
    "trigger: {event: X}\n    holdout: 150%",  # over 100%
    "trigger: {event: X}\n    holdout: ten",
    "trigger: {segment_entered: 5}",  # wrong type
    "trigger: {signal: X}",  # not a trigger
    "trigger: {event: X, colour: red}",  # unknown key
    "trigger: {event: X}\n    on_change: rewrite",  # not an option
    "steps: [{send: a}]",  # no trigger
]

VALID_STRATEGIES = [
    BASE
    + """templates:
  a: {channel: sms, text: Hello}
broadcasts:
  sale:
    audience: buyers
    template: a
    throttle: "100 / sec"
    goal: Order Completed
    holdout: 5%
    schedule: {cron: "0 9 * * 1"}
""",
    BASE + "rfm:\n  window: 180d\n  cells:\n    all: [{r: 1-5, f: [1, 2-5], m: '*'}]\n",
    BASE + "stages:\n  - {name: buyer, segment: buyers}\n  - {name: rest, segment: {rfm: lost}}\n",
]

INVALID_STRATEGIES = [
    BASE + "broadcasts:\n  sale: {audience: buyers, template: a, throttle: fast}",
    "workspace: shop\nsegmnts: {}",  # unknown key
    "workspace: [shop]",  # wrong type
    "segments: {}",  # no workspace
    "workspace: shop\nchannels:\n  email: {host: x, from: a@b.c}",  # no type
    "workspace: shop\nchannels:\n  email: {type: fax, number: 1}",  # unknown channel type
    "workspace: shop\nchannels:\n  email: {type: smtp, from: a@b.c, port: seventy}",
    "workspace: shop\ntemplates:\n  a: {subject: Hi}",  # no channel
    "workspace: shop\nrfm: {window: 1 year}",  # bad duration
    "workspace: shop\nrfm:\n  cells:\n    all: [{r: 6}]",  # scores go 1..5
]


def _segment(snippet: str) -> str:
    return BASE + f"  tested: {snippet}\n"


def _journey(snippet: str) -> str:
    return BASE + f"journeys:\n  tested:\n    {snippet}\n"


@pytest.mark.parametrize("text", VALID_STRATEGIES)
def test_other_parts_validate(text: str, validator: Draft202012Validator) -> None:
    assert loader_accepts(text)
    assert schema_errors(validator, text) == []


@pytest.mark.parametrize("snippet", VALID_SEGMENTS)
def test_short_and_long_segment_forms_validate(
    snippet: str, validator: Draft202012Validator
) -> None:
    text = _segment(snippet)
    assert loader_accepts(text)
    assert schema_errors(validator, text) == []


@pytest.mark.parametrize("snippet", VALID_JOURNEYS)
def test_short_and_long_journey_forms_validate(
    snippet: str, validator: Draft202012Validator
) -> None:
    text = _journey(snippet)
    assert loader_accepts(text)
    assert schema_errors(validator, text) == []


@pytest.mark.parametrize(
    "text",
    [_segment(s) for s in INVALID_SEGMENTS]
    + [_journey(s) for s in INVALID_JOURNEYS]
    + INVALID_STRATEGIES,
)
def test_mistakes_the_loader_refuses_fail_the_schema_too(
    text: str, validator: Draft202012Validator
) -> None:
    assert not loader_accepts(text)
    assert schema_errors(validator, text) != []


def test_orbita_schema_prints_and_writes_the_schema(tmp_path: Path) -> None:
    runner = CliRunner()
    printed = runner.invoke(app, ["schema"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout) == strategy_json_schema()
    target = tmp_path / "strategy.schema.json"
    written = runner.invoke(app, ["schema", "--out", str(target)])
    assert written.exit_code == 0, written.output
    assert target.read_text(encoding="utf-8") == strategy_json_schema_text()
    failed = runner.invoke(app, ["schema", "--out", str(tmp_path / "missing" / "x.json")])
    assert failed.exit_code == 2
