"""Templates: Liquid in a sandbox over MJML, strict about undefined names, escaped in HTML,
with money and dates in the customer's locale, and a plain-text alternative."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orbita.core.errors import InvalidInputError, TerminalError
from orbita.model.strategy import parse_strategy
from orbita.services.templates import (
    CompiledTemplate,
    MessageContext,
    TemplateRenderError,
    compile_templates,
    html_to_text,
    render_message,
    template_variables,
)

MJML = """<mjml>
  <mj-head><mj-title>Your cart</mj-title></mj-head>
  <mj-body>
    <mj-section><mj-column>
      <mj-text>Hi {{ customer.first_name | default: "there" }},</mj-text>
      <mj-text>you left {{ event.products | size }} items:</mj-text>
    </mj-column></mj-section>
    {% for line in event.products %}
    <mj-section><mj-column>
      <mj-text>{{ line.name }} (size {{ line.size }}) — {{ line.price | money }}</mj-text>
      <mj-button href="https://shop.example.com/p/{{ line.sku }}">View it</mj-button>
    </mj-column></mj-section>
    {% endfor %}
    <mj-section><mj-column>
      <mj-text>Total {{ event.total | money }} until {{ event.until | localdate: 'long' }}</mj-text>
    </mj-column></mj-section>
  </mj-body>
</mjml>
"""

STRATEGY = """workspace: shop
channels:
  email: {type: smtp, port: 2525, from: "Shop <shop@example.com>"}
  telegram: {type: telegram, token_env: TG}
templates:
  cart_reminder:
    channel: email
    subject: "{{ customer.first_name | default: 'Hi' }}, your cart is waiting"
    preheader: "Still thinking, {{ customer.first_name | default: 'friend' }}?"
    mjml: templates/cart.mjml
    variants:
      B: {subject: "Your {{ event.products | size }} items miss you"}
  nudge:
    channel: telegram
    text: "{{ customer.first_name }}, your cart: {{ event.total | money }}"
"""


def cart_context(**customer: object) -> MessageContext:
    return MessageContext(
        customer={"first_name": "Ann", **customer},
        event={
            "name": "Product Added",
            "products": [
                {"name": "Linen shirt", "size": "M", "price": 1299, "sku": "LS-1"},
                {"name": "Shoes & socks", "size": "40", "price": 2500.5, "sku": "SH-2"},
            ],
            "total": 3799.5,
            "until": "2026-11-30T10:00:00Z",
        },
        locale="uk-UA",
        currency="UAH",
        timezone="Europe/Kyiv",
    )


@pytest.fixture
def compiled(tmp_path: Path) -> dict[str, CompiledTemplate]:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "cart.mjml").write_text(MJML)
    strategy = parse_strategy(STRATEGY, source=str(tmp_path / "strategy.yaml"))
    return compile_templates(strategy=strategy, base_dir=tmp_path)


def test_mjml_with_liquid_renders_per_customer_in_their_locale(
    compiled: dict[str, CompiledTemplate],
) -> None:
    message = render_message(compiled["cart_reminder"], variant=None, context=cart_context())
    assert message.subject == "Ann, your cart is waiting"
    assert message.html is not None and message.text is not None
    assert "<table" in message.html and "Linen shirt (size M)" in message.html
    assert "1\xa0299,00\xa0₴" in message.html  # Ukrainian grouping, decimal comma, hryvnia
    assert "30 листопада 2026" in message.html  # the date in the customer's language
    assert 'href="https://shop.example.com/p/SH-2"' in message.html
    # The preheader is hidden in the HTML and left out of the text.
    assert "Still thinking, Ann?" in message.html and message.preheader == "Still thinking, Ann?"
    assert "Still thinking" not in message.text
    assert "Linen shirt (size M) — 1\xa0299,00\xa0₴" in message.text
    assert "View it (https://shop.example.com/p/LS-1)" in message.text
    assert "mso" not in message.text and "{" not in message.text


def test_customer_data_is_escaped_in_html_and_left_alone_in_text(
    compiled: dict[str, CompiledTemplate],
) -> None:
    context = cart_context(first_name='<script>alert("x")</script>')
    message = render_message(compiled["cart_reminder"], variant=None, context=context)
    assert message.html is not None and message.text is not None
    assert "<script>alert" not in message.html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in message.html
    assert "Shoes &amp; socks" in message.html  # event data too
    assert message.subject is not None and message.subject.startswith("<script>")  # a header
    assert "Shoes & socks" in message.text


def test_a_variant_replaces_only_what_it_names(compiled: dict[str, CompiledTemplate]) -> None:
    base = render_message(compiled["cart_reminder"], variant=None, context=cart_context())
    arm_b = render_message(compiled["cart_reminder"], variant="B", context=cart_context())
    other = render_message(compiled["cart_reminder"], variant="C", context=cart_context())
    assert arm_b.subject == "Your 2 items miss you" and arm_b.variant == "B"
    assert arm_b.html == base.html
    assert other.subject == base.subject and other.variant is None


def test_an_undefined_variable_names_template_part_line_and_variable(
    compiled: dict[str, CompiledTemplate],
) -> None:
    # The telegram text has no `default` for the first name.
    with pytest.raises(TemplateRenderError) as caught:
        render_message(compiled["nudge"], variant=None, context=MessageContext(customer={}))
    error = caught.value
    assert isinstance(error, TerminalError)
    assert (error.template, error.part, error.line) == ("nudge", "text", 1)
    assert "customer.first_name is undefined" in str(error)


def test_an_undefined_variable_in_mjml_names_the_mjml_line(
    compiled: dict[str, CompiledTemplate],
) -> None:
    context = MessageContext(customer={"first_name": "Ann"}, event={"products": []})
    with pytest.raises(TemplateRenderError) as caught:
        render_message(compiled["cart_reminder"], variant=None, context=context)
    error = caught.value
    assert (error.part, error.line) == ("mjml", 15)  # `{{ event.total | money }}`
    assert "event.total is undefined" in str(error)


def test_a_default_fills_a_missing_name(compiled: dict[str, CompiledTemplate]) -> None:
    context = dataclasses.replace(cart_context(), customer={})
    message = render_message(compiled["cart_reminder"], variant=None, context=context)
    assert message.subject == "Hi, your cart is waiting"
    assert message.html is not None and "Hi there," in message.html


def test_loops_and_output_are_bounded(tmp_path: Path) -> None:
    text = STRATEGY.replace(
        'text: "{{ customer.first_name }}, your cart: {{ event.total | money }}"',
        'text: "{% for i in (1..1000000) %}{{ i }}{% endfor %}"',
    )
    strategy = parse_strategy(text, source="s.yaml")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "cart.mjml").write_text(MJML)
    nudge = compile_templates(strategy=strategy, base_dir=tmp_path)["nudge"]
    with pytest.raises(TemplateRenderError, match="loop iteration limit"):
        render_message(nudge, variant=None, context=MessageContext(customer={}))


def test_output_is_bounded(tmp_path: Path) -> None:
    text = STRATEGY.replace(
        'text: "{{ customer.first_name }}, your cart: {{ event.total | money }}"',
        'text: "{% for i in (1..9000) %}{{ customer.bio }}{% endfor %}"',
    )
    strategy = parse_strategy(text, source="s.yaml")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "cart.mjml").write_text(MJML)
    nudge = compile_templates(strategy=strategy, base_dir=tmp_path)["nudge"]
    with pytest.raises(TemplateRenderError, match="output stream limit"):
        render_message(nudge, variant=None, context=MessageContext(customer={"bio": "x" * 300}))
    short = render_message(nudge, variant=None, context=MessageContext(customer={"bio": "xy"}))
    assert short.text == "xy" * 9000


@pytest.mark.parametrize("tag", ["{% include 'secrets.txt' %}", "{% render '/etc/passwd' %}"])
def test_templates_cannot_read_files(tmp_path: Path, tag: str) -> None:
    text = STRATEGY.replace(
        'text: "{{ customer.first_name }}, your cart: {{ event.total | money }}"',
        f'text: "{tag}"',
    )
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "cart.mjml").write_text(MJML)
    with pytest.raises(InvalidInputError) as caught:
        compile_templates(strategy=parse_strategy(text, source="s.yaml"), base_dir=tmp_path)
    ((problem,),) = [caught.value.problems]
    assert problem.field == "templates.nudge.text" and "unexpected tag" in problem.message


def test_a_missing_file_and_a_liquid_syntax_error_are_named(tmp_path: Path) -> None:
    text = STRATEGY.replace("{{ event.total | money }}", "{{ event.total | money }")
    with pytest.raises(InvalidInputError) as caught:
        compile_templates(strategy=parse_strategy(text, source="s.yaml"), base_dir=tmp_path)
    found = {p.field: p for p in caught.value.problems}
    assert "cannot read templates/cart.mjml" in found["templates.cart_reminder.mjml"].message
    assert found["templates.nudge.text"].line == 1


def test_variables_are_listed_for_plan_and_preview(compiled: dict[str, CompiledTemplate]) -> None:
    variables = template_variables(compiled["nudge"])
    assert variables == {"text": ["customer.first_name", "event.total"]}


def test_html_to_text_keeps_blocks_links_and_drops_styles() -> None:
    html = (
        "<html><head><style>p{color:red}</style><title>T</title></head><body>"
        "<!--[if mso]><table><![endif]--><h1>Sale</h1><p>Up to <b>50%</b>&nbsp;off</p>"
        '<p><a href="https://x.example/s">Shop now</a> or <a href="https://x.example/">'
        "https://x.example/</a></p><img alt='Logo' src='l.png'></body></html>"
    )
    assert html_to_text(html) == (
        "Sale\n\nUp to 50% off\n\nShop now (https://x.example/s) or https://x.example/\nLogo\n"
    )
