"""Push: `POST /v1/projects/{id}/messages:send` with `{"message": {"token", "notification",
"data"}}` and a bearer token (FCM v1's shape). FCM answers 404 UNREGISTERED for a device
token that is gone: terminal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orbita.channels.http import new_http_client, post
from orbita.channels.push.config import PushConfig
from orbita.model.channels import PushChannel
from orbita.model.delivery import CommitPoint, DeliveryResult, OutgoingMessage


class PushClient:
    def __init__(self, channel: PushChannel, *, env: Mapping[str, str]) -> None:
        self.config = PushConfig.resolve(channel, env=env)
        self._http = new_http_client(timeout=channel.timeout, concurrency=channel.concurrency)

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        data = {"orbita_key": message.key, **message.data}
        if message.url:
            data["url"] = message.url
        return {
            "message": {
                "token": message.to,
                "notification": {"title": message.subject or "", "body": message.text or ""},
                "data": data,
            }
        }

    async def send(
        self, message: OutgoingMessage, *, commit: CommitPoint | None = None
    ) -> DeliveryResult:
        result, response = await post(
            self._http,
            self.config.url,
            key=message.key,
            json=self.payload(message),
            headers={"Authorization": f"Bearer {self.config.token}"},
        )
        if result.status == "delivered" and response is not None:
            try:
                name = response.json().get("name")
            except (ValueError, AttributeError):
                name = None
            return DeliveryResult.delivered(result.detail, provider_id=name)
        return result

    async def close(self) -> None:
        await self._http.aclose()
