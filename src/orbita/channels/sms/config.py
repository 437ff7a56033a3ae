"""A Twilio-shaped SMS channel with its auth token read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orbita.channels.secrets import read_secret
from orbita.model.channels import SmsChannel


@dataclass(frozen=True, slots=True)
class SmsConfig:
    channel: SmsChannel
    token: str

    @classmethod
    def resolve(cls, channel: SmsChannel, *, env: Mapping[str, str]) -> SmsConfig:
        return cls(channel, read_secret(env, channel.token_env, channel="sms") or "")

    def __repr__(self) -> str:
        return f"SmsConfig({self.channel.base_url})"

    @property
    def url(self) -> str:
        base = self.channel.base_url.rstrip("/")
        return f"{base}/2010-04-01/Accounts/{self.channel.account_sid}/Messages.json"
