"""The demo's local mail server: what the SMTP channel sends lands as .eml files, one per
Message-ID, and a resend of the same message is counted, not kept twice."""

from __future__ import annotations

import asyncio
import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path

from orbita.channels import close_channels, open_channels
from orbita.channels.email.sink import MailFolder
from orbita.model.channels import SmtpChannel
from orbita.model.delivery import OutgoingMessage


def test_messages_land_as_eml_files_named_by_message_id(tmp_path: Path) -> None:
    with MailFolder(tmp_path / "mail") as sink:
        channel = SmtpChannel.model_validate({"port": sink.port, "from": "Shop <s@example.com>"})

        async def send() -> None:
            clients = open_channels({"email": channel}, env={})
            try:
                for key in ("a1", "b2", "a1"):
                    message = OutgoingMessage(
                        key=key,
                        channel="email",
                        to="ann@example.org",
                        at=datetime(2026, 11, 23, tzinfo=UTC),
                        subject="Привіт",
                        text="Hi Ann",
                        html="<p>Hi Ann</p>",
                    )
                    result = await clients["email"].send(message)
                    assert result.status == "delivered"
            finally:
                await close_channels(clients)

        asyncio.run(send())
        assert (sink.received, sink.count(), sink.duplicates) == (3, 2, 1)
    names = sorted(path.name for path in (tmp_path / "mail").iterdir())
    assert names == ["a1@example.com.eml", "b2@example.com.eml"]
    parsed = email.message_from_bytes(
        (tmp_path / "mail" / "b2@example.com.eml").read_bytes(), policy=email.policy.default
    )
    assert parsed["Subject"] == "Привіт"
