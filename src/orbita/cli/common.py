"""What every command shares: the workspace option, error handling, output helpers."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from orbita.cli.remote import running_server
from orbita.core.errors import StoreLockedError, UserError
from orbita.core.settings import Settings

WorkspaceOption = Annotated[
    Path,
    typer.Option(
        "--workspace",
        "-w",
        envvar="ORBITA_WORKSPACE",
        help="Workspace directory.",
        show_default=True,
        file_okay=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
DEFAULT_WORKSPACE = Path("orbita-data")

# User mistakes exit 2 (as a command-line usage error does); 1 is left for failures.
USER_ERROR_EXIT = 2


def console() -> Console:
    return Console()


def err_console() -> Console:
    return Console(stderr=True)


def settings_for(workspace: Path) -> Settings:
    """The settings from ORBITA_* variables, with the workspace the command was given."""
    return Settings(workspace=workspace)


@contextmanager
def user_errors(*, workspace: Path | None = None) -> Iterator[None]:
    """A user's mistake becomes one line on stderr and exit code 2, never a traceback.

    Given the workspace, a store held by a running `orbita serve` is named as such.
    """
    try:
        yield
    except StoreLockedError as error:
        server = running_server(workspace) if workspace is not None else None
        if server is None:
            fail(str(error))
        else:
            fail(
                f"`orbita serve` (pid {server.pid}, {server.url}) has this workspace's event "
                "store open, and DuckDB lets one process use it: stop the server first, "
                f"or send events to {server.url}/v1/batch"
            )
    except UserError as error:
        fail(str(error))
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as error:
        fail(f"{error.strerror or error}: {error.filename}")


def fail(message: str) -> None:
    # No rich markup: file names and messages may contain brackets.
    line = " ".join(message.split())
    err_console().print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(USER_ERROR_EXIT)


def print_json(value: Any) -> None:
    """Plain JSON on stdout (dataclasses and datetimes included), for scripts to read."""
    data = orjson.dumps(
        value,
        default=_jsonable,
        option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS,
    )
    sys.stdout.write(data.decode() + "\n")
    sys.stdout.flush()


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "items"):  # read-only mappings
        return dict(value.items())
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


@contextmanager
def progress_bar(description: str, *, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields `update(done, total)`."""
    if not enabled:
        yield lambda _done, _total: None
        return
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)

        yield update


@contextmanager
def phased_progress(
    description: str, *, enabled: bool = True
) -> Iterator[Callable[[str, int, int], None]]:
    """Like `progress_bar`, with a phase shown in front ("validating", "storing")."""
    if not enabled:
        yield lambda _phase, _done, _total: None
        return
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err_console(),
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(f"{description}: {phase}", total=total or None)
            bar.update(tasks[phase], completed=done, total=total or None)

        yield update


def to_plain(value: Any) -> Any:
    """A service's frozen value as plain JSON data (the shape the HTTP API answers)."""
    return orjson.loads(orjson.dumps(value, default=_jsonable, option=orjson.OPT_UTC_Z))


def parse_moment(text: str, *, option: str) -> datetime:
    """A command-line date and time: ISO 8601 with a zone (never a naive time)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"{option}: {text!r} is not a date and time (2026-03-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        raise UserError(f"{option}: {text!r} needs a time zone, such as Z or +02:00")
    return moment
