"""Personalisation: the strategy's templates compiled once, rendered per customer.

Liquid (python-liquid 2) in a sandbox: no file access (no loader, so `include` and `render`
find nothing), loops and output bounded so a template cannot hang a worker, HTML
autoescape of every value in HTML parts, and strict undefined variables — a name the
context lacks is an error naming the template, the part, the line and the variable, unless
the author wrote `| default: …`.

An MJML body is compiled to HTML by mrml once per template, with its Liquid kept as text
(mrml leaves `{{ … }}` and `{% … %}` alone); the plain-text alternative is derived from that
HTML once, Liquid included, and rendered without escaping. Per message only Liquid runs.

Filters beyond Liquid's own, in the customer's locale, currency and time zone:
`money` (`{{ 49.9 | money }}`, `{{ p | money: 'EUR' }}`), `localdate`
(`{{ event.at | localdate: 'long' }}`), `number`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

import mrml
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal
from liquid import BoundTemplate, Environment, RenderContext, StrictDefaultUndefined
from liquid.exceptions import LiquidError, OutputStreamLimitError
from liquid.filter import with_context

from orbita.core.errors import FieldProblem, InvalidInputError, TerminalError
from orbita.model.strategy import Strategy
from orbita.model.templates import Template, TemplateParts, is_file_reference

DEFAULT_LOCALE = "en_US"
DEFAULT_CURRENCY = "USD"


class TemplateRenderError(TerminalError):
    """A template failed for one customer (an undefined variable, a limit): no retry helps."""

    def __init__(self, *, template: str, part: str, line: int | None, message: str) -> None:
        self.template = template
        self.part = part
        self.line = line
        self.detail = message
        where = f", line {line}" if line is not None else ""
        super().__init__(f"template {template!r}, {part}{where}: {message}")


# --- the sandbox ---------------------------------------------------------------------------


OUTPUT_LIMIT = 2_000_000  # characters one part may render to


class _LimitedOutput(StringIO):
    """Liquid's own output limit encodes every write to count bytes, a sixth of a render's
    time here; counting characters bounds the output as well."""

    def __init__(self) -> None:
        super().__init__()
        self.size = 0

    def write(self, text: str) -> int:
        self.size += len(text)
        if self.size > OUTPUT_LIMIT:
            raise OutputStreamLimitError("output stream limit reached", token=None)
        return super().write(text)


class _Template(BoundTemplate):
    def _get_buffer(self) -> StringIO:
        return _LimitedOutput()


class _Sandbox(Environment):
    # Bounds on what one render may do: a loop of a million items or a 100 MB email is a
    # mistake in the template or the data, and must not stall the sender. (The output
    # limit is `_LimitedOutput`; assigned values are bounded by the namespace limit.)
    loop_iteration_limit: ClassVar[int | None] = 10_000
    local_namespace_limit: ClassVar[int | None] = 200_000
    context_depth_limit: ClassVar[int] = 10
    template_class = _Template


def _environment(*, autoescape: bool) -> Environment:
    env = _Sandbox(autoescape=autoescape, undefined=StrictDefaultUndefined)
    env.filters["money"] = _money
    env.filters["localdate"] = _localdate
    env.filters["number"] = _number
    # Reading other templates is the only file access Liquid has; there is none to read.
    for tag in ("include", "render"):
        env.tags.pop(tag, None)
    return env


# --- locale filters ------------------------------------------------------------------------


def _setting(context: RenderContext, name: str, default: str) -> str:
    settings = context.globals.get("_settings")
    value = settings.get(name) if isinstance(settings, dict) else None
    return value if isinstance(value, str) and value else default


@functools.lru_cache(maxsize=256)
def _locale(name: str) -> Locale:
    try:
        return Locale.parse(name.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return Locale.parse(DEFAULT_LOCALE)


def _decimal(value: object) -> Decimal:
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


@with_context
def _money(value: object, currency: str | None = None, *, context: RenderContext) -> str:
    code = currency or _setting(context, "currency", DEFAULT_CURRENCY)
    return _format_money(_decimal(value), code.upper(), _setting(context, "locale", DEFAULT_LOCALE))


# Prices repeat across a campaign's messages: Babel's formatting is the costly part.
@functools.lru_cache(maxsize=8192)
def _format_money(amount: Decimal, code: str, locale: str) -> str:
    return str(format_currency(amount, code, locale=_locale(locale)))


@with_context
def _number(value: object, *, context: RenderContext) -> str:
    return _format_number(_decimal(value), _setting(context, "locale", DEFAULT_LOCALE))


@functools.lru_cache(maxsize=8192)
def _format_number(amount: Decimal, locale: str) -> str:
    return str(format_decimal(amount, locale=_locale(locale)))


@with_context
def _localdate(value: object, style: str = "medium", *, context: RenderContext) -> str:
    locale = _locale(_setting(context, "locale", DEFAULT_LOCALE))
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected a date, got {value!r}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        zone = _zone(_setting(context, "timezone", "UTC"))
        return str(format_datetime(value, style, tzinfo=zone, locale=locale))
    if isinstance(value, date):
        return str(format_date(value, style, locale=locale))
    raise ValueError(f"expected a date, got {value!r}")


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


HTML_ENV = _environment(autoescape=True)
TEXT_ENV = _environment(autoescape=False)


# --- HTML -> text --------------------------------------------------------------------------

_BLOCKS = frozenset(
    {
        *("p", "div", "tr", "table", "li", "ul", "ol", "hr", "center", "blockquote"),
        *("h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "header", "footer"),
    }
)
_SKIPPED = frozenset({"style", "script", "head", "title"})


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.links: list[tuple[str, int]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skip += 1
        elif tag == "br" or tag in _BLOCKS:
            self.out.append("\n")
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self.links.append((href, len(self.out)))
        elif tag == "img":
            alt = (dict(attrs).get("alt") or "").strip()
            if alt:
                self.out.append(alt)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCKS:
            self.out.append("\n")
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            label = " ".join("".join(self.out[start:]).split())
            if href and not href.startswith(("#", "mailto:")) and href != label:
                self.out.append(f" ({href})" if label else href)

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(data)


_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANKS = re.compile(r"\n\s*\n(\s*\n)+")


def html_to_text(html: str) -> str:
    """A readable plain-text version of an email's HTML: blocks on their own lines, links
    as `label (url)`, styles, heads and Outlook conditionals dropped. Liquid tags pass
    through as text, so this runs once per template, not per message."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(parser.out).split("\n"))
    text = "\n".join(lines)
    return _BLANKS.sub("\n\n", text).strip() + "\n"


_TAG_START = re.compile(r"<([a-zA-Z][a-zA-Z0-9-]*) ")


def short_lines(html: str) -> str:
    """MJML's HTML comes in lines of thousands of characters, which SMTP cannot carry as
    they are (998 at most). A line break in place of the space after each tag's name
    changes nothing a browser shows (unlike one between tags, which would put a space
    between MJML's inline-block columns) and keeps lines short, so the message goes 8-bit
    instead of quoted-printable."""
    return _TAG_START.sub(lambda m: f"<{m.group(1)}\n", html)


# --- compiling -----------------------------------------------------------------------------

_PREHEADER = (
    '<div style="display:none;font-size:1px;color:#ffffff;line-height:1px;max-height:0px;'
    'max-width:0px;opacity:0;overflow:hidden;">{{ _preheader }}</div>'
)
_BODY = re.compile(r"<body[^>]*>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class CompiledParts:
    """One variant of a template with each part parsed (None: the template has no such part)."""

    subject: BoundTemplate | None
    preheader: BoundTemplate | None
    sender: BoundTemplate | None
    reply_to: BoundTemplate | None
    html: BoundTemplate | None
    text: BoundTemplate | None
    url: BoundTemplate | None
    # The source text of each part, for error lines and `orbita templates show`.
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    name: str
    channel: str
    topic: str
    base: CompiledParts
    variants: Mapping[str, CompiledParts]

    def parts(self, variant: str | None) -> CompiledParts:
        if variant is None:
            return self.base
        return self.variants.get(variant, self.base)

    @property
    def transactional(self) -> bool:
        return self.topic == "transactional"


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """What one customer gets from one template (parts the template lacks are None)."""

    template: str
    variant: str | None
    subject: str | None
    preheader: str | None
    sender: str | None
    reply_to: str | None
    html: str | None
    text: str | None
    url: str | None


@dataclass(frozen=True, slots=True)
class MessageContext:
    """What a template sees: `customer`, `event`, `journey`, `message`, and the customer's
    locale, currency and time zone for the filters."""

    customer: Mapping[str, Any]
    event: Mapping[str, Any] = field(default_factory=dict)
    journey: Mapping[str, Any] = field(default_factory=dict)
    message: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    locale: str = DEFAULT_LOCALE
    currency: str = DEFAULT_CURRENCY
    timezone: str = "UTC"

    def variables(self) -> dict[str, Any]:
        return {
            **self.extra,
            "customer": self.customer,
            "event": self.event,
            "journey": self.journey,
            "message": self.message,
            "_settings": {
                "locale": self.locale,
                "currency": self.currency,
                "timezone": self.timezone,
            },
        }


def compile_templates(*, strategy: Strategy, base_dir: Path) -> dict[str, CompiledTemplate]:
    """Every template of the strategy, files read and parsed; InvalidInputError listing each
    template part that cannot be read, compiled or parsed, with its line."""
    compiled: dict[str, CompiledTemplate] = {}
    problems: list[FieldProblem] = []
    for name, template in strategy.templates.items():
        try:
            compiled[name] = compile_template(name=name, template=template, base_dir=base_dir)
        except InvalidInputError as error:
            problems.extend(error.problems)
    if problems:
        raise InvalidInputError(problems, summary="invalid templates")
    return compiled


def compile_template(*, name: str, template: Template, base_dir: Path) -> CompiledTemplate:
    problems: list[FieldProblem] = []
    files: dict[str, str] = {}

    def body(where: str, value: str | None) -> str | None:
        if value is None or not is_file_reference(value):
            return value
        if value not in files:
            path = (base_dir / value).resolve()
            try:
                files[value] = path.read_text(encoding="utf-8")
            except OSError as error:
                problems.append(
                    FieldProblem(
                        field=f"templates.{name}.{where}",
                        message=f"cannot read {value} ({error.strerror or error}): paths are "
                        f"relative to the strategy file's folder {base_dir}",
                    )
                )
                return None
        return files[value]

    def parse(where: str, source: str | None, env: Environment) -> BoundTemplate | None:
        if source is None:
            return None
        try:
            return env.from_string(source, name=f"{name}.{where}")
        except LiquidError as error:
            problems.append(
                FieldProblem(
                    field=f"templates.{name}.{where}",
                    message=_liquid_message(error),
                    line=_liquid_line(error, source),
                )
            )
            return None

    def parts(prefix: str, given: TemplateParts) -> CompiledParts:
        html: str | None = None
        mjml_source = body(f"{prefix}mjml", given.mjml)
        # Liquid mistakes are reported on the author's MJML lines, not the compiled HTML's.
        if mjml_source is not None and parse(f"{prefix}mjml", mjml_source, HTML_ENV) is None:
            mjml_source = None
        if mjml_source is not None:
            try:
                html = mrml.to_html(mjml_source).content
            except Exception as error:
                problems.append(
                    FieldProblem(field=f"templates.{name}.{prefix}mjml", message=f"MJML: {error}")
                )
        else:
            html = body(f"{prefix}html", given.html)
        text = body(f"{prefix}text", given.text)
        if html is not None:
            html = short_lines(html)
        if html is not None and given.preheader:
            html = _BODY.sub(lambda m: m.group(0) + _PREHEADER, html, count=1)
        if html is not None and text is None:
            text = html_to_text(html.replace(_PREHEADER, ""))
        sources = {
            key: value
            for key, value in {
                "subject": given.subject,
                "preheader": given.preheader,
                "from": given.sender,
                "reply_to": given.reply_to,
                "html": html,
                "mjml": mjml_source,
                "text": text,
                "url": given.url,
            }.items()
            if value is not None
        }
        return CompiledParts(
            subject=parse(f"{prefix}subject", given.subject, TEXT_ENV),
            preheader=parse(f"{prefix}preheader", given.preheader, TEXT_ENV),
            sender=parse(f"{prefix}from", given.sender, TEXT_ENV),
            reply_to=parse(f"{prefix}reply_to", given.reply_to, TEXT_ENV),
            html=parse(f"{prefix}{'mjml' if given.mjml else 'html'}", html, HTML_ENV),
            text=parse(f"{prefix}text", text, TEXT_ENV),
            url=parse(f"{prefix}url", given.url, TEXT_ENV),
            sources=sources,
        )

    base = parts("", template.parts(None))
    variants = {arm: parts(f"variants.{arm}.", template.parts(arm)) for arm in template.variants}
    if problems:
        raise InvalidInputError(problems, summary=f"template {name!r}")
    return CompiledTemplate(
        name=name, channel=template.channel, topic=template.topic, base=base, variants=variants
    )


# --- rendering -----------------------------------------------------------------------------


def render_message(
    template: CompiledTemplate, *, variant: str | None, context: MessageContext
) -> RenderedMessage:
    """Render every part of one variant for one customer; TemplateRenderError (terminal)
    naming the part, line and variable when the template cannot be rendered."""
    parts = template.parts(variant)
    variables = context.variables()

    def run(part: str, bound: BoundTemplate | None, extra: Mapping[str, Any] | None = None) -> str:
        assert bound is not None
        try:
            return bound.render(**variables, **(extra or {}))
        except LiquidError as error:
            shown, line = _place(part, error, parts.sources)
            raise TemplateRenderError(
                template=template.name, part=shown, line=line, message=_liquid_message(error)
            ) from None
        except (ValueError, TypeError, ArithmeticError) as error:
            raise TemplateRenderError(
                template=template.name, part=part, line=None, message=str(error)
            ) from None

    def optional(part: str, bound: BoundTemplate | None) -> str | None:
        return run(part, bound).strip() if bound is not None else None

    preheader = optional("preheader", parts.preheader)
    html = (
        run("html", parts.html, {"_preheader": preheader or ""}) if parts.html is not None else None
    )
    return RenderedMessage(
        template=template.name,
        variant=variant if variant in template.variants else None,
        subject=optional("subject", parts.subject),
        preheader=preheader,
        sender=optional("from", parts.sender),
        reply_to=optional("reply_to", parts.reply_to),
        html=html,
        text=run("text", parts.text) if parts.text is not None else None,
        url=optional("url", parts.url),
    )


def template_variables(template: CompiledTemplate) -> dict[str, list[str]]:
    """The variables each part reads (`customer.first_name`), for `orbita plan` and preview."""
    found: dict[str, list[str]] = {}
    for arm, parts in [(None, template.base), *template.variants.items()]:
        for key in ("subject", "preheader", "sender", "reply_to", "html", "text", "url"):
            bound = getattr(parts, key)
            if bound is None:
                continue
            names = sorted(
                str(path) for path in bound.global_variable_paths() if not path.startswith("_")
            )
            found[f"{'variants.' + arm + '.' if arm else ''}{key}"] = names
    return found


def _place(part: str, error: LiquidError, sources: Mapping[str, str]) -> tuple[str, int | None]:
    """The part and line to name: for HTML compiled from MJML, the line of the same Liquid
    tag in the author's MJML."""
    source = sources.get(part, "")
    line = _liquid_line(error, source)
    mjml_source = sources.get("mjml")
    token = getattr(error, "token", None)
    start = getattr(token, "start_index", None)
    if part != "html" or mjml_source is None or not isinstance(start, int):
        return part, line
    opening = max(source.rfind("{{", 0, start + 1), source.rfind("{%", 0, start + 1))
    closing = source.find("}}" if source.startswith("{{", opening) else "%}", start)
    if opening < 0 or closing < 0:
        return "mjml", None
    at = mjml_source.find(source[opening : closing + 2])
    return "mjml", (mjml_source.count("\n", 0, at) + 1 if at >= 0 else None)


def _liquid_message(error: LiquidError) -> str:
    message = getattr(error, "message", None) or str(error).split("\n", 1)[0]
    return str(message)


def _liquid_line(error: LiquidError, source: str) -> int | None:
    token = getattr(error, "token", None)
    start = getattr(token, "start_index", None)
    if not isinstance(start, int) or not source:
        return None
    return source.count("\n", 0, start) + 1
