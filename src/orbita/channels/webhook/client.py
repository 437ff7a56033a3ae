"""Webhooks: the message's JSON body to its URL (or the channel's), signed with HMAC-SHA256
in `X-Orbita-Signature` when the channel has a secret, with `Idempotency-Key`."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from orbita.channels.http import new_http_client, post
from orbita.channels.webhook.config import SIGNATURE_HEADER, WebhookConfig, signature
from orbita.model.channels import WebhookChannel
from orbita.model.delivery import CommitPoint, DeliveryResult, OutgoingMessage


class WebhookClient:
    def __init__(self, channel: WebhookChannel, *, env: Mapping[str, str]) -> None:
        self.config = WebhookConfig.resolve(channel, env=env)
        self._http = new_http_client(timeout=channel.timeout, concurrency=channel.concurrency)

    async def send(
        self, message: OutgoingMessage, *, commit: CommitPoint | None = None
    ) -> DeliveryResult:
        url = message.to or self.config.channel.url
        if not url:
            return DeliveryResult.terminal("webhook: no URL")
        body = orjson.dumps(dict(message.body or {}))
        headers = {"Content-Type": "application/json"}
        if self.config.secret is not None:
            stamp = int(message.at.timestamp())
            headers[SIGNATURE_HEADER] = signature(self.config.secret, timestamp=stamp, body=body)
        method = message.method.upper()
        result, _response = await post(
            self._http,
            url,
            key=message.key,
            method=method,
            content=body if method != "GET" else None,
            headers=headers,
        )
        return result

    async def close(self) -> None:
        await self._http.aclose()
