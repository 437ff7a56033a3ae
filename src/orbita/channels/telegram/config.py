"""A Telegram bot with its token read; the token is part of the URL, so never shown."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orbita.channels.secrets import read_secret
from orbita.model.channels import TelegramChannel


@dataclass(frozen=True, slots=True)
class TelegramConfig:
    channel: TelegramChannel
    token: str

    @classmethod
    def resolve(cls, channel: TelegramChannel, *, env: Mapping[str, str]) -> TelegramConfig:
        return cls(channel, read_secret(env, channel.token_env, channel="telegram") or "")

    def __repr__(self) -> str:
        return f"TelegramConfig({self.channel.base_url})"

    def url(self, method: str) -> str:
        return f"{self.channel.base_url.rstrip('/')}/bot{self.token}/{method}"

    def shown_url(self, method: str) -> str:
        return f"{self.channel.base_url.rstrip('/')}/bot<token>/{method}"
