"""`orbita`: the command line. Each command parses, calls one service, and renders."""

from __future__ import annotations

from typing import Annotated

import typer

from orbita.cli import (
    analytics,
    bounces,
    broadcasts,
    customers,
    deliver,
    demo,
    generate,
    imports,
    journeys,
    kpis,
    run,
    schema,
    segments,
    strategy,
    templates,
)
from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    err_console,
    print_json,
    settings_for,
    user_errors,
)
from orbita.services.workspace import Keys, init_workspace, read_keys

app = typer.Typer(
    name="orbita",
    help="Orbita: CRM strategy as code. Collect events, segment, run journeys, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold keys and customer data
)


@app.command()
def init(workspace: WorkspaceOption = DEFAULT_WORKSPACE, as_json: JsonOption = False) -> None:
    """Create the workspace (stores and a write and an admin key) and print its keys."""
    with user_errors():
        keys = init_workspace(settings=settings_for(workspace))
    _show_keys(keys, as_json=as_json, workspace=str(workspace))


@app.command()
def keys(workspace: WorkspaceOption = DEFAULT_WORKSPACE, as_json: JsonOption = False) -> None:
    """Print the workspace's write key (ingestion) and admin key (everything else)."""
    with user_errors():
        found = read_keys(settings=settings_for(workspace))
    _show_keys(found, as_json=as_json, workspace=str(workspace))


def _show_keys(found: Keys, *, as_json: bool, workspace: str) -> None:
    if as_json:
        print_json({"write_key": found.write_key, "admin_key": found.admin_key})
        return
    out = console()
    out.print(f"workspace  {workspace}", markup=False, highlight=False)
    out.print(f"write key  {found.write_key}", markup=False, highlight=False)
    out.print(f"admin key  {found.admin_key}", markup=False, highlight=False)


@app.command()
def serve(
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: ORBITA_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port (default: ORBITA_PORT or 8765; 0 picks a free one).")
    ] = None,
) -> None:
    """Run the HTTP API (and, as they land, the UI and workers) on this workspace."""
    from orbita.api.server import serve as run_server  # the API's imports only when serving

    settings = settings_for(workspace)

    def ready(url: str) -> None:
        err_console().print(f"Orbita is listening on {url} (Ctrl+C stops it)", markup=False)

    with user_errors():
        run_server(
            settings=settings,
            host=host if host is not None else settings.host,
            port=port if port is not None else settings.port,
            ready=ready,
        )


# After the commands above, so `orbita --help` lists them in the order a newcomer uses them.
app.add_typer(imports.app, name="import")
app.command("demo")(demo.demo)
app.command("generate")(generate.generate)
app.add_typer(customers.app, name="customers")
app.add_typer(segments.app, name="segments")
app.command("stages")(segments.stages)
app.command("kpis")(kpis.kpis)
app.command("plan")(strategy.plan)
app.command("apply")(strategy.apply)
app.command("schema")(schema.schema)
app.command("run")(run.run)
app.command("worker")(run.worker)
app.add_typer(journeys.app, name="journeys")
app.add_typer(templates.app, name="templates")
app.add_typer(broadcasts.app, name="broadcasts")
app.add_typer(deliver.app, name="deliver")
app.add_typer(bounces.app, name="bounces")
app.add_typer(analytics.app, name="analytics")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
