"""An SMTP channel's settings with its secret read, and the addresses derived per message."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr

from orbita.channels.secrets import read_secret
from orbita.model.channels import SmtpChannel


@dataclass(frozen=True, slots=True)
class EmailConfig:
    channel: SmtpChannel
    password: str | None

    @classmethod
    def resolve(cls, channel: SmtpChannel, *, env: Mapping[str, str]) -> EmailConfig:
        return cls(channel, read_secret(env, channel.password_env, channel=channel.host))

    def __repr__(self) -> str:  # never show the password
        return f"EmailConfig({self.channel.host}:{self.channel.port})"

    @property
    def message_id_domain(self) -> str:
        if self.channel.message_id_domain:
            return self.channel.message_id_domain
        return address_of(self.channel.sender).rpartition("@")[2] or "orbita.invalid"

    def message_id(self, key: str) -> str:
        """The Message-ID of the outbox row with this key: the same on every attempt."""
        return f"<{key}@{self.message_id_domain}>"

    def return_path(self, key: str, sender: str) -> str:
        """The envelope sender: VERP (`bounces+<key>@domain`) when `return_path` is set, so
        a bounce names the message it is about; else the From address."""
        verp = self.channel.return_path
        if verp is None:
            return address_of(sender)
        local, _, domain = verp.partition("@")
        return f"{local}+{key}@{domain}"


@functools.lru_cache(maxsize=1024)
def address_of(mailbox: str) -> str:
    """`Shop <shop@example.com>` -> `shop@example.com` (senders repeat: parsed once)."""
    return parseaddr(mailbox)[1]
