"""Channels, templates and goals in the strategy file: each mistake with its line."""

from __future__ import annotations

import pytest

from orbita.core.errors import InvalidInputError
from orbita.model.channels import SmtpChannel, TelegramChannel
from orbita.model.strategy import parse_strategy
from orbita.model.templates import is_file_reference

GOOD = """workspace: shop
goals:
  - {kpi: repeat_purchase_rate, target: 0.35, by: 2027-06-30}
channels:
  email: {type: smtp, host: 127.0.0.1, port: 2525, from: "Shop <shop@example.com>"}
  telegram: {type: telegram, token_env: TELEGRAM_TOKEN}
templates:
  cart_reminder:
    channel: email
    subject: "{{ customer.first_name | default: 'Hi' }}, your cart is waiting"
    mjml: templates/cart_reminder.mjml
    variants:
      B: {subject: "Your cart misses you"}
  nudge:
    channel: telegram
    text: "Your cart: {{ event.products | size }} items"
journeys:
  abandoned_cart:
    trigger: {event: "Product Added"}
    steps:
      - wait: 1h
      - send: cart_reminder
      - send: {template: nudge, channel: telegram}
"""


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(InvalidInputError) as caught:
        parse_strategy(text, source="strategy.yaml")
    return [(p.line, p.field, p.message) for p in caught.value.problems]


def test_the_design_syntax_parses_into_tagged_models() -> None:
    strategy = parse_strategy(GOOD, source="strategy.yaml")
    email = strategy.channels["email"]
    assert isinstance(email, SmtpChannel) and email.sender == "Shop <shop@example.com>"
    assert isinstance(strategy.channels["telegram"], TelegramChannel)
    assert strategy.goals[0].kpi == "repeat_purchase_rate" and strategy.goals[0].target == 0.35
    template = strategy.templates["cart_reminder"]
    assert template.mjml == "templates/cart_reminder.mjml" and is_file_reference(template.mjml)
    assert template.parts("B").subject == "Your cart misses you"
    assert template.parts("B").mjml == template.mjml  # a variant keeps what it does not replace
    assert template.parts("C") == template.parts(None)
    assert template.topic == "marketing" and not template.transactional


def test_a_send_of_an_unknown_template_names_its_line() -> None:
    text = GOOD.replace("- send: cart_reminder", "- send: cart_remindr")
    ((line, field, message),) = problems(text)
    assert line == 22 and field == "journeys.abandoned_cart.steps[1].send"
    assert message.startswith("unknown template 'cart_remindr' (known: cart_reminder, nudge")


def test_a_template_on_an_unknown_channel_names_its_line() -> None:
    text = GOOD.replace("channel: telegram\n    text", "channel: tg\n    text")
    ((line, field, message),) = problems(text)
    assert (line, field) == (15, "templates.nudge.channel")
    assert "unknown channel 'tg' (known: email, telegram)" in message


def test_a_send_step_on_an_unknown_channel_and_missing_parts() -> None:
    text = GOOD.replace("channel: telegram}", "channel: sms}").replace(
        '    text: "Your cart', '    subject: "Your cart'
    )
    found = problems(text)
    assert (14, "templates.nudge.text", "a telegram message needs text") in found
    assert any(
        field == "journeys.abandoned_cart.steps[2].send.channel" and "unknown channel 'sms'" in m
        for _, field, m in found
    )


def test_a_secret_written_in_place_is_refused() -> None:
    text = GOOD.replace("token_env: TELEGRAM_TOKEN", "token_env: '123:abc-secret'")
    ((line, field, message),) = problems(text)
    assert (line, field) == (6, "channels.telegram.token_env")
    assert "not an environment variable name" in message


def test_an_unknown_channel_type_is_an_error() -> None:
    text = GOOD.replace("type: telegram", "type: pigeon")
    ((line, field, _message),) = problems(text)
    assert line == 6 and field.startswith("channels.telegram")


@pytest.mark.parametrize(
    ("body", "is_file"),
    [
        ("templates/cart.mjml", True),
        ("cart.html", True),
        ("Your order has shipped", False),
        ("<mjml><mj-body></mj-body></mjml>", False),
        ("{{ x }}.txt", False),
        ("notes.pdf", False),
    ],
)
def test_file_references_are_one_word_with_a_template_extension(body: str, is_file: bool) -> None:
    assert is_file_reference(body) is is_file
