"""`orbita demo`: a generated store, its example strategy, simulated weeks, real delivery to
local servers (an SMTP server keeping .eml files, an HTTP stand-in for SMS and push)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from orbita.channels import open_channels
from orbita.channels.email.sink import MailFolder
from orbita.channels.http_sink import HttpSink
from orbita.cli import generate
from orbita.cli.common import (
    JsonOption,
    WorkspaceOption,
    console,
    phased_progress,
    print_json,
    settings_for,
    user_errors,
)
from orbita.cli.strategy import read_strategy
from orbita.core.errors import UserError
from orbita.core.settings import Settings
from orbita.model.channels import Channel
from orbita.model.strategy import Strategy
from orbita.services.delivery import (
    BlockingSender,
    DeliveryReport,
    link_secret_for,
    prepare_delivery,
)
from orbita.services.generate import DEFAULT_END
from orbita.services.workspace import Workspace, init_workspace, open_workspace

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
DEMO_WORKSPACE = Path("orbita-demo")
DEMO_MARKER = "demo.json"  # marks a workspace the demo made, which a new demo replaces


@contextmanager
def local_delivery(
    *, settings: Settings, strategy: Strategy, base_dir: Path, workspace: Workspace
) -> Iterator[tuple[Callable[[datetime], DeliveryReport], MailFolder, HttpSink]]:
    """The strategy's channels pointed at local servers, and a sender on them."""
    mail = MailFolder(settings.workspace / "mail").start()
    sink = HttpSink().start()
    try:
        channels = {name: _local(config, mail, sink) for name, config in strategy.channels.items()}
        # The providers' tokens are read from variables the demo sets for its stand-ins.
        tokens = {
            name: "demo-token"
            for config in channels.values()
            for name in (getattr(config, "token_env", None), getattr(config, "password_env", None))
            if name
        }
        local = strategy.model_copy(update={"channels": channels})
        delivery = prepare_delivery(
            strategy=local,
            base_dir=base_dir,
            clients=open_channels(channels, env=tokens),
            worker_id="demo",
            link_secret=link_secret_for(settings=settings),
            seed=7,
        )
        with BlockingSender(delivery=delivery) as sender:
            yield (lambda now: sender.deliver_due(workspace=workspace, now=now)), mail, sink
    finally:
        sink.stop()
        mail.stop()


def _local(config: Channel, mail: MailFolder, sink: HttpSink) -> Channel:
    if config.type == "smtp":
        return config.model_copy(update={"host": "127.0.0.1", "port": mail.port, "tls": "none"})
    if config.type == "webhook":
        return config.model_copy(update={"url": sink.url})
    return config.model_copy(update={"base_url": sink.url})


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
    it over simulated weeks — messages delivered to a local SMTP server and an HTTP stand-in
    for SMS and push, customers answering them — and print what each journey did against
    its holdout."""
    # numpy, Ibis and the analytics: imported only where used
    from orbita.cli.demo_tables import demo_tables
    from orbita.services.demo import run_demo

    path = strategy_file or EXAMPLES / store.value / "strategy.yaml"
    with user_errors(workspace=workspace):
        if weeks * 7 >= days:
            raise UserError("--weeks must be shorter than --days: the rest is the history")
        content, parsed = read_strategy(path)
        settings = settings_for(workspace)
        _fresh(workspace)
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
        with (
            open_workspace(settings=settings) as opened,
            local_delivery(
                settings=settings, strategy=parsed, base_dir=path.parent, workspace=opened
            ) as (deliver, mail, sink),
            phased_progress("demo") as progress,
        ):
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
                deliver=deliver,
            )
            received = {"emails": mail.count(), "resent": mail.duplicates, "http": sink.received}
    if as_json:
        print_json({**dataclasses.asdict(report), "received": received})
        return
    demo_tables(console(), report)
    console().print(
        f"Received: {received['emails']:,} emails at the local SMTP server (as .eml files in "
        f"{mail.folder}), {received['http']:,} SMS and push at the local HTTP stand-in.",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _fresh(workspace: Path) -> None:
    if (workspace / DEMO_MARKER).exists():
        shutil.rmtree(workspace)  # the demo's own workspace from an earlier run
    elif workspace.exists() and any(workspace.iterdir()):
        raise UserError(
            f"{workspace} is not empty and not a demo workspace: the demo makes a new one "
            "(give --workspace an empty or new folder)"
        )
