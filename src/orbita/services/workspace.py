"""A workspace: its directory, its stores and its keys."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from sqlalchemy import Engine, insert, select, update

from orbita.core.clock import Clock, SystemClock
from orbita.core.errors import UserError
from orbita.core.ids import new_api_key
from orbita.core.settings import Settings
from orbita.store.events import EventStore, open_event_store
from orbita.store.state import api_keys, create_state_engine, migrate, workspace_values

KeyKind = Literal["write", "admin"]


@dataclass(frozen=True, slots=True)
class Keys:
    write_key: str
    admin_key: str


class Workspace:
    """The opened stores of one workspace. Close it, or use it as a context manager."""

    def __init__(
        self, *, settings: Settings, clock: Clock, state: Engine, events: EventStore
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.state = state
        self.events = events
        with state.connect() as connection:
            rows = connection.execute(select(api_keys.c.kind, api_keys.c.key_hash)).all()
        self._key_kinds = {key_hash: kind for kind, key_hash in rows}

    def key_kind(self, key: str) -> KeyKind | None:
        kind = self._key_kinds.get(_hash(key))
        return "admin" if kind == "admin" else "write" if kind == "write" else None

    def close(self) -> None:
        self.events.close()
        self.state.dispose()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def init_workspace(*, settings: Settings) -> Keys:
    """Create the workspace (directory, schema, keys); on an existing one, return its keys."""
    settings.workspace.mkdir(parents=True, exist_ok=True)
    engine = create_state_engine(settings.state_url)
    try:
        migrate(engine)
        if settings.keys_path.exists():
            return read_keys(settings=settings)
        keys = Keys(write_key=new_api_key("wk"), admin_key=new_api_key("ak"))
        with engine.begin() as connection:
            now = SystemClock().now()
            connection.execute(
                insert(api_keys),
                [
                    {"kind": "write", "key_hash": _hash(keys.write_key), "created_at": now},
                    {"kind": "admin", "key_hash": _hash(keys.admin_key), "created_at": now},
                ],
            )
        _write_private(
            settings.keys_path, {"write_key": keys.write_key, "admin_key": keys.admin_key}
        )
        return keys
    finally:
        engine.dispose()


def read_keys(*, settings: Settings) -> Keys:
    try:
        data = json.loads(settings.keys_path.read_text())
        return Keys(write_key=data["write_key"], admin_key=data["admin_key"])
    except FileNotFoundError:
        raise _not_initialised(settings.workspace) from None
    except (ValueError, KeyError):
        raise UserError(
            f"{settings.keys_path} is damaged: it should hold the workspace keys"
        ) from None


def open_workspace(*, settings: Settings, clock: Clock | None = None) -> Workspace:
    """Open an initialised workspace; its schema is migrated to the newest version."""
    if not settings.keys_path.exists():
        raise _not_initialised(settings.workspace)
    state = create_state_engine(settings.state_url)
    try:
        migrate(state)
        events = open_event_store(settings)
    except BaseException:
        state.dispose()
        raise
    return Workspace(settings=settings, clock=clock or SystemClock(), state=state, events=events)


def check_key(*, workspace: Workspace, key: str, kind: KeyKind) -> bool:
    """Whether `key` may act as `kind`: an admin key may also ingest, a write key only ingests."""
    found = workspace.key_kind(key)
    return found == "admin" or found == kind


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _write_private(path: Path, data: dict[str, str]) -> None:
    # The keys are secrets: readable by the owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)


def _not_initialised(workspace: Path) -> UserError:
    return UserError(
        f"no workspace at {workspace}: run `orbita init --workspace {workspace}` first"
    )


# --- named values (the simulated clock, the scheduler's mark) ------------------------------


def read_value(*, workspace: Workspace, key: str) -> dict[str, Any] | None:
    query = select(workspace_values.c.value).where(workspace_values.c.key == key)
    with workspace.state.connect() as connection:
        value: dict[str, Any] | None = connection.execute(query).scalar()
    return value


def write_value(*, workspace: Workspace, key: str, value: dict[str, Any], now: datetime) -> None:
    values = {"value": value, "updated_at": now}
    with workspace.state.begin() as connection:
        changed = connection.execute(
            update(workspace_values).where(workspace_values.c.key == key).values(**values)
        ).rowcount
        if not changed:
            connection.execute(insert(workspace_values).values(key=key, **values))
