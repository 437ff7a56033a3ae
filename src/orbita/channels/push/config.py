"""An FCM-v1-shaped push channel with its bearer token read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from orbita.channels.secrets import read_secret
from orbita.model.channels import PushChannel


@dataclass(frozen=True, slots=True)
class PushConfig:
    channel: PushChannel
    token: str

    @classmethod
    def resolve(cls, channel: PushChannel, *, env: Mapping[str, str]) -> PushConfig:
        return cls(channel, read_secret(env, channel.token_env, channel="push") or "")

    def __repr__(self) -> str:
        return f"PushConfig({self.channel.base_url})"

    @property
    def url(self) -> str:
        base = self.channel.base_url.rstrip("/")
        return f"{base}/v1/projects/{self.channel.project_id}/messages:send"
