"""Channel plugins, one shape each (`config.py` + `client.py`): a client with
`async send(OutgoingMessage) -> DeliveryResult` and `async close()`.

`open_channels` opens a client for every channel of the strategy; a new kind of channel is a
new folder and one line in `_OPENERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from orbita.channels.email.client import SmtpClient
from orbita.channels.push.client import PushClient
from orbita.channels.sms.client import SmsClient
from orbita.channels.telegram.client import TelegramClient
from orbita.channels.webhook.client import WebhookClient
from orbita.model.channels import (
    Channel,
    PushChannel,
    SmsChannel,
    SmtpChannel,
    TelegramChannel,
    WebhookChannel,
)
from orbita.model.delivery import ChannelClient

Environ = Mapping[str, str]


def _smtp(config: Channel, env: Environ) -> ChannelClient:
    assert isinstance(config, SmtpChannel)
    return SmtpClient(config, env=env)


def _sms(config: Channel, env: Environ) -> ChannelClient:
    assert isinstance(config, SmsChannel)
    return SmsClient(config, env=env)


def _push(config: Channel, env: Environ) -> ChannelClient:
    assert isinstance(config, PushChannel)
    return PushClient(config, env=env)


def _telegram(config: Channel, env: Environ) -> ChannelClient:
    assert isinstance(config, TelegramChannel)
    return TelegramClient(config, env=env)


def _webhook(config: Channel, env: Environ) -> ChannelClient:
    assert isinstance(config, WebhookChannel)
    return WebhookClient(config, env=env)


_OPENERS: dict[str, Callable[[Channel, Environ], ChannelClient]] = {
    "smtp": _smtp,
    "sms": _sms,
    "push": _push,
    "telegram": _telegram,
    "webhook": _webhook,
}


def open_channel(config: Channel, *, env: Environ) -> ChannelClient:
    """A client for one channel; secrets are read from `env` (os.environ at the edge)."""
    return _OPENERS[config.type](config, env)


def open_channels(channels: Mapping[str, Channel], *, env: Environ) -> dict[str, ChannelClient]:
    """A client per channel name. Nothing connects until the first send."""
    return {name: open_channel(config, env=env) for name, config in channels.items()}


async def close_channels(clients: Mapping[str, ChannelClient]) -> None:
    for client in clients.values():
        await client.close()
