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
from orbita.model.delivery import CommitPoint, DeliveryResult, OutgoingMessage


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
            await smtp.ehlo()  # now: whether it takes 8-bit bodies decides the encoding

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

    def envelope(
        self, message: OutgoingMessage, *, eight_bit: bool = False
    ) -> tuple[str, bytes, list[str]]:
        """(envelope sender, message bytes, MAIL options); `eight_bit`: the server offers
        8BITMIME."""
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
        raw, needs_8bit = build_message(
            headers=headers,
            text=message.text,
            html=message.html,
            boundary=f"=_{message.key}",
            eight_bit=eight_bit,
        )
        options = ["BODY=8BITMIME"] if needs_8bit else []
        return self.config.return_path(message.key, sender), raw, options

    async def send(
        self, message: OutgoingMessage, *, commit: CommitPoint | None = None
    ) -> DeliveryResult:
        if not message.to.isascii() or "@" not in message.to or "\n" in message.to:
            return DeliveryResult.terminal(f"not an email address: {message.to!r}")
        message_id = self.config.message_id(message.key)
        pool = self._pool()
        smtp = await pool.get()
        try:
            await self._ready(smtp)
            envelope_from, raw, options = self.envelope(
                message, eight_bit=smtp.supports_extension("8bitmime")
            )
            if commit is None:
                _errors, reply = await smtp.sendmail(
                    envelope_from, [message.to], raw, mail_options=options
                )
                return DeliveryResult.delivered(reply, provider_id=message_id)
            return await self._send_committed(
                smtp,
                envelope_from,
                message.to,
                raw,
                commit=commit,
                message_id=message_id,
                options=options,
            )
        except aiosmtplib.SMTPRecipientsRefused as error:
            codes = [refusal.code for refusal in error.recipients]
            detail = "; ".join(f"{r.code} {r.message}" for r in error.recipients)
            if any(code >= 500 for code in codes):
                return DeliveryResult.terminal(f"recipient refused: {detail}")
            return DeliveryResult.transient(f"recipient deferred: {detail}")
        except aiosmtplib.SMTPRecipientRefused as error:
            await _reset(smtp)  # the connection is fine; only this transaction ends
            if error.code >= 500:
                return DeliveryResult.terminal(f"recipient refused: {error.code} {error.message}")
            return DeliveryResult.transient(f"recipient deferred: {error.code} {error.message}")
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

    async def _send_committed(
        self,
        smtp: aiosmtplib.SMTP,
        envelope_from: str,
        to: str,
        raw: bytes,
        *,
        commit: CommitPoint,
        message_id: str,
        options: list[str],
    ) -> DeliveryResult:
        """MAIL, RCPT, DATA and the whole message but its final dot; then `commit` records
        the point of no return; then the dot. A server drops a transaction whose dot never
        came, so a sender killed before the commit has delivered nothing (the message is
        sent again), and one killed after it has handed the dot to the kernel, which
        delivers it (the message is not sent again). `commit` is the last thing before the
        write: nothing of this method's may run between them."""
        await smtp.mail(envelope_from, options=options)
        await smtp.rcpt(to)
        start = await smtp.execute_command(b"DATA")
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = smtp.protocol
        assert protocol is not None and protocol.transport is not None
        protocol.write(raw.replace(b"\r\n.", b"\r\n.."))
        # The body must be in the kernel before the commit: a kill while it still sits in
        # this process's buffer would leave a committed message the server never finished.
        transport = protocol.transport
        # (No event tells when asyncio's buffer is empty; it nearly always is at once.)
        while isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size():  # noqa: ASYNC110
            await asyncio.sleep(0.0005)
        if not commit():
            smtp.close()  # another sender owns the message now: drop the transaction
            return DeliveryResult.transient("the claim on the message was lost; not sent")
        try:
            protocol.write(b".\r\n")
        except aiosmtplib.SMTPServerDisconnected as error:
            smtp.close()  # the dot never left: nothing was delivered
            return DeliveryResult.transient(f"SMTP connection lost before the end: {error}")
        try:
            reply = await protocol.read_response(timeout=self.channel.timeout)
        except (aiosmtplib.SMTPException, OSError) as error:
            smtp.close()
            return DeliveryResult(
                "delivered",
                f"unconfirmed: no answer after the final dot ({type(error).__name__})",
                provider_id=message_id,
                unconfirmed=True,
            )
        if reply.code != 250:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return DeliveryResult.delivered(reply.message, provider_id=message_id)


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    """After a refused message the connection is still usable once reset (RSET)."""
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()
