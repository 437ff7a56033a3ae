"""SMTP client: a pool of reused aiosmtplib connections, one message at a time on each.

Each message gets a Message-ID derived from its outbox key (the same on every attempt, so a
resend after a crash is recognisable), a VERP return path when configured, and for
marketing mail `List-Unsubscribe` with `List-Unsubscribe-Post: List-Unsubscribe=One-Click`
(RFC 8058).

Classification: a 5xx reply to the recipient or the data is terminal (the address or the
content is refused); 4xx replies, lost connections and timeouts are transient.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

import aiosmtplib

from orbita.channels.email.config import EmailConfig
from orbita.channels.email.mime import build_message, date_header, encode_address, encode_header
from orbita.model.channels import SmtpChannel
from orbita.model.delivery import DeliveryResult, OutgoingMessage


class SmtpClient:
    def __init__(self, channel: SmtpChannel, *, env: Mapping[str, str]) -> None:
        self.config = EmailConfig.resolve(channel, env=env)
        self.channel = channel
        self._idle: asyncio.Queue[aiosmtplib.SMTP] | None = None
        self._all: list[aiosmtplib.SMTP] = []

    # --- connections ------------------------------------------------------------------

    def _pool(self) -> asyncio.Queue[aiosmtplib.SMTP]:
        if self._idle is None:
            # Created lazily: the queue belongs to the event loop that sends.
            self._idle = asyncio.Queue()
            context = ssl.create_default_context() if self.channel.tls != "none" else None
            for _ in range(self.channel.concurrency):
                smtp = aiosmtplib.SMTP(
                    hostname=self.channel.host,
                    port=self.channel.port,
                    timeout=self.channel.timeout,
                    use_tls=self.channel.tls == "tls",
                    start_tls=self.channel.tls == "starttls",
                    tls_context=context,
                    username=self.channel.username,
                    password=self.config.password,
                )
                self._all.append(smtp)
                self._idle.put_nowait(smtp)
        return self._idle

    async def _ready(self, smtp: aiosmtplib.SMTP) -> None:
        if not smtp.is_connected:
            await smtp.connect()

    async def close(self) -> None:
        for smtp in self._all:
            if smtp.is_connected:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError):
                    smtp.close()
        self._all.clear()
        self._idle = None

    # --- sending ----------------------------------------------------------------------

    def envelope(self, message: OutgoingMessage) -> tuple[str, bytes]:
        """(envelope sender, message bytes)."""
        sender = message.sender or self.channel.sender
        headers: list[tuple[str, str]] = [
            ("From", encode_address(sender)),
            ("To", message.to),
            ("Subject", encode_header(message.subject or "")),
            ("Date", date_header(message.at)),
            ("Message-ID", self.config.message_id(message.key)),
        ]
        reply_to = message.reply_to or self.channel.reply_to
        if reply_to:
            headers.append(("Reply-To", encode_address(reply_to)))
        if message.unsubscribe_url or self.channel.unsubscribe_mailto:
            links = []
            if message.unsubscribe_url:
                links.append(f"<{message.unsubscribe_url}>")
            if self.channel.unsubscribe_mailto:
                links.append(f"<mailto:{self.channel.unsubscribe_mailto}?subject=unsubscribe>")
            headers.append(("List-Unsubscribe", ", ".join(links)))
            if message.unsubscribe_url:
                headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        headers.append(("X-Orbita-Key", message.key))
        raw = build_message(
            headers=headers, text=message.text, html=message.html, boundary=f"=_{message.key}"
        )
        return self.config.return_path(message.key, sender), raw

    async def send(self, message: OutgoingMessage) -> DeliveryResult:
        if not message.to.isascii() or "@" not in message.to or "\n" in message.to:
            return DeliveryResult.terminal(f"not an email address: {message.to!r}")
        envelope_from, raw = self.envelope(message)
        pool = self._pool()
        smtp = await pool.get()
        try:
            await self._ready(smtp)
            _errors, reply = await smtp.sendmail(envelope_from, [message.to], raw)
            return DeliveryResult.delivered(reply, provider_id=self.config.message_id(message.key))
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refusal.code for refusal in error.recipients]
            detail = "; ".join(f"{r.code} {r.message}" for r in error.recipients)
            if any(code >= 500 for code in codes):
                return DeliveryResult.terminal(f"recipient refused: {detail}")
            return DeliveryResult.transient(f"recipient deferred: {detail}")
        except aiosmtplib.SMTPResponseException as error:
            if error.code >= 500 and not isinstance(error, aiosmtplib.SMTPAuthenticationError):
                await _reset(smtp)
                return DeliveryResult.terminal(f"{error.code} {error.message}")
            smtp.close()
            return DeliveryResult.transient(f"{error.code} {error.message}")
        except (aiosmtplib.SMTPException, OSError) as error:
            smtp.close()
            return DeliveryResult.transient(f"SMTP {type(error).__name__}: {error}")
        finally:
            pool.put_nowait(smtp)


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """After a refused message the connection is still usable once reset (RSET)."""
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
