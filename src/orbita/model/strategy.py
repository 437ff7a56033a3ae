"""The strategy file: one YAML document, the source of truth of a workspace's CRM strategy.

This module holds its segments part (segments, computed traits, lifecycle stages, RFM);
goals, channels, templates, journeys and broadcasts join `Strategy` as further fields.
`parse_strategy` reports every mistake with the line and column of the key that holds it,
in words a marketer reads: unknown key, wrong type, unknown segment, cycle `a -> b -> a`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
)

from orbita.core.errors import FieldProblem, InvalidInputError
from orbita.core.zones import check_time_zone
from orbita.model.broadcasts import Broadcast
from orbita.model.channels import Channel
from orbita.model.funnels import Funnel
from orbita.model.goals import Goal
from orbita.model.journeys import BranchStep, Journey, SendStep, iter_steps
from orbita.model.ltv import LtvConfig
from orbita.model.rfm import RfmConfig
from orbita.model.segments import (
    ComputedTrait,
    RfmCell,
    Segment,
    SegmentRef,
    find_cycles,
    walk,
)
from orbita.model.send_rules import SendRule, send_rule_problems
from orbita.model.templates import Template, body_problems
from orbita.model.yaml_source import Path, Place, YamlSource, dotted, read_yaml


def _stage_kind(value: Any) -> str:
    return "name" if isinstance(value, str) else "inline"


# Tagged so that an inline condition with a mistake is not also reported as "not a text".
StageSegment = Annotated[
    Annotated[str, Tag("name")] | Annotated[Segment, Tag("inline")],
    Discriminator(_stage_kind),
]


class Stage(BaseModel):
    """One lifecycle stage: a customer is in the first stage whose segment holds them.

    `segment` names a segment of the strategy, or is a condition written in place.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    segment: StageSegment

    def condition_segment(self, segments: Mapping[str, Segment]) -> Segment:
        """The stage's segment: the named one, or the inline definition."""
        if isinstance(self.segment, str):
            return segments[self.segment]
        return self.segment


class Strategy(BaseModel):
    """A workspace's strategy. A plain container: each part is one field."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workspace: str = Field(min_length=1)
    timezone: str = "UTC"
    segments: dict[str, Segment] = Field(default_factory=dict)
    computed_traits: dict[str, ComputedTrait] = Field(default_factory=dict)
    stages: list[Stage] = Field(default_factory=list)
    rfm: RfmConfig = Field(default_factory=RfmConfig)
    ltv: LtvConfig = Field(default_factory=LtvConfig)
    journeys: dict[str, Journey] = Field(default_factory=dict)
    goals: list[Goal] = Field(default_factory=list)
    channels: dict[str, Channel] = Field(default_factory=dict)
    templates: dict[str, Template] = Field(default_factory=dict)
    send_rules: list[SendRule] = Field(default_factory=list)
    funnels: dict[str, Funnel] = Field(default_factory=dict)
    broadcasts: dict[str, Broadcast] = Field(default_factory=dict)

    # Where each part was written (None for a strategy built in code).
    _source: YamlSource | None = PrivateAttr(default=None)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return check_time_zone(value)

    @property
    def source(self) -> YamlSource | None:
        return self._source

    def place(self, path: Path) -> Place | None:
        return self._source.place(path) if self._source is not None else None

    def stage_segments(self) -> dict[str, Segment]:
        """Each stage's segment by stage name, in order (first match wins)."""
        return {stage.name: stage.condition_segment(self.segments) for stage in self.stages}


def parse_strategy(text: str, *, source: str) -> Strategy:
    """A strategy from YAML text; InvalidInputError listing each problem with its line."""
    document = read_yaml(text, source=source)
    if not isinstance(document.data, dict):
        raise InvalidInputError(
            [FieldProblem(field="", message="expected workspace:, segments:, … lines", line=1)],
            summary=f"{source}: invalid strategy",
        )
    try:
        strategy = Strategy.model_validate(document.data)
    except ValidationError as error:
        problems = [_problem(item, document) for item in error.errors(include_url=False)]
        raise InvalidInputError(
            sorted(problems, key=lambda p: p.line or 0), summary=f"{source}: invalid strategy"
        ) from None
    strategy._source = document
    problems = check_strategy_references(strategy)
    if problems:
        raise InvalidInputError(problems, summary=f"{source}: invalid strategy")
    return strategy


def check_strategy_references(strategy: Strategy) -> list[FieldProblem]:
    """Unknown segments, computed traits and RFM cells; cycles; duplicate stage names."""
    problems: list[FieldProblem] = []
    document = strategy.source

    def add(path: Path, message: str) -> None:
        place = strategy.place(path)
        problems.append(
            FieldProblem(field=dotted(path), message=message, line=place.line if place else None)
        )

    def conditions() -> Iterator[tuple[Path, Segment]]:
        for name, segment in strategy.segments.items():
            yield ("segments", name), segment
        for index, stage in enumerate(strategy.stages):
            if not isinstance(stage.segment, str):
                yield ("stages", index, "segment"), stage.segment

    cells = set(strategy.rfm.cells)
    for path, segment in conditions():
        for node in walk(segment.condition):
            if isinstance(node, SegmentRef) and node.segment not in strategy.segments:
                at = _find_value(document, path, "segment", node.segment)
                add(at, f"unknown segment {node.segment!r}{_known(strategy.segments)}")
            elif isinstance(node, RfmCell) and node.rfm not in cells:
                at = _find_value(document, path, "rfm", node.rfm)
                add(at, f"unknown RFM cell {node.rfm!r}{_known(cells)}")
            elif (
                getattr(node, "type", None) == "computed"
                and getattr(node, "computed", None) not in strategy.computed_traits
            ):
                name = getattr(node, "computed", "")
                at = _find_value(document, path, "computed", name)
                add(at, f"unknown computed trait {name!r}{_known(strategy.computed_traits)}")
    for cycle in find_cycles(strategy.segments):
        at = _find_value(document, ("segments", cycle[0]), "segment", cycle[1])
        add(at, f"segments refer to each other in a cycle: {' -> '.join(cycle)}")
    seen: set[str] = set()
    for index, stage in enumerate(strategy.stages):
        if stage.name in seen:
            add(("stages", index, "name"), f"stage {stage.name!r} is listed twice")
        seen.add(stage.name)
        if isinstance(stage.segment, str) and stage.segment not in strategy.segments:
            add(
                ("stages", index, "segment"),
                f"unknown segment {stage.segment!r}{_known(strategy.segments)}",
            )
    _journey_segment_problems(strategy, add)
    _delivery_problems(strategy, add)
    _broadcast_problems(strategy, add)
    for path, message in send_rule_problems(
        strategy.send_rules, segments=strategy.segments, templates=strategy.templates
    ):
        add(path, message)
    return sorted(problems, key=lambda p: p.line or 0)


def _journey_segment_problems(strategy: Strategy, add: Callable[[Path, str], None]) -> None:
    """Segments a journey names (its trigger, its branches' conditions) must exist."""
    document = strategy.source
    for journey_name, journey in strategy.journeys.items():
        under: Path = ("journeys", journey_name)
        segment = getattr(journey.trigger, "segment", None)
        if isinstance(segment, str) and segment not in strategy.segments:
            trigger: Path = (*under, "trigger")
            at = trigger
            for key in ("segment_entered", "segment_exited", "segment"):
                at = _find_value(document, trigger, key, segment)
                if at != trigger:
                    break
            add(at, f"unknown segment {segment!r}{_known(strategy.segments)}")
        named: list[str] = []
        for step in iter_steps(journey.steps):
            if isinstance(step, BranchStep):
                for arm in step.arms:
                    named += [
                        node.segment for node in walk(arm.when) if isinstance(node, SegmentRef)
                    ]
        for name in dict.fromkeys(named):
            if name not in strategy.segments:
                at = _find_value(document, under, "segment", name)
                add(at, f"unknown segment {name!r}{_known(strategy.segments)}")


def _delivery_problems(strategy: Strategy, add: Callable[[Path, str], None]) -> None:
    """Templates on unknown channels or without the parts their channel needs; send steps
    naming unknown templates or channels; goals of unknown journeys.

    Send steps are checked once the strategy has a `templates:` part: journeys are written
    (and their scenarios tested) before their messages are."""
    document = strategy.source
    for name, template in strategy.templates.items():
        channel = strategy.channels.get(template.channel)
        if channel is None:
            add(
                ("templates", name, "channel"),
                f"unknown channel {template.channel!r}{_known(strategy.channels)}",
            )
            continue
        for field, message in body_problems(template, channel_type=channel.type):
            add(("templates", name, *field.split(".")), message)
    for journey_name, journey in strategy.journeys.items():
        under: Path = ("journeys", journey_name)
        for step in iter_steps(journey.steps):
            if not isinstance(step, SendStep):
                continue
            if strategy.templates and step.template not in strategy.templates:
                at = _find_value(document, under, "send", step.template)
                if at == under:
                    at = _find_value(document, under, "template", step.template)
                add(at, f"unknown template {step.template!r}{_known(strategy.templates)}")
            if step.channel is not None and step.channel not in strategy.channels:
                at = _find_value(document, under, "channel", step.channel)
                add(at, f"unknown channel {step.channel!r}{_known(strategy.channels)}")
    for index, goal in enumerate(strategy.goals):
        if goal.journey is not None and goal.journey not in strategy.journeys:
            add(
                ("goals", index, "journey"),
                f"unknown journey {goal.journey!r}{_known(strategy.journeys)}",
            )


def _broadcast_problems(strategy: Strategy, add: Callable[[Path, str], None]) -> None:
    """Segments, templates, template variants and channels a broadcast names must exist."""
    segments = strategy.segments
    for name, broadcast in strategy.broadcasts.items():
        under: Path = ("broadcasts", name)
        audience = broadcast.audience
        named = [audience.segment] if audience.segment is not None else []
        if audience.condition is not None:
            named += [
                n.segment for n in walk(audience.condition.condition) if isinstance(n, SegmentRef)
            ]
        for segment in dict.fromkeys(named):
            if segment not in segments:
                at = _find_value(strategy.source, (*under, "audience"), "segment", segment)
                add(at, f"unknown segment {segment!r}{_known(segments)}")
        for index, segment in enumerate(audience.exclude):
            if segment not in segments:
                add(
                    (*under, "audience", "exclude", index),
                    f"unknown segment {segment!r}{_known(segments)}",
                )
        if broadcast.channel is not None and broadcast.channel not in strategy.channels:
            add(
                (*under, "channel"),
                f"unknown channel {broadcast.channel!r}{_known(strategy.channels)}",
            )
        if not strategy.templates:
            continue
        for arm, variant in broadcast.arms().items():
            template = strategy.templates.get(variant.template or "")
            at = (*under, "variants", arm) if broadcast.variants else (*under, "template")
            if template is None:
                add(at, f"unknown template {variant.template!r}{_known(strategy.templates)}")
            elif variant.variant is not None and variant.variant not in template.variants:
                add(
                    (*at, "variant"),
                    f"template {variant.template!r} has no variant {variant.variant!r}"
                    f"{_known(template.variants)}",
                )


def _known(names: Mapping[str, Any] | set[str]) -> str:
    if not names:
        return " (none is defined)"
    listed = sorted(names)
    more = f" and {len(listed) - 8} more" if len(listed) > 8 else ""
    return f" (known: {', '.join(listed[:8])}{more})"


def _find_value(document: YamlSource | None, under: Path, key: str, value: object) -> Path:
    """The path of the first `key: value` under `under` (for the line), else `under`."""
    if document is None:
        return under
    for path, found in document.keys_named(key, under=under):
        if found == value:
            return (*path, key)
    return under


# --- pydantic errors -> lines --------------------------------------------------------------


def _problem(item: Mapping[str, Any], document: YamlSource) -> FieldProblem:
    path = _data_path(tuple(item["loc"]), document.data)
    message = str(item["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    kind = item["type"]
    if kind == "extra_forbidden":
        message = f"unknown key {path[-1]!r}" if path else "unknown key"
    elif kind == "missing":
        missing = item["loc"][-1]
        message = f"{missing} is required"
    elif kind == "union_tag_invalid":
        from orbita.model.segments import CONDITION_HINT

        message = f"unknown condition type: {CONDITION_HINT}"
    elif kind in _TYPE_ERRORS:
        message = f"wrong type: {_TYPE_ERRORS[kind]}, got {_shown(item.get('input'))}"
    path = _closer_key(path, document, message)
    place = document.place(path)
    return FieldProblem(field=dotted(path), message=message, line=place.line if place else None)


_TYPE_ERRORS = {
    "string_type": "expected a text",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "dict_type": "expected a mapping (key: value lines)",
    "list_type": "expected a list",
    "model_type": "expected a mapping (key: value lines)",
    "model_attributes_type": "expected a mapping (key: value lines)",
}


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _data_path(loc: tuple[Any, ...], data: Any) -> Path:
    """Pydantic's error location reduced to the parts that exist in the data: pydantic
    inserts union tags and validator names that the YAML does not have."""
    path: list[str | int] = []
    value = data
    for index, part in enumerate(loc):
        if _is_tag(loc, index, value):
            continue
        in_mapping = isinstance(value, dict) and part in value
        in_list = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        if in_mapping or in_list:
            path.append(part)
            value = value[part]
        # Anything else is a union tag or a validator's name, which the YAML does not have.
    return tuple(path)


def _is_tag(loc: tuple[Any, ...], index: int, value: Any) -> bool:
    """Whether loc[index] is the tag pydantic adds after a condition's position (a segment,
    an item of all / any, the inside of not): `event` there is not the `event` key."""
    if index == 0 or loc[index] not in _CONDITION_TAGS:
        return False
    before = loc[index - 1]
    after_all_any = isinstance(before, int) and index >= 2 and loc[index - 2] in ("all", "any")
    in_segments = index >= 2 and loc[index - 2] == "segments"
    return after_all_any or in_segments or before in ("not", "inline")


_CONDITION_TAGS = frozenset(
    {"sequence", "event", "trait", "computed", "predicted", "rfm", "segment", "all", "any", "not"}
)


def _closer_key(path: Path, document: YamlSource, message: str) -> Path:
    """Errors raised while reading a short form sit on the whole condition; point at the key
    the message is about when one of the mapping's keys or values is named in it."""
    try:
        value = document.get(path)
    except (KeyError, IndexError, TypeError):
        return path
    if not isinstance(value, dict):
        return path
    for key, child in value.items():
        if isinstance(child, dict | list):
            continue
        if message.startswith((repr(child), f"'{child}'")):
            return (*path, key)
    for key in value:
        if f"{key!r}" in message or message.startswith(f"{key} "):
            return (*path, key)
    return path
