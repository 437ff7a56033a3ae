"""`orbita serve`: the API under uvicorn (uvloop + httptools, one process).

While it runs, `<workspace>/server.json` says where (`{"url": …, "pid": …}`), so the CLI can
send work to a running server instead of opening the workspace's stores itself (DuckDB lets
one process hold them).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from orbita.api.app import create_app
from orbita.core.errors import UserError
from orbita.core.settings import Settings
from orbita.services.workspace import open_workspace

log = logging.getLogger("orbita.api")


def server_config(
    app: FastAPI, *, access_log: bool = False, configure_logging: bool = True
) -> uvicorn.Config:
    """uvloop + httptools: measured faster than the defaults (DESIGN.md).

    `configure_logging=False` leaves logging as the host process set it (tests, embedding).
    """
    extra: dict[str, Any] = {} if configure_logging else {"log_config": None}
    return uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        workers=1,
        access_log=access_log,  # one log line a request costs throughput at thousands a second
        server_header=False,
        proxy_headers=False,
        log_level="info",
        **extra,
    )


def bind(*, host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port), or a UserError that says why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    # A wildcard address is not one to connect to: the CLI on this machine uses loopback.
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Server(uvicorn.Server):
    """uvicorn's server that says when it listens (server.json, the `ready` callback)."""

    def __init__(self, config: uvicorn.Config, *, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises SIGINT/SIGTERM after its graceful shutdown, which would end the
        # process before serve() cleans up (server.json, the stores): stop, then return.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self._on_started()


def serve(
    *,
    settings: Settings,
    host: str,
    port: int,
    ready: Callable[[str], None] | None = None,
    access_log: bool = False,
) -> None:
    """Serve until SIGINT/SIGTERM. `ready(url)` is called once requests are accepted.

    The workspace is opened before listening, so a locked store or a missing workspace is a
    clear UserError here rather than a failed startup inside uvicorn.
    """
    info_path = settings.workspace / "server.json"
    with open_workspace(settings=settings) as workspace:
        sock = bind(host=host, port=port)
        url = url_of(sock)

        def started() -> None:
            _write_info(info_path, {"url": url, "pid": os.getpid()})
            log.info("Orbita API on %s (workspace %s)", url, settings.workspace)
            if ready is not None:
                ready(url)

        app = create_app(settings=settings, workspace=workspace)
        server = _Server(server_config(app, access_log=access_log), on_started=started)
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            _remove_info(info_path)


def _write_info(path: Path, info: dict[str, object]) -> None:
    # Written whole then renamed: a reader never sees half a file.
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(info))
    partial.replace(path)


def _remove_info(path: Path) -> None:
    # Only ours: a second server may have written it since (it would own the workspace then).
    with contextlib.suppress(FileNotFoundError, ValueError, OSError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
