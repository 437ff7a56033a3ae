"""Message templates: Liquid text per part, sent on a named channel.

    templates:
      cart_reminder:
        channel: email
        subject: "{{ customer.first_name | default: 'Hi' }}, your cart is waiting"
        preheader: "Still thinking it over?"
        mjml: templates/cart_reminder.mjml      # a file beside the strategy, or MJML in place
        variants:
          B: {subject: "Your cart misses you"}  # per A/B arm (the split arm's name)

A body (`mjml`, `html`, `text`) is either written in place or, when it is one word ending
in a template file extension, a path relative to the strategy file. An email needs a
subject and a body; SMS and Telegram need `text`; push needs `subject` (the title) and `text`.
`topic` is the subscription topic checked against consent at send time; `transactional`
messages are never capped.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

FILE_EXTENSIONS = (".mjml", ".html", ".htm", ".txt", ".liquid", ".md")
_FILE = re.compile(r"^[^\s<>{}]+$")


def is_file_reference(body: str) -> bool:
    """`templates/cart.mjml` names a file; anything with a space, a tag or a newline is text."""
    return bool(_FILE.match(body)) and body.lower().endswith(FILE_EXTENSIONS)


class TemplateParts(BaseModel):
    """The parts a variant may replace."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    subject: str | None = None
    preheader: str | None = None
    sender: str | None = Field(default=None, alias="from")
    reply_to: str | None = None
    mjml: str | None = None
    html: str | None = None
    text: str | None = None
    url: str | None = None  # push: where a tap leads


class Template(TemplateParts):
    """One message of the strategy; `variants` replace parts per A/B arm."""

    channel: str = Field(min_length=1)
    topic: str = Field(default="marketing", min_length=1)
    # Names send rules block it by (`block: [offer]`), beside its name and topic.
    tags: tuple[str, ...] = ()
    variants: dict[str, TemplateParts] = Field(default_factory=dict)

    def parts(self, variant: str | None) -> TemplateParts:
        """This template's parts for an arm (the base for an arm it does not name)."""
        base = TemplateParts.model_validate(
            self.model_dump(by_alias=True, exclude={"channel", "topic", "tags", "variants"})
        )
        override = self.variants.get(variant) if variant is not None else None
        if override is None:
            return base
        changed = override.model_dump(by_alias=True, exclude_none=True)
        if {"mjml", "html"} & changed.keys():
            # A variant with its own body replaces the whole body, not one of its forms.
            changed = {"mjml": None, "html": None, **changed}
        return base.model_copy(update={_field(k): v for k, v in changed.items()})

    @property
    def transactional(self) -> bool:
        return self.topic == "transactional"


def _field(key: str) -> str:
    return "sender" if key == "from" else key


def body_problems(template: Template, *, channel_type: str) -> list[tuple[str, str]]:
    """(field, message) for parts the channel needs and the template lacks."""
    problems: list[tuple[str, str]] = []
    for arm, parts in [(None, template.parts(None))] + [
        (name, template.parts(name)) for name in template.variants
    ]:
        where = f"variants.{arm}." if arm is not None else ""
        if channel_type == "smtp":
            if not parts.subject:
                problems.append((f"{where}subject", "an email needs a subject"))
            if not (parts.mjml or parts.html or parts.text):
                problems.append((f"{where}mjml", "an email needs a body: mjml, html or text"))
            if parts.mjml and parts.html:
                problems.append((f"{where}html", "give mjml or html, not both"))
        elif channel_type in ("sms", "telegram", "push") and not parts.text:
            problems.append((f"{where}text", f"a {channel_type} message needs text"))
        if channel_type == "push" and not parts.subject:
            problems.append((f"{where}subject", "a push message needs a subject (its title)"))
        if arm is None and problems:
            break  # the arms inherit the base's gaps: report them once
    return problems
