"""Telegram: the Bot API's `sendMessage` to a chat id. Telegram answers
`{"ok": false, "error_code": 429, "parameters": {"retry_after": n}}` when flooded (transient)
and 403 when the customer blocked the bot (terminal)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orbita.channels.http import new_http_client, post
from orbita.channels.telegram.config import TelegramConfig
from orbita.model.channels import TelegramChannel
from orbita.model.delivery import CommitPoint, DeliveryResult, OutgoingMessage


class TelegramClient:
    def __init__(self, channel: TelegramChannel, *, env: Mapping[str, str]) -> None:
        self.config = TelegramConfig.resolve(channel, env=env)
        self._http = new_http_client(timeout=channel.timeout, concurrency=channel.concurrency)

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        body: dict[str, Any] = {"chat_id": message.to, "text": message.text or ""}
        if self.config.channel.parse_mode != "none":
            body["parse_mode"] = self.config.channel.parse_mode
        return body

    async def send(
        self, message: OutgoingMessage, *, commit: CommitPoint | None = None
    ) -> DeliveryResult:
        result, response = await post(
            self._http,
            self.config.url("sendMessage"),
            key=message.key,
            json=self.payload(message),
            shown_url=self.config.shown_url("sendMessage"),
        )
        if response is None:
            return result
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return result
        if result.status == "transient" and result.retry_after is None:
            wait = (data.get("parameters") or {}).get("retry_after")
            if isinstance(wait, int | float):
                return DeliveryResult.transient(result.detail, retry_after=float(wait))
        if result.status == "delivered":
            if data.get("ok") is not True:
                return DeliveryResult.terminal(f"telegram: {data.get('description')}")
            sent = data.get("result") or {}
            message_id = sent.get("message_id") if isinstance(sent, dict) else None
            return DeliveryResult.delivered(
                result.detail, provider_id=str(message_id) if message_id is not None else None
            )
        return result

    async def close(self) -> None:
        await self._http.aclose()
