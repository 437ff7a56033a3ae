"""`orbita generate`: a synthetic store's customers and events, into files or the workspace."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    phased_progress,
    print_json,
    progress_bar,
    settings_for,
    user_errors,
)
from orbita.cli.render import import_line
from orbita.core.errors import UserError
from orbita.services.importer import ImportReport, import_customers, import_events
from orbita.services.workspace import init_workspace, open_workspace

if TYPE_CHECKING:
    from orbita.services.generate import GenerateReport


class Store(StrEnum):
    clothing_store = "clothing-store"
    bank = "bank"


class FileFormat(StrEnum):
    parquet = "parquet"
    csv = "csv"
    jsonl = "jsonl"


CustomersOption = Annotated[int, typer.Option("--customers", "-n", help="How many customers.")]
DaysOption = Annotated[int, typer.Option("--days", "-d", help="Days of history.")]
SeedOption = Annotated[
    int, typer.Option("--seed", "-s", help="Random seed (same seed, same data).")
]


@dataclass(frozen=True, slots=True)
class Loaded:
    generated: GenerateReport
    customers: ImportReport
    events: ImportReport


def generate(
    store: Annotated[Store, typer.Argument(help="Which example business to simulate.")],
    customers: CustomersOption = 10_000,
    days: DaysOption = 365,
    seed: SeedOption = 1,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            file_okay=False,
            help="Write the files here and import nothing (default: load into the workspace).",
        ),
    ] = None,
    fmt: Annotated[FileFormat, typer.Option("--format", "-f", help="File format.")] = (
        FileFormat.parquet
    ),
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Generate a synthetic store's customers and events (deterministic for a seed)."""
    with user_errors(workspace=workspace):
        if out is not None:
            report = generate_files(
                store=store, customers=customers, days=days, seed=seed, out=out, fmt=fmt
            )
            if as_json:
                print_json(report)
            else:
                console().print(_generated_line(report), markup=False, highlight=False)
            return
        loaded = generate_into_workspace(
            workspace=workspace, store=store, customers=customers, days=days, seed=seed, fmt=fmt
        )
    if as_json:
        print_json(loaded)
    else:
        show_loaded(loaded)


def generate_into_workspace(
    *, workspace: Path, store: Store, customers: int, days: int, seed: int, fmt: FileFormat
) -> Loaded:
    """Generate under `<workspace>/generated/` and import both files into the workspace."""
    settings = settings_for(workspace)
    init_workspace(settings=settings)
    out = settings.workspace / "generated" / f"{store.value}-{customers}x{days}-seed{seed}"
    generated = generate_files(
        store=store, customers=customers, days=days, seed=seed, out=out, fmt=fmt
    )
    with open_workspace(settings=settings) as opened:
        with phased_progress("customers") as progress:
            customers_report = import_customers(
                workspace=opened, path=generated.customers_path, progress=progress
            )
        with phased_progress("events") as progress:
            events_report = import_events(
                workspace=opened, path=generated.events_path, progress=progress
            )
    return Loaded(generated=generated, customers=customers_report, events=events_report)


def generate_files(
    *, store: Store, customers: int, days: int, seed: int, out: Path, fmt: FileFormat
) -> GenerateReport:
    # Imported here: the simulation's numpy code is not needed by other commands.
    from orbita.services.generate import generate_store

    if customers < 1 or days < 1:
        raise UserError("--customers and --days must be at least 1")
    with progress_bar(f"generating {store.value}") as progress:
        return generate_store(
            store=store.value,
            customers=customers,
            days=days,
            seed=seed,
            out=out,
            fmt=fmt.value,
            progress=progress,
        )


def _generated_line(report: GenerateReport) -> str:
    return (
        f"{report.store}: {report.customers:,} customers, {report.events:,} events "
        f"-> {report.customers_path}, {report.events_path}"
    )


def show_loaded(loaded: Loaded) -> None:
    out = console()
    out.print(_generated_line(loaded.generated), markup=False, highlight=False)
    out.print(import_line(loaded.customers), markup=False, highlight=False)
    out.print(import_line(loaded.events), markup=False, highlight=False)
