"""`orbita templates list|preview`: the strategy's messages, and exactly what one customer
would get from one of them (nothing is sent)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.table import Table

from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    print_json,
    settings_for,
    user_errors,
)
from orbita.core.errors import UserError
from orbita.services.apply import strategy_in_use
from orbita.services.delivery import preview_message
from orbita.services.templates import compile_templates, template_variables
from orbita.services.workspace import open_workspace

app = typer.Typer(help="Message templates: list them, preview one for a customer.")

StrategyOption = Annotated[
    Path | None,
    typer.Option(
        "--strategy",
        help="Strategy file (default: the applied one, else <workspace>/strategy.yaml).",
        dir_okay=False,
    ),
]


@app.command("list")
def list_(
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Each template: its channel, topic, variants and the variables it reads."""
    with user_errors():
        path, loaded = strategy_in_use(settings=settings_for(workspace), path=strategy)
        compiled = compile_templates(strategy=loaded, base_dir=path.parent)
    rows = [
        {
            "name": name,
            "channel": template.channel,
            "topic": template.topic,
            "variants": sorted(template.variants),
            "variables": sorted({v for vs in template_variables(template).values() for v in vs}),
        }
        for name, template in compiled.items()
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("template", "channel", "topic", "variants", "variables")
    for row in rows:
        table.add_row(
            str(row["name"]),
            str(row["channel"]),
            str(row["topic"]),
            ", ".join(row["variants"]) or "-",
            ", ".join(row["variables"]) or "-",
        )
    console().print(table)


@app.command()
def preview(
    name: Annotated[str, typer.Argument(help="The template's name in the strategy.")],
    customer: Annotated[str, typer.Option("--customer", help="A user id, or #<customer id>.")],
    variant: Annotated[str | None, typer.Option(help="The A/B arm to show.")] = None,
    properties: Annotated[
        str | None,
        typer.Option(help="The trigger event's properties as JSON, e.g. '{\"products\": [...]}'."),
    ] = None,
    html_out: Annotated[
        Path | None,
        typer.Option("--html-out", help="Also write the HTML to this file.", dir_okay=False),
    ] = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    strategy: StrategyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Render NAME exactly as CUSTOMER would get it."""
    with user_errors(workspace=workspace):
        try:
            props = orjson.loads(properties) if properties else {}
        except orjson.JSONDecodeError as error:
            raise UserError(f"--properties is not JSON: {error}") from None
        if not isinstance(props, dict):
            raise UserError("--properties must be a JSON object")
        path, loaded = strategy_in_use(settings=settings_for(workspace), path=strategy)
        with open_workspace(settings=settings_for(workspace)) as opened:
            shown = preview_message(
                workspace=opened,
                strategy=loaded,
                base_dir=path.parent,
                template=name,
                customer=customer,
                variant=variant,
                properties=props,
            )
        if html_out is not None and shown.message.html is not None:
            html_out.write_text(shown.message.html, encoding="utf-8")
    if as_json:
        print_json(shown)
        return
    out = console()
    message = shown.message
    for label, value in (
        ("to", shown.to),
        ("channel", shown.channel),
        ("variant", message.variant),
        ("subject", message.subject),
        ("preheader", message.preheader),
    ):
        if value:
            out.print(f"{label:<10} {value}", markup=False, highlight=False)
    out.print("")
    out.print(message.text or "", markup=False, highlight=False)
    if html_out is not None:
        out.print(f"(HTML written to {html_out})", markup=False, highlight=False)
