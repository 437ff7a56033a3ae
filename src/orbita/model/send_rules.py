"""Send rules: conditions the sender checks for every message right before sending it, so
that what changed after a journey queued a message still counts (a bank's credit score
that dropped, a refusal since).

    send_rules:
      - name: low credit score
        when: {trait: credit_score, lt: 600}        # the segment condition language
        block: [offer]                              # template names, tags or topics
      - name: recent refusal
        when: {event: "Application Refused", within: 90d}
        block: [offer]

A message whose template is named in `block` (by its name, one of its `tags` or its
`topic`) is not sent to a customer who matches `when`; the decision is recorded with the
rule's name as its reason. Conditions on traits, events and segments (as definitions, over
the customer's events) are checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from orbita.model.segments import Condition, Segment, SegmentRef, walk
from orbita.model.templates import Template


class SendRule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="", max_length=200)
    when: Condition
    block: tuple[str, ...] = Field(min_length=1)

    def blocks(self, template_name: str, template: Template) -> bool:
        names = {template_name, template.topic, *template.tags}
        return not names.isdisjoint(self.block)

    def describe(self, index: int) -> str:
        return self.name or f"send_rules[{index}]"


def send_rule_problems(
    rules: Iterable[SendRule],
    *,
    segments: Mapping[str, Segment],
    templates: Mapping[str, Template],
) -> list[tuple[tuple[str | int, ...], str]]:
    """(path, message) for segments a rule names that do not exist, and `block` entries
    that name no template, tag or topic of the strategy."""
    known = set(templates)
    for template in templates.values():
        known |= {template.topic, *template.tags}
    problems: list[tuple[tuple[str | int, ...], str]] = []
    for index, rule in enumerate(rules):
        for node in walk(rule.when):
            if isinstance(node, SegmentRef) and node.segment not in segments:
                problems.append(
                    (("send_rules", index, "when"), f"unknown segment {node.segment!r}")
                )
        for name in rule.block:
            if templates and name not in known:
                problems.append(
                    (
                        ("send_rules", index, "block"),
                        f"{name!r} is no template, template tag or topic of the strategy",
                    )
                )
    return problems
