"""Talking to a running `orbita serve` of the same workspace.

DuckDB lets one process open the event store, so while a server runs, commands that read or
change customers go through its HTTP API (with the workspace's admin key) instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from orbita.core.errors import NotFoundError, UserError

SERVER_FILE = "server.json"


@dataclass(frozen=True, slots=True)
class RunningServer:
    url: str
    pid: int


def running_server(workspace: Path) -> RunningServer | None:
    """The server `<workspace>/server.json` names, if its process is alive."""
    try:
        data = orjson.loads((workspace / SERVER_FILE).read_bytes())
        server = RunningServer(url=str(data["url"]).rstrip("/"), pid=int(data["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if server.pid == os.getpid() or not _alive(server.pid):
        return None  # a stale file left by a server that was killed
    return server


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    return True


class ServerClient:
    """The admin endpoints the CLI needs, as plain calls."""

    def __init__(self, *, server: RunningServer, admin_key: str, timeout: float = 30.0) -> None:
        self.server = server
        self._http = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {admin_key}"},
            timeout=timeout,
        )

    def __enter__(self) -> ServerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self._http.close()

    def get_customer(self, user_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/customers/{quote(user_id, safe='')}")

    def delete_customer(self, user_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/customers/{quote(user_id, safe='')}")

    def _call(self, method: str, path: str) -> dict[str, Any]:
        try:
            response = self._http.request(method, path)
        except httpx.HTTPError as error:
            raise UserError(
                f"the server at {self.server.url} (pid {self.server.pid}) did not answer: {error}"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code == 404:
            raise NotFoundError(body.get("message") or "not found")
        if response.status_code >= 400:
            message = body.get("message") or response.reason_phrase
            raise UserError(f"the server answered {response.status_code}: {message}")
        if not isinstance(body, dict):
            raise UserError(f"the server at {self.server.url} answered something unexpected")
        return body
