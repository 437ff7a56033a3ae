"""SMS: `POST /2010-04-01/Accounts/{sid}/Messages.json` with To, From and Body as a form,
HTTP Basic auth with the account sid and token (Twilio's shape)."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from orbita.channels.http import new_http_client, post
from orbita.channels.sms.config import SmsConfig
from orbita.model.channels import SmsChannel
from orbita.model.delivery import CommitPoint, DeliveryResult, OutgoingMessage


class SmsClient:
    def __init__(self, channel: SmsChannel, *, env: Mapping[str, str]) -> None:
        self.config = SmsConfig.resolve(channel, env=env)
        self._http = new_http_client(timeout=channel.timeout, concurrency=channel.concurrency)

    async def send(
        self, message: OutgoingMessage, *, commit: CommitPoint | None = None
    ) -> DeliveryResult:
        channel = self.config.channel
        result, response = await post(
            self._http,
            self.config.url,
            key=message.key,
            data={"To": message.to, "From": channel.sender, "Body": message.text or ""},
            auth=(channel.account_sid, self.config.token),
        )
        if result.status == "delivered" and response is not None:
            sid = _json_field(response, "sid")
            return DeliveryResult.delivered(result.detail, provider_id=sid)
        return result

    async def close(self) -> None:
        await self._http.aclose()


def _json_field(response: httpx.Response, name: str) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    value = data.get(name) if isinstance(data, dict) else None
    return str(value) if value is not None else None
