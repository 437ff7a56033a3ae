"""`orbita bounces`: the bounce mailbox (an SMTP server for the VERP domain), reports
fetched elsewhere imported from .eml files, and the bounce webhook's secret."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from orbita.channels.email.bounces import BounceMailbox, NotABounceError, parse_report
from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    err_console,
    fail,
    print_json,
    settings_for,
    user_errors,
)
from orbita.core.errors import UserError
from orbita.model.bounces import Bounce
from orbita.model.channels import SmtpChannel
from orbita.services.apply import strategy_in_use
from orbita.services.bounces import BounceReport, process_bounces, webhook_secret_for
from orbita.services.workspace import open_workspace

app = typer.Typer(
    help="Bounces and complaints: the bounce mailbox, imported reports, the webhook's secret.",
    no_args_is_help=True,
)


def _verp_domains(workspace: Path) -> list[str]:
    """The domains of the strategy's VERP return paths (none: take mail for any domain)."""
    try:
        _, strategy = strategy_in_use(settings=settings_for(workspace))
    except UserError:
        return []
    return sorted(
        {
            channel.return_path.rpartition("@")[2].lower()
            for channel in strategy.channels.values()
            if isinstance(channel, SmtpChannel) and channel.return_path
        }
    )


@app.command()
def serve(
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="SMTP port to listen on.", min=1, max=65535)] = 2526,
    domain: Annotated[
        list[str] | None,
        typer.Option(help="Take reports for this domain (repeatable; default: the VERP ones)."),
    ] = None,
) -> None:
    """Run the bounce mailbox: reports sent to it suppress addresses as they arrive."""
    domains = domain or _verp_domains(workspace)
    stop = threading.Event()
    with (
        user_errors(workspace=workspace),
        open_workspace(settings=settings_for(workspace)) as opened,
    ):

        def process(bounces: list[Bounce]) -> None:
            report = process_bounces(workspace=opened, bounces=bounces, now=datetime.now(UTC))
            for outcome in report.outcomes:
                err_console().print(
                    f"{outcome.kind:<9} {outcome.address or '?':<40} {outcome.action}: "
                    f"{outcome.reason}",
                    markup=False,
                    highlight=False,
                )

        try:
            mailbox = BounceMailbox(process, domains=domains, host=host, port=port).start()
        except OSError as error:
            fail(f"cannot listen on {host}:{port}: {error.strerror or error}")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        where = ", ".join(domains) if domains else "any domain"
        err_console().print(
            f"Bounce mailbox on {host}:{port} for {where} (Ctrl+C stops it)", markup=False
        )
        try:
            stop.wait()
        finally:
            mailbox.stop()


@app.command("import")
def import_reports(
    files: Annotated[list[Path], typer.Argument(help=".eml files of bounce reports.")],
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
) -> None:
    """Process bounce reports fetched elsewhere (IMAP, a provider's export)."""
    bounces: list[Bounce] = []
    ignored: list[str] = []
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as error:
            fail(f"{path}: {error.strerror or error}")
        try:
            bounces.extend(parse_report(raw))
        except NotABounceError as error:
            ignored.append(f"{path}: {error}")
    with (
        user_errors(workspace=workspace),
        open_workspace(settings=settings_for(workspace)) as opened,
    ):
        report = process_bounces(workspace=opened, bounces=bounces, now=datetime.now(UTC))
    _show(report, ignored=ignored, as_json=as_json)


def _show(report: BounceReport, *, ignored: list[str], as_json: bool) -> None:
    if as_json:
        shown: dict[str, Any] = {
            "counts": dict(report.counts),
            "outcomes": report.outcomes,
            "not_reports": ignored,
        }
        print_json(shown)
        return
    out = console()
    for outcome in report.outcomes:
        out.print(
            f"{outcome.kind:<9} {outcome.address or '?':<40} {outcome.action}: {outcome.reason}",
            markup=False,
            highlight=False,
        )
    for line in ignored:
        err_console().print(f"not a bounce report: {line}", markup=False, highlight=False)


@app.command()
def secret(workspace: WorkspaceOption = DEFAULT_WORKSPACE) -> None:
    """Print the bounce webhook's shared secret (X-Orbita-Signature or ?token=)."""
    with user_errors(workspace=workspace):
        found = webhook_secret_for(settings=settings_for(workspace))
    console().print(found, markup=False, highlight=False)
