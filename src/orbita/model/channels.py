"""Channels: where messages go, one tagged model per kind of provider.

    channels:
      email: {type: smtp, host: 127.0.0.1, port: 2525, from: "Shop <shop@example.com>"}
      telegram: {type: telegram, token_env: TELEGRAM_TOKEN}
      sms: {type: sms, account_sid: AC123, token_env: TWILIO_TOKEN, from: "+15550001111"}
      push: {type: push, project_id: shop-app, token_env: FCM_TOKEN}
      hooks: {type: webhook, secret_env: HOOK_SECRET}

Secrets are never written in the file: a channel names the environment variable that holds
one (`token_env`, `password_env`, `secret_env`), and only the sender reads it.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema

from orbita.model.durations import Duration
from orbita.model.schema import JsonSchema, with_forms
from orbita.model.triggers import TimeOfDay

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.match(value):
        raise ValueError(
            f"{value!r} is not an environment variable name: a secret is never written in "
            "the strategy, name the variable that holds it (such as SMTP_PASSWORD)"
        )
    return value


class FrequencyCap(BaseModel):
    """At most `messages` marketing messages per customer on this channel within `per`
    (transactional messages are never capped, nor counted)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    messages: int = Field(ge=1)
    per: Duration


class QuietHours(BaseModel):
    """No marketing message between `from` and `to` in the customer's time zone: it waits
    for `to` (deferred, never dropped). `{from: "21:00", to: "08:00"}` spans midnight."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    start: TimeOfDay = Field(alias="from")
    end: TimeOfDay = Field(alias="to")

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet hours start and end at the same time")
        return self


class _Channel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    frequency_cap: FrequencyCap | None = None
    quiet_hours: QuietHours | None = None

    # Sends per second to this provider across the sender's connections (None: no limit).
    rate_per_second: float | None = Field(default=None, gt=0)
    # Messages in flight at once (SMTP: open connections).
    concurrency: int = Field(default=4, ge=1, le=256)
    timeout: float = Field(default=30.0, gt=0)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchema:
        def describe(schema: JsonSchema) -> None:
            # The channels' union picks the kind by `type`, so a file must write it.
            schema["required"] = ["type", *schema.get("required", [])]

        return with_forms(core_schema, handler, describe)


class SmtpChannel(_Channel):
    """Email over SMTP; `return_path` turns on VERP (`bounces+<key>@domain`)."""

    type: Literal["smtp"] = "smtp"
    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    sender: str = Field(alias="from", min_length=3)
    reply_to: str | None = None
    username: str | None = None
    password_env: str | None = None
    tls: Literal["none", "starttls", "tls"] = "none"
    return_path: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    # One-click unsubscribe (RFC 8058): `{token}` is replaced by the message's signed token.
    unsubscribe_url: str | None = Field(default=None, pattern=r"^https?://")
    unsubscribe_mailto: str | None = None
    # The domain of generated Message-IDs (default: the domain of `from`).
    message_id_domain: str | None = None
    # Tracking (with a public URL, ORBITA_PUBLIC_URL): an open pixel, links through the click
    # redirect (a link with `data-orbita-track="off"` is left alone).
    track_opens: bool = True
    track_clicks: bool = True

    _password = field_validator("password_env")(_env_name)


class SmsChannel(_Channel):
    """SMS through a Twilio-shaped HTTP API (`POST …/Accounts/{sid}/Messages.json`)."""

    type: Literal["sms"] = "sms"
    base_url: str = Field(default="https://api.twilio.com", pattern=r"^https?://")
    account_sid: str = Field(min_length=1)
    token_env: str
    sender: str = Field(alias="from", min_length=1)
    # Links in the text through the click redirect (counted, and often shorter).
    track_clicks: bool = False

    _token = field_validator("token_env")(_env_name)


class PushChannel(_Channel):
    """Mobile push through an FCM-v1-shaped HTTP API (`POST …/projects/{id}/messages:send`)."""

    type: Literal["push"] = "push"
    base_url: str = Field(default="https://fcm.googleapis.com", pattern=r"^https?://")
    project_id: str = Field(min_length=1)
    token_env: str

    _token = field_validator("token_env")(_env_name)


class TelegramChannel(_Channel):
    """A Telegram bot (`sendMessage` of the Bot API)."""

    type: Literal["telegram"] = "telegram"
    base_url: str = Field(default="https://api.telegram.org", pattern=r"^https?://")
    token_env: str
    parse_mode: Literal["HTML", "MarkdownV2", "none"] = "HTML"

    _token = field_validator("token_env")(_env_name)


class WebhookChannel(_Channel):
    """Outbound webhooks, signed with HMAC-SHA256 when `secret_env` names a secret."""

    type: Literal["webhook"] = "webhook"
    url: str | None = Field(default=None, pattern=r"^https?://")
    secret_env: str | None = None

    _secret = field_validator("secret_env")(_env_name)


Channel = Annotated[
    SmtpChannel | SmsChannel | PushChannel | TelegramChannel | WebhookChannel,
    Field(discriminator="type"),
]
CHANNEL_TYPES = ("smtp", "sms", "push", "telegram", "webhook")
