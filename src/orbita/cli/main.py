"""`orbita`: the command line. Each command parses, calls one service, and renders."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from orbita.cli import (
    customers,
    deliver,
    generate,
    imports,
    journeys,
    run,
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
    phased_progress,
    print_json,
    settings_for,
    user_errors,
)
from orbita.cli.render import demo_tables
from orbita.cli.strategy import read_strategy
from orbita.core.errors import UserError
from orbita.services.generate import DEFAULT_END
from orbita.services.workspace import Keys, init_workspace, open_workspace, read_keys

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


EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
DEMO_WORKSPACE = Path("orbita-demo")
DEMO_MARKER = "demo.json"  # marks a workspace the demo made, which a new demo replaces


@app.command()
def demo(
    workspace: WorkspaceOption = DEMO_WORKSPACE,
    customers: generate.CustomersOption = 5_000,
    days: generate.DaysOption = 180,
    weeks: Annotated[int, typer.Option(min=1, help="Simulated weeks the strategy runs.")] = 8,
    seed: generate.SeedOption = 7,
    store: Annotated[
        generate.Store, typer.Option(help="Which generated store, with its example strategy.")
    ] = generate.Store.clothing_store,
    strategy_file: Annotated[
        Path | None,
        typer.Option("--strategy", help="Strategy (default: the store's example)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Generate a store (the clothing store, or the bank), apply its example strategy, run
    it over simulated weeks (the customers answer the messages), and print what each
    journey did against its holdout."""
    from orbita.services.demo import run_demo  # numpy and Ibis: imported only where used

    path = strategy_file or EXAMPLES / store.value / "strategy.yaml"
    with user_errors(workspace=workspace):
        if weeks * 7 >= days:
            raise UserError("--weeks must be shorter than --days: the rest is the history")
        content, parsed = read_strategy(path)
        settings = settings_for(workspace)
        if (workspace / DEMO_MARKER).exists():
            shutil.rmtree(workspace)  # the demo's own workspace from an earlier run
        elif workspace.exists() and any(workspace.iterdir()):
            raise UserError(
                f"{workspace} is not empty and not a demo workspace: the demo makes a new one "
                "(give --workspace an empty or new folder)"
            )
        init_workspace(settings=settings)
        (workspace / DEMO_MARKER).write_text('{"made_by": "orbita demo"}\n')
        out = settings.workspace / "generated" / f"{store.value}-{customers}x{days}-seed{seed}"
        made = generate.generate_files(
            store=store,
            customers=customers,
            days=days,
            seed=seed,
            out=out,
            fmt=generate.FileFormat.parquet,
        )
        with open_workspace(settings=settings) as opened, phased_progress("demo") as progress:
            report = run_demo(
                workspace=opened,
                generated=made,
                strategy=parsed,
                content=content,
                source=str(path),
                end=DEFAULT_END,
                weeks=weeks,
                seed=seed,
                progress=progress,
            )
    if as_json:
        print_json(report)
        return
    demo_tables(console(), report)


# After the commands above, so `orbita --help` lists them in the order a newcomer uses them.
app.add_typer(imports.app, name="import")
app.command("generate")(generate.generate)
app.add_typer(customers.app, name="customers")
app.add_typer(segments.app, name="segments")
app.command("stages")(segments.stages)
app.command("plan")(strategy.plan)
app.command("apply")(strategy.apply)
app.command("run")(run.run)
app.command("worker")(run.worker)
app.add_typer(journeys.app, name="journeys")
app.add_typer(templates.app, name="templates")
app.add_typer(deliver.app, name="deliver")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
