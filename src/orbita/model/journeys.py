"""Journeys: a trigger, entry rules, exit events, a goal, a holdout and a list of steps.

The short forms of DESIGN.md's sketch are the contract; each step also has a long form with
a `type` tag (what the API and the database store):

    trigger: {event: "Product Added"}                 (see `orbita.model.triggers`)
    entry: {cooldown: 7d}        entry: once          entry: {key: cart_id}  (a run per cart)
    exit_on: [{event: "Order Completed", correlate: cart_id}]
    goal: {event: "Order Completed", within: 7d}
    holdout: 10%
    steps:
      - wait: 1h                                      a duration
      - wait: {until: "09:00", days: [mon, tue]}      a time of day in the customer's zone
      - wait: {until_trait: renewal_date, before: 3d, at: "10:00"}
      - send: cart_reminder                           or {send: {template: x, channel: sms}}
      - id: clicked?                                  any step may carry an id to jump to
        wait_for: {event: "Email Clicked", timeout: 2d, on_timeout: sms_nudge}
      - branch:
          - {when: {trait: credit_score, lt: 600}, then: [{exit: low score}]}
          - {when: {segment: vip}, then: vip_offer}
        else: [{send: standard_offer}]
      - split:
          - {name: A, percent: 50%, then: [{send: offer_a}]}
          - {name: B, percent: 50%, then: [{send: offer_b}]}
      - update: {trait: last_offer, set: winback_1}   or {trait: offers_sent, increment: 1}
      - webhook: https://crm.example.com/hook         or {url: …, method: POST, body: {…}}
      - goto: clicked?
      - exit: bought elsewhere                        or just `exit`

An outcome (`then`, `else`, `on_event`, `on_timeout`) is a list of steps, which continue
with the step after their parent when they end, or the id of a step to jump to; without
one the journey goes on with the next step.

`journey_graph` compiles the steps into nodes with stable ids (a step's `id`, else its
path such as `steps.3` or `steps.4.branch.0.then.1`) and names what is wrong with the
graph in words a marketer reads: jumps to unknown steps, steps nothing reaches, loops that
never wait.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import time, timedelta
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
    model_validator,
)
from pydantic_core import CoreSchema

from orbita.core.errors import FieldProblem, InvalidInputError
from orbita.model.durations import Duration, Percentage
from orbita.model.graphs import cycles_in
from orbita.model.schema import JsonSchema, as_forms, closed_object, properties_of, with_forms
from orbita.model.segments import Condition, MessageType
from orbita.model.triggers import EventPattern, Names, TimeOfDay, Trigger, Where

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

# --- steps ---------------------------------------------------------------------------------


class _Step(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str | None = Field(default=None, min_length=1)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        return with_forms(core_schema, handler, _step_forms)


class WaitStep(_Step):
    """Hold the customer: for a duration; until a time of day in their zone (optionally on
    some weekdays only); or until a date in a trait, moved `before`/`after` it, at `at`.

    A date already past (or a missing trait) does not wait; a time of day waits for its
    next occurrence strictly after now.
    """

    type: Literal["wait"] = "wait"
    duration: Duration | None = None
    until: TimeOfDay | None = None
    days: tuple[Weekday, ...] = ()
    until_trait: str | None = None
    before: Duration | None = None
    after: Duration | None = None
    at: TimeOfDay | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> WaitStep:
        kinds = [k for k in ("duration", "until", "until_trait") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                'a wait needs one of: a duration (wait: 1h), until: "09:00", '
                "or until_trait: a date trait"
            )
        if self.duration is not None and self.duration <= timedelta(0):
            raise ValueError("a wait needs a positive duration, such as 1h")
        if self.days and self.until is None:
            raise ValueError('days go with until: {until: "09:00", days: [mon, fri]}')
        if self.until_trait is None and (self.before or self.after or self.at):
            raise ValueError("before, after and at go with until_trait")
        if self.before is not None and self.after is not None:
            raise ValueError("use before or after, not both")
        return self

    def describe(self) -> str:
        if self.duration is not None:
            from orbita.model.durations import format_duration

            return f"wait {format_duration(self.duration)}"
        if self.until is not None:
            return f"wait until {self.until:%H:%M}"
        return f"wait until {self.until_trait}"


class SendStep(_Step):
    """Send a template (on its own channel unless `channel` says otherwise)."""

    type: Literal["send"] = "send"
    template: str = Field(min_length=1)
    channel: str | None = None
    variant: str | None = None

    def describe(self) -> str:
        return f"send {self.template}"


Target: TypeAlias = "str | tuple[Step, ...] | None"


class WaitForStep(_Step, EventPattern):
    """Wait for an event (filters, correlation with the trigger event) up to `timeout`;
    `on_event` / `on_timeout` say where each outcome goes."""

    type: Literal["wait_for"] = "wait_for"
    timeout: Duration
    on_event: Target = None
    on_timeout: Target = None

    def describe(self) -> str:
        return f"wait for {self.event}"

    def pattern(self) -> EventPattern:
        return EventPattern(
            event=self.event,
            message_type=self.message_type,
            where=self.where,
            correlate=self.correlate,
        )


class BranchArm(BaseModel):
    """`when` a condition (segment membership, trait, event aggregate) holds, go `then`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    when: Condition
    then: Target = None


class BranchStep(_Step):
    """The first arm whose condition holds; `else` when none does."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    type: Literal["branch"] = "branch"
    arms: tuple[BranchArm, ...] = Field(min_length=1)
    otherwise: Target = Field(default=None, alias="else")

    def describe(self) -> str:
        return "branch"


class SplitArm(BaseModel):
    """One path (or A/B/n variant) of a split and the share of customers it gets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    percent: Percentage
    then: Target = None


class SplitStep(_Step):
    """A random but sticky split: the same customer always takes the same arm of a node."""

    type: Literal["split"] = "split"
    arms: tuple[SplitArm, ...] = Field(min_length=2)

    @model_validator(mode="after")
    def _adds_up(self) -> SplitStep:
        total = sum(arm.percent for arm in self.arms)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"split percentages add up to {total * 100:g}%, not 100%")
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"split arm names repeat: {', '.join(names)}")
        return self

    def describe(self) -> str:
        return "split " + "/".join(arm.name for arm in self.arms)


class UpdateStep(_Step):
    """Set a trait to a value, or add a number to it."""

    type: Literal["update"] = "update"
    trait: str = Field(min_length=1)
    set: str | bool | int | float | None = None
    increment: float | None = None

    @model_validator(mode="after")
    def _one_change(self) -> UpdateStep:
        # `set: null` clears a trait; the long form writes the unused one as null.
        has_increment = self.increment is not None
        has_set = "set" in self.model_fields_set and not (has_increment and self.set is None)
        if has_set == has_increment:
            raise ValueError("an update needs one of set: value or increment: number")
        return self

    def describe(self) -> str:
        return f"update {self.trait}"


class WebhookStep(_Step):
    """Call a URL (the delivery layer signs, sends and retries it)."""

    type: Literal["webhook"] = "webhook"
    url: str = Field(pattern=r"^https?://")
    method: Literal["POST", "PUT", "PATCH", "GET"] = "POST"
    body: dict[str, Any] | None = None

    def describe(self) -> str:
        return f"webhook {self.url}"


class GotoStep(_Step):
    """Jump to the step with this id."""

    type: Literal["goto"] = "goto"
    target: str = Field(min_length=1)

    def describe(self) -> str:
        return f"goto {self.target}"


class ExitStep(_Step):
    """End the run here."""

    type: Literal["exit"] = "exit"
    reason: str = "exit step"

    def describe(self) -> str:
        return "exit"


# The short key of each step and the long-form field its plain value fills.
_STEP_KEYS: dict[str, str | None] = {
    "wait": "duration",
    "wait_for": None,
    "send": "template",
    "branch": "arms",
    "split": "arms",
    "update": None,
    "webhook": "url",
    "goto": "target",
    "exit": "reason",
}
STEP_HINT = "a step starts with one of " + ", ".join(_STEP_KEYS)


def _step_forms(schema: JsonSchema) -> None:
    """A step's short form as _tag_step reads it: `{send: x}` (the value fills one field),
    `{send: {template: x}}` (a mapping of settings), settings also beside the key."""
    key = schema["properties"]["type"]["const"]
    field = _STEP_KEYS[key]
    settings = properties_of(schema, without=("type",))
    values: list[JsonSchema] = []
    if field is not None:
        values.append(_plain(settings[field]))
    if key not in ("branch", "split"):
        values.append(closed_object(settings))
    if key == "exit":
        values.append({"const": True})
    rules = []
    for name in schema.get("required", []):
        # A required setting is beside the key, in its mapping, or the value it fills.
        inside = {"properties": {key: {"type": "object", "required": [name]}}}
        filled = {"properties": {key: {"not": {"type": "object"}}}}
        rules.append(
            {"anyOf": [{"required": [name]}, inside, *([filled] if name == field else [])]}
        )
    beside = {name: value for name, value in settings.items() if name != field}
    short = closed_object({key: {"anyOf": values}, **beside}, required=[key])
    if rules:
        short["allOf"] = rules
    as_forms(schema, short)


def _plain(schema: JsonSchema) -> JsonSchema:
    """A field's schema as a step's plain value: no default, and not null."""
    options = [s for s in schema.get("anyOf", [schema]) if s != {"type": "null"}]
    plain = options[0] if len(options) == 1 else {"anyOf": options}
    return {key: value for key, value in plain.items() if key != "default"}


def _tag_step(data: Any) -> Any:
    """Short form -> long form: `{send: x, id: a}` -> `{type: send, template: x, id: a}`."""
    if data == "exit":
        return {"type": "exit"}
    if not isinstance(data, Mapping):
        raise ValueError(f"expected a step, got {data!r}: {STEP_HINT}")
    if "type" in data:
        return data
    keys = [key for key in _STEP_KEYS if key in data]
    if not keys:
        raise ValueError(f"not a step (got {', '.join(map(str, data)) or 'nothing'}): {STEP_HINT}")
    if len(keys) > 1:
        raise ValueError(f"one step per list item, got {' and '.join(keys)}")
    key = keys[0]
    rest = {k: v for k, v in data.items() if k != key}
    value = data[key]
    if key == "exit" and value is True:
        return {"type": "exit", **rest}
    if isinstance(value, Mapping) and key not in ("branch", "split"):
        return {"type": key, **value, **rest}
    field = _STEP_KEYS[key]
    if field is None:
        raise ValueError(f"{key} needs a mapping of its settings, such as {key}: {{…}}")
    return {"type": key, field: value, **rest}


_Steps: TypeAlias = (
    WaitStep
    | WaitForStep
    | SendStep
    | BranchStep
    | SplitStep
    | UpdateStep
    | WebhookStep
    | GotoStep
    | ExitStep
)
Step = Annotated[
    _Steps,
    Discriminator("type"),
    BeforeValidator(_tag_step, json_schema_input_type=Literal["exit"] | _Steps),
]

for _model in (WaitForStep, BranchArm, BranchStep, SplitArm, SplitStep):
    _model.model_rebuild()

WAITING_STEPS = (WaitStep, WaitForStep)

# --- the journey ---------------------------------------------------------------------------

EntryMode = Literal["every_time", "once", "cooldown"]


class Entry(BaseModel):
    """Who may enter again: `every_time` (default), `once` ever, or after a `cooldown` since
    the last entry. At most one active run per customer, or per `key` (a trigger property
    such as cart_id: one run per cart)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: EntryMode = "every_time"
    cooldown: Duration | None = None
    key: str | None = Field(default=None, min_length=1)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        def describe(schema: JsonSchema) -> None:
            schema["properties"] |= {"once": {"const": True}, "every_time": {"const": True}}
            as_forms(schema, {"enum": ["once", "every_time"]})

        return with_forms(core_schema, handler, describe)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"mode": data}
        if not isinstance(data, Mapping) or "mode" in data:
            return data
        result = dict(data)
        for mode in ("once", "every_time"):
            if mode in result:
                if result.pop(mode) is not True:
                    raise ValueError(f"write {mode}: true, or entry: {mode}")
                result["mode"] = mode
        if "cooldown" in result and "mode" not in result:
            result["mode"] = "cooldown"
        return result

    @model_validator(mode="after")
    def _cooldown_needed(self) -> Entry:
        if (self.mode == "cooldown") != (self.cooldown is not None):
            raise ValueError("entry: {cooldown: 7d} sets a cooldown; once and every_time take none")
        return self


AttributionModel = Literal["last_touch", "first_touch", "linear"]


class Goal(EventPattern):
    """The event that counts as a conversion when it comes `within` the time after entry;
    `exit: true` ends the run when it does. A goal event `within` the time after a message
    of the journey is attributed to it: to the last one before it (`last_touch`, the
    default), the first (`first_touch`), or shared equally among them (`linear`)."""

    within: Duration
    exit: bool = False
    attribution: AttributionModel = "last_touch"


class Journey(BaseModel):
    """One automated scenario of the strategy."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    trigger: Trigger
    entry: Entry = Entry()
    exit_on: tuple[EventPattern, ...] = ()
    goal: Goal | None = None
    holdout: Percentage = 0.0
    steps: tuple[Step, ...] = ()
    # When a new version is applied, customers in the journey finish on the version they
    # started (`finish`), or move to the new one where their step still exists (`migrate`).
    on_change: Literal["finish", "migrate"] = "finish"

    @model_validator(mode="after")
    def _graph_is_sound(self) -> Journey:
        problems = graph_problems(self)
        if problems:
            raise ValueError("; ".join(f"{p.field}: {p.message}" for p in problems))
        return self

    def correlated_properties(self) -> tuple[str, ...]:
        """Every trigger property some pattern correlates on (kept in the run's context)."""
        names: list[str] = []
        patterns: list[EventPattern] = [*self.exit_on]
        if self.goal is not None:
            patterns.append(self.goal)
        patterns.extend(s.pattern() for s in iter_steps(self.steps) if isinstance(s, WaitForStep))
        for pattern in patterns:
            names.extend(name for name in pattern.correlate if name not in names)
        if self.entry.key is not None and self.entry.key not in names:
            names.append(self.entry.key)
        return tuple(names)


def iter_steps(steps: Sequence[Step]) -> Iterator[Step]:
    """Every step, nested ones included, depth first."""
    for step in steps:
        yield step
        for target in _targets(step).values():
            if isinstance(target, tuple):
                yield from iter_steps(target)


def _targets(step: Step) -> dict[str, Target]:
    """A step's outcomes by edge label (`when.0`, `else`, an arm name, `event`, `timeout`)."""
    if isinstance(step, BranchStep):
        arms: dict[str, Target] = {f"when.{i}": arm.then for i, arm in enumerate(step.arms)}
        return {**arms, "else": step.otherwise}
    if isinstance(step, SplitStep):
        return {arm.name: arm.then for arm in step.arms}
    if isinstance(step, WaitForStep):
        return {"event": step.on_event, "timeout": step.on_timeout}
    return {}


# --- the graph -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Node:
    """A step in the graph: `next` is where it goes on (None: the journey ends); a branch,
    split or wait_for goes along one of `edges` instead; a goto along `edges["goto"]`."""

    id: str
    path: str
    step: Step
    next: str | None
    edges: Mapping[str, str | None]

    def label(self) -> str:
        shown = self.path if self.id == self.path else f"{self.path} ({self.id})"
        return f"{shown}: {self.step.describe()}"


@dataclass(frozen=True, slots=True)
class JourneyGraph:
    start: str | None
    nodes: Mapping[str, Node]


def _path_part(label: str) -> str:
    """An edge label as it reads in a node path (`when.0` belongs to `branch.0.then`)."""
    if label.startswith("when."):
        return f"branch.{label.split('.')[1]}.then"
    if label in ("event", "timeout"):
        return f"on_{label}"
    return label


def journey_graph(journey: Journey) -> tuple[JourneyGraph, list[FieldProblem]]:
    """The nodes of a journey's steps and the problems of its shape (none: it can run)."""
    nodes: dict[str, Node] = {}
    problems: list[FieldProblem] = []
    # Ids first: a goto may point forward or into another branch.
    ids: dict[int, str] = {}
    seen: dict[str, str] = {}

    def name(steps: Sequence[Step], prefix: str) -> None:
        for index, step in enumerate(steps):
            path = f"{prefix}.{index}"
            node_id = step.id or path
            if node_id in seen:
                problems.append(
                    FieldProblem(field=path, message=f"step id {node_id!r} is used twice")
                )
            seen[node_id] = path
            ids[id(step)] = node_id
            if isinstance(step, SplitStep):
                for arm_index, arm in enumerate(step.arms):
                    if isinstance(arm.then, tuple):
                        name(arm.then, f"{path}.split.{arm_index}.then")
            else:
                for label, target in _targets(step).items():
                    if isinstance(target, tuple):
                        name(target, f"{path}.{_path_part(label)}")

    name(journey.steps, "steps")
    known = ", ".join(sorted(s.id for s in iter_steps(journey.steps) if s.id)) or "none"

    def resolve(target: Target, *, path: str, field: str, then: str | None) -> str | None:
        if target is None:
            return then
        if isinstance(target, str):
            if target not in seen:
                problems.append(
                    FieldProblem(
                        field=f"{path}.{field}",
                        message=f"no step has the id {target!r} (step ids: {known})",
                    )
                )
                return None
            return target
        return build(target, f"{path}.{field}", then)

    def build(steps: Sequence[Step], prefix: str, then: str | None) -> str | None:
        chain = [ids[id(step)] for step in steps]
        for index, step in enumerate(steps):
            path = f"{prefix}.{index}"
            following = chain[index + 1] if index + 1 < len(chain) else then
            edges: dict[str, str | None] = {}
            if isinstance(step, GotoStep):
                edges["goto"] = resolve(step.target, path=path, field="goto", then=None)
            elif isinstance(step, SplitStep):
                for arm_index, arm in enumerate(step.arms):
                    field = f"split.{arm_index}.then"
                    edges[arm.name] = resolve(arm.then, path=path, field=field, then=following)
            else:
                for label, target in _targets(step).items():
                    field = _path_part(label)
                    edges[label] = resolve(target, path=path, field=field, then=following)
            node_id = chain[index]
            nodes[node_id] = Node(id=node_id, path=path, step=step, next=following, edges=edges)
        return chain[0] if chain else then

    start = build(journey.steps, "steps", None)
    graph = JourneyGraph(start=start, nodes=nodes)
    if not problems:
        problems.extend(_shape_problems(graph))
    return graph, problems


def successors(node: Node) -> list[str]:
    """Where a node may go next (None, the end, left out)."""
    step = node.step
    if isinstance(step, ExitStep):
        return []
    if isinstance(step, GotoStep | BranchStep | SplitStep | WaitForStep):
        return [target for target in node.edges.values() if target is not None]
    return [node.next] if node.next is not None else []


def _shape_problems(graph: JourneyGraph) -> list[FieldProblem]:
    problems: list[FieldProblem] = []
    reached: set[str] = set()
    todo = [graph.start] if graph.start is not None else []
    while todo:
        current = todo.pop()
        if current in reached:
            continue
        reached.add(current)
        todo.extend(successors(graph.nodes[current]))
    for node in graph.nodes.values():
        if node.id not in reached:
            problems.append(
                FieldProblem(
                    field=node.path,
                    message=f"{node.step.describe()} is never reached: the step before it "
                    "ends or jumps elsewhere, and no goto or on_timeout points to it",
                )
            )
    # A loop that never waits would run forever inside one advance.
    instant = {
        node.id: [t for t in successors(node) if not isinstance(graph.nodes[t].step, WAITING_STEPS)]
        for node in graph.nodes.values()
        if not isinstance(node.step, WAITING_STEPS)
    }
    for cycle in cycles_in(instant):
        labels = " -> ".join(graph.nodes[n].label() for n in cycle)
        problems.append(
            FieldProblem(
                field=graph.nodes[cycle[0]].path,
                message=f"these steps loop without a wait, so they would repeat forever: "
                f"{labels}; put a wait or wait_for in the loop",
            )
        )
    return problems


def graph_problems(journey: Journey) -> list[FieldProblem]:
    return journey_graph(journey)[1]


def _location(loc: tuple[int | str, ...]) -> str:
    """Pydantic's location in the YAML's words: union tags and validator names dropped."""
    parts: list[str] = []
    tag = ""
    for index, item in enumerate(loc):
        # Validator names and the members of the `Target` union (`str`, `tuple[…]`).
        if isinstance(item, str) and (item.startswith("function-") or "[" in item):
            continue
        if item == "str" and index + 1 == len(loc):
            continue
        previous = loc[index - 1] if index else None
        # After a list index (a step), pydantic names the union member: drop it.
        if isinstance(previous, int) and isinstance(item, str) and item in _TAGS:
            tag = item
            continue
        if item == "arms" and tag in ("branch", "split"):
            item = tag  # the short form writes the arms under the step's own key
        if previous == "trigger" and item in _TRIGGER_TAGS:
            continue
        parts.append(f"[{item}]" if isinstance(item, int) else (f".{item}" if parts else item))
    return "".join(parts)


def _inside(field: str, outer: str) -> bool:
    """`steps[1].when` is inside `steps[1]`; `steps[10]` is not."""
    return len(field) > len(outer) and field.startswith(outer) and field[len(outer)] in ".["


_TAGS = frozenset(_STEP_KEYS)
_TRIGGER_TAGS = frozenset({"event", "segment", "schedule", "date", "api"})


def parse_journey(data: object, *, name: str = "") -> Journey:
    """A journey from its YAML / JSON data, or InvalidInputError naming what is wrong where."""
    try:
        return Journey.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_url=False):
            message = str(item["msg"]).removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown key"
            elif item["type"] == "missing":
                message = f"{item['loc'][-1]} is required"
            elif item["type"] == "union_tag_invalid":
                message = f"unknown step type: {STEP_HINT}"
            location = _location(tuple(item["loc"]))
            field = ".".join(part for part in (name, location) if part)
            problems.append(FieldProblem(field=field, message=message))
        # A mistake inside a list of steps also fails the union's other member (a step
        # id) and the list's length: keep only the most precise problem of each place.
        problems = [
            p for p in problems if not any(_inside(other.field, p.field) for other in problems)
        ]
        label = f"journey {name}" if name else "journey"
        raise InvalidInputError(problems, summary=f"invalid {label}") from None


__all__ = [
    "WEEKDAYS",
    "BranchArm",
    "BranchStep",
    "Entry",
    "EventPattern",
    "ExitStep",
    "Goal",
    "GotoStep",
    "Journey",
    "JourneyGraph",
    "MessageType",
    "Names",
    "Node",
    "SendStep",
    "SplitArm",
    "SplitStep",
    "Step",
    "UpdateStep",
    "WaitForStep",
    "WaitStep",
    "WebhookStep",
    "Where",
    "journey_graph",
    "parse_journey",
    "time",
]
