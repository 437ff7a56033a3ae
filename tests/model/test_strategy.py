"""The strategy file: a marketer's mistakes reported with the line of the key that holds them;
the RFM cell mapping covers every score combination exactly once."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from orbita.core.errors import InvalidInputError
from orbita.model.rfm import DEFAULT_CELLS, RfmConfig
from orbita.model.segments import RFM_CELLS
from orbita.model.strategy import parse_strategy

FIXTURE = Path(__file__).parent.parent / "fixtures" / "clothing_segments.yaml"


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(InvalidInputError) as caught:
        parse_strategy(text, source="strategy.yaml")
    return [(p.line, p.field, p.message) for p in caught.value.problems]


def test_the_clothing_store_fixture_parses() -> None:
    strategy = parse_strategy(FIXTURE.read_text(), source=str(FIXTURE))
    assert {"lapsed_30d", "shoe_browsers", "vip", "cart_abandoners"} <= set(strategy.segments)
    assert [s.name for s in strategy.stages] == [
        "reactivated", "new", "loyal", "active", "at_risk", "lapsed", "prospect"
    ]  # fmt: skip
    assert set(strategy.stage_segments()) == {s.name for s in strategy.stages}


def test_unknown_key_points_at_its_line() -> None:
    text = """workspace: shop
segments:
  a:
    all:
      - event: "Order Completed"
        wihtin: 30d
"""
    ((line, field, message),) = problems(text)
    assert line == 6 and field == "segments.a.all[0].wihtin"
    assert message.startswith("unknown key 'wihtin'")


def test_window_without_unit_points_at_the_window() -> None:
    text = """workspace: shop
segments:
  a:
    event: "Order Completed"
    within: 30
"""
    ((line, field, message),) = problems(text)
    assert (line, field) == (5, "segments.a.within")
    assert "has no unit" in message


def test_wrong_types_unknown_keys_and_time_zones_each_get_a_line() -> None:
    text = """workspace: [1]
timezone: Mars/Base
segments:
  a:
    any:
      - {event: 5}
      - {foo: bar}
journeyz: {}
"""
    found = problems(text)
    assert [line for line, _, _ in found] == [1, 2, 6, 7, 8]
    assert "wrong type: expected a text" in found[0][2]
    assert "unknown time zone 'Mars/Base'" in found[1][2]
    assert "not a condition" in found[3][2]
    assert found[4][2] == "unknown key 'journeyz'"


def test_unknown_references_and_cycles_are_named_where_written() -> None:
    text = """workspace: shop
segments:
  a: {segment: b}
  b:
    all:
      - {trait: plan, eq: gold}
      - not: {segment: a}
  c: {not: {segment: nope}}
stages:
  - {name: s, segment: zzz}
  - name: t
    segment: {rfm: champs}
"""
    found = problems(text)
    assert found[0][:2] == (3, "segments.a.segment")
    assert "cycle: a -> b -> a" in found[0][2]
    assert (8, "segments.c.not.segment", "unknown segment 'nope' (known: a, b, c)") in found
    assert any(line == 10 and "unknown segment 'zzz'" in message for line, _, message in found)
    assert any(line == 12 and "unknown RFM cell 'champs'" in message for line, _, message in found)


def test_a_key_written_twice_and_broken_yaml_are_reported() -> None:
    assert problems("workspace: a\nworkspace: b\n")[0][0] == 2
    line, _, message = problems("workspace: [a\n")[0]
    assert line == 2 and message.startswith("not valid YAML")


def test_default_rfm_cells_cover_every_score_exactly_once() -> None:
    table = RfmConfig().table()
    assert set(table) == set(itertools.product(range(1, 6), repeat=3))
    assert set(table.values()) == set(RFM_CELLS) == set(DEFAULT_CELLS)
    counted: dict[tuple[int, int, int], int] = {}
    for patterns in RfmConfig().cells.values():
        for pattern in patterns:
            for scores in pattern.expand():
                counted[scores] = counted.get(scores, 0) + 1
    assert set(counted.values()) == {1}


def test_an_override_with_gaps_or_overlaps_is_refused_with_the_scores() -> None:
    text = """workspace: shop
rfm:
  cells:
    best: [{r: 5}]
    rest: [{r: 1-5}]
"""
    ((line, field, message),) = problems(text)
    assert field == "rfm" and line == 2
    assert "scores in two cells: 511 in best and rest" in message
    gap = """workspace: shop
rfm:
  cells:
    best: [{r: 5}]
    rest: [{r: 2-4}]
"""
    ((_, _, message),) = problems(gap)
    assert "scores in no cell (RFM): 111, 112" in message


def test_an_override_may_name_its_own_cells() -> None:
    text = """workspace: shop
rfm:
  window: 180d
  cells:
    recent: [{r: 4-5}]
    older: [{r: 1-3}]
segments:
  recent_buyers: {rfm: recent}
"""
    strategy = parse_strategy(text, source="s.yaml")
    assert strategy.rfm.table()[(5, 1, 1)] == "recent"
    assert strategy.rfm.window.days == 180


JOURNEY_STRATEGY = """workspace: clothing-store
journeys:
  abandoned_cart:
    trigger: {event: "Product Added"}
    entry: {cooldown: 7d}
    exit_on: [{event: "Order Completed"}]
    goal: {event: "Order Completed", within: 7d}
    holdout: 10%
    steps:
      - wait: 1h
      - send: cart_reminder
      - wait_for: {event: "Email Clicked", timeout: 2d, on_timeout: sms_nudge}
      - {id: sms_nudge, send: cart_sms}
"""


def test_journeys_are_part_of_the_strategy_with_their_lines() -> None:
    strategy = parse_strategy(JOURNEY_STRATEGY, source="strategy.yaml")
    journey = strategy.journeys["abandoned_cart"]
    assert journey.holdout == 0.1 and len(journey.steps) == 4

    with pytest.raises(InvalidInputError) as raised:
        parse_strategy(
            JOURNEY_STRATEGY.replace("cooldown: 7d", "cooldown: 7"), source="strategy.yaml"
        )
    [problem] = raised.value.problems
    assert (problem.line, problem.field) == (5, "journeys.abandoned_cart.entry.cooldown")
    assert "no unit" in problem.message

    with pytest.raises(InvalidInputError) as raised:
        parse_strategy(JOURNEY_STRATEGY.replace("id: sms_nudge", "id: sms"), source="strategy.yaml")
    [problem] = raised.value.problems
    assert problem.line == 3
    assert "no step has the id 'sms_nudge'" in problem.message


def test_yaml_reads_no_yes_and_on_as_words_and_only_true_false_as_booleans() -> None:
    # YAML 1.1 reads NO (Norway), yes and on as booleans; editors' YAML servers read 1.2.
    strategy = parse_strategy(
        """
workspace: shop
segments:
  norway: {trait: country, eq: NO}
  says_yes: {trait: answer, in: [yes, on, off]}
  opted_in: {trait: opted_in, eq: true}
""",
        source="strategy.yaml",
    )
    dumped = {name: s.model_dump(exclude_none=True) for name, s in strategy.segments.items()}
    assert "'NO'" in str(dumped["norway"])
    assert "['yes', 'on', 'off']" in str(dumped["says_yes"])
    assert "True" in str(dumped["opted_in"])
