"""`orbita plan FILE` and `orbita apply FILE`: a strategy file against what the workspace runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
from orbita.model.strategy import Strategy, parse_strategy
from orbita.services.apply import ApplyReport, Plan, apply_strategy, plan_strategy
from orbita.services.workspace import open_workspace

FileArgument = Annotated[
    Path, typer.Argument(help="The strategy file (YAML).", dir_okay=False, exists=False)
]
SYMBOLS = {"added": "+", "changed": "~", "removed": "-"}


def read_strategy(path: Path) -> tuple[str, Strategy]:
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"no strategy file at {path}") from None
    return content, parse_strategy(content, source=str(path))


def plan(
    file: FileArgument,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Show what applying FILE would change; nothing is written."""
    with user_errors(workspace=workspace):
        _, strategy = read_strategy(file)
        with open_workspace(settings=settings_for(workspace)) as opened:
            found = plan_strategy(workspace=opened, strategy=strategy)
    if as_json:
        print_json(found)
        return
    _show_plan(found)


def apply(
    file: FileArgument,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Publish FILE as the workspace's strategy (a new version when anything changed)."""
    with user_errors(workspace=workspace):
        content, strategy = read_strategy(file)
        with open_workspace(settings=settings_for(workspace)) as opened:
            report = apply_strategy(
                workspace=opened, strategy=strategy, content=content, source=str(file)
            )
    if as_json:
        print_json({**_report_json(report)})
        return
    _show_plan(report.plan)
    out = console()
    if report.version is None:
        out.print("Nothing to apply: the workspace runs this strategy already.", markup=False)
        return
    journeys = ", ".join(f"{name} v{version}" for name, version in report.published)
    out.print(f"Applied as strategy version {report.version}.", markup=False)
    if journeys:
        out.print(f"Journeys published: {journeys}.", markup=False)
    if report.migrated:
        out.print(f"Runs moved to the new versions: {report.migrated:,}.", markup=False)


def _report_json(report: ApplyReport) -> dict[str, object]:
    return {
        "version": report.version,
        "plan": report.plan,
        "published": [{"journey": n, "version": v} for n, v in report.published],
        "migrated": report.migrated,
    }


def _show_plan(found: Plan) -> None:
    out = console()
    base = (
        "nothing applied yet"
        if found.current_version is None
        else f"strategy version {found.current_version}"
    )
    if found.empty:
        out.print(f"No changes against {base}.", markup=False)
        return
    out.print(f"Changes against {base}:", markup=False)
    table = Table("", "part", "name")
    for change in found.changes:
        table.add_row(SYMBOLS[change.action], change.part, change.name)
    out.print(table)
    if found.runs:
        runs = Table("journey", "version", "step", "customers", "on apply")
        for item in found.runs:
            outcome = (
                "move to the new version"
                if item.outcome == "migrate"
                else f"finish on version {item.version}"
            )
            runs.add_row(
                item.journey, str(item.version), item.node or "-", f"{item.customers:,}", outcome
            )
        out.print(runs)
