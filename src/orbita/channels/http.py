"""What the HTTP channels share: one httpx client each, and one reading of a response as
delivered / transient / terminal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from orbita.model.delivery import DeliveryResult

# Worth a retry: the provider is busy, down or slow; anything else in 4xx is our mistake.
TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def new_http_client(*, timeout: float, concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits)


async def post(
    client: httpx.AsyncClient,
    url: str,
    *,
    key: str,
    method: str = "POST",
    json: Any = None,
    content: bytes | None = None,
    data: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    shown_url: str | None = None,
) -> tuple[DeliveryResult, httpx.Response | None]:
    """Send one request; the result says whether the provider took it. `shown_url` is what
    a result may say about the address (a Telegram URL holds the bot token)."""
    where = shown_url or url
    all_headers = {"Idempotency-Key": key, **(headers or {})}
    try:
        response = await client.request(
            method, url, json=json, content=content, data=data, headers=all_headers, auth=auth
        )
    except httpx.TimeoutException:
        return DeliveryResult.transient(f"{where}: timed out"), None
    except httpx.TransportError as error:
        return DeliveryResult.transient(f"{where}: {type(error).__name__}"), None
    return classify(response, where=where), response


def classify(response: httpx.Response, *, where: str) -> DeliveryResult:
    status = response.status_code
    if 200 <= status < 300:
        return DeliveryResult.delivered(f"{where}: {status}")
    reason = f"{where}: HTTP {status} {_brief(response)}".rstrip()
    if status in TRANSIENT_STATUS:
        return DeliveryResult.transient(reason, retry_after=retry_after(response))
    return DeliveryResult.terminal(reason)


def retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the backoff decides


def _brief(response: httpx.Response) -> str:
    text = response.text.strip().replace("\n", " ")
    return text[:200]
