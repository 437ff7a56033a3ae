"""A local SMTP server that keeps what it receives as .eml files: where the demo's mail goes.

    with MailFolder(Path("orbita-data/mail")) as sink:      # 127.0.0.1, a free port
        strategy channel: {type: smtp, host: 127.0.0.1, port: sink.port, from: …}
        … send …
        sink.count()

Each message is written to `<folder>/<Message-ID>.eml` (written to a temporary name, then
renamed: a reader never sees half a file). A second message with the same Message-ID
replaces the first, and `duplicates` counts it, so a demo can show that nothing was sent
twice.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


def free_port() -> int:
    """aiosmtpd's Controller refuses port 0: ask the kernel for a free port first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Handler:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lock = threading.Lock()
        self.received = 0
        self.duplicates = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        name = _file_name(content)
        with self.lock:
            self.received += 1
            target = self.folder / f"{name}.eml"
            if target.exists():
                self.duplicates += 1
            partial = self.folder / f".{name}.part"
            partial.write_bytes(content)
            partial.replace(target)
        return "250 Message accepted"


def _file_name(content: bytes) -> str:
    head = content.split(b"\r\n\r\n", 1)[0]
    match = re.search(rb"(?im)^Message-ID:\s*<?([^>\r\n]+)>?", head)
    if match is None:
        return f"no-message-id-{abs(hash(content))}"
    return _UNSAFE.sub("_", match.group(1).decode("ascii", "replace"))[:200]


class MailFolder:
    """An SMTP server on 127.0.0.1 that writes what it receives into `folder`."""

    def __init__(self, folder: Path, *, port: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = port or free_port()
        self._handler = _Handler(folder)
        self._controller = Controller(
            self._handler, hostname="127.0.0.1", port=self.port, data_size_limit=0
        )

    def start(self) -> MailFolder:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def received(self) -> int:
        return self._handler.received

    @property
    def duplicates(self) -> int:
        return self._handler.duplicates

    def count(self) -> int:
        """Messages kept (distinct Message-IDs)."""
        return sum(1 for _ in self.folder.glob("*.eml"))

    def __enter__(self) -> MailFolder:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
