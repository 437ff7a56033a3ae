"""`orbita customers show|delete`: one customer's profile and timeline, GDPR erasure.

While `orbita serve` holds the workspace's event store, these go through its HTTP API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    print_json,
    settings_for,
    to_plain,
    user_errors,
)
from orbita.cli.remote import ServerClient, running_server
from orbita.cli.render import customer_tables
from orbita.services.customers import delete_customer, get_customer
from orbita.services.workspace import open_workspace, read_keys

app = typer.Typer(help="Look up and erase customers.", no_args_is_help=True)
UserIdArgument = Annotated[str, typer.Argument(help="The customer's userId (or anonymousId).")]
LATEST_EVENTS = 50


@app.command("show")
def show(
    user_id: UserIdArgument,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Show a customer's profile, traits and latest events."""
    with user_errors():
        data = _customer(workspace_dir=workspace, user_id=user_id)
    if as_json:
        print_json(data)
    else:
        customer_tables(console(), data)


@app.command("delete")
def delete(
    user_id: UserIdArgument,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Erase a customer (GDPR): profile, identities, every event and segment membership."""
    if not yes:
        typer.confirm(
            f"Erase customer {user_id!r} with all their events? This cannot be undone",
            abort=True,
        )
    with user_errors():
        report = _erase(workspace_dir=workspace, user_id=user_id)
    if as_json:
        print_json(report)
    else:
        console().print(
            f"erased customer {report['user_id']} (#{report['customer_id']}): "
            f"{report['profiles']} profile(s), {report['identities']} id(s), "
            f"{report['events']:,} event(s), {report['memberships']:,} segment membership(s)",
            markup=False,
            highlight=False,
        )


def _customer(*, workspace_dir: Path, user_id: str) -> dict[str, Any]:
    settings = settings_for(workspace_dir)
    server = running_server(settings.workspace)
    if server is not None:
        with ServerClient(server=server, admin_key=read_keys(settings=settings).admin_key) as api:
            return api.get_customer(user_id)
    with open_workspace(settings=settings) as workspace:
        view = get_customer(workspace=workspace, user_id=user_id, latest=LATEST_EVENTS)
    plain: dict[str, Any] = to_plain(view)
    return plain


def _erase(*, workspace_dir: Path, user_id: str) -> dict[str, Any]:
    settings = settings_for(workspace_dir)
    server = running_server(settings.workspace)
    if server is not None:
        with ServerClient(server=server, admin_key=read_keys(settings=settings).admin_key) as api:
            return api.delete_customer(user_id)
    with open_workspace(settings=settings) as workspace:
        report = delete_customer(workspace=workspace, user_id=user_id)
    plain: dict[str, Any] = to_plain(report)
    return plain
