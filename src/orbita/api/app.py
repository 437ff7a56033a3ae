"""The FastAPI application: routers, error handlers, and the lifespan that opens the stores."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

import orbita
from orbita.api import (
    analytics,
    analytics_experiments,
    analytics_ltv,
    broadcasts,
    customers,
    delivery,
    health,
    ingest,
    journeys,
    segments,
    tracking,
)
from orbita.api.deps import ApiContext
from orbita.api.errors import install_error_handlers
from orbita.channels import open_channels
from orbita.core.settings import Settings
from orbita.services.ingest import BatchPreparer, Ingestor
from orbita.services.sender import BackgroundSender
from orbita.services.work import LiveJourneys
from orbita.services.workspace import Workspace, open_workspace


def create_app(*, settings: Settings, workspace: Workspace | None = None) -> FastAPI:
    """The API of one workspace.

    Without `workspace` the lifespan opens (and at shutdown closes) the one `settings` name;
    a given workspace stays the caller's to close. The ingestor is always the app's own.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened: Workspace = (
            workspace if workspace is not None else await run_in_threadpool(_open, settings)
        )
        try:
            live = LiveJourneys(workspace=opened)
            ingestor = Ingestor(
                workspace=opened,
                max_batch_events=settings.ingest_max_batch_events,
                on_stored=live.on_stored,  # API events reach the journeys as they are stored
            )
            ingestor.start()
            preparer = BatchPreparer(workers=settings.parse_workers)
            schedule: asyncio.Task[None] | None = None
            worker: asyncio.Task[None] | None = None
            sender = _sender(settings, opened, live) if settings.deliver_interval > 0 else None
            mailbox = delivery.bounce_mailbox(settings, opened, live)
            try:
                app.state.orbita = context = ApiContext(
                    settings=settings,
                    workspace=opened,
                    ingestor=ingestor,
                    preparer=preparer,
                    journeys=live,
                )
                if settings.refresh_interval > 0:
                    schedule = asyncio.create_task(
                        segments.refresh_every(context, seconds=settings.refresh_interval)
                    )
                if settings.work_interval > 0:
                    worker = asyncio.create_task(
                        journeys.work_every(context, seconds=settings.work_interval)
                    )
                if sender is not None:
                    sender.start()
                if mailbox is not None:
                    mailbox.start()
                yield
            finally:
                if mailbox is not None:
                    await run_in_threadpool(mailbox.stop)
                if sender is not None:
                    await run_in_threadpool(sender.stop)
                for task in (schedule, worker):
                    if task is not None:
                        task.cancel()
                app.state.orbita = None
                await run_in_threadpool(preparer.close)
                # Waits for the writer to drain: requests already answered 200 are durable.
                await run_in_threadpool(ingestor.close)
        finally:
            if workspace is None:
                opened.close()

    app = FastAPI(
        title="Orbita",
        version=orbita.__version__,
        summary="Customer-engagement engine: Segment-compatible ingestion, customers, segments "
        "and journeys.",
        lifespan=lifespan,
    )
    app.state.orbita = None
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(ingest.router)
    app.include_router(customers.router)
    app.include_router(segments.router)
    app.include_router(journeys.router)
    app.include_router(analytics.router)
    app.include_router(analytics_experiments.router)
    app.include_router(analytics_ltv.router)
    app.include_router(broadcasts.router)
    app.include_router(tracking.router)
    app.include_router(delivery.router)
    return app


def _sender(settings: Settings, workspace: Workspace, live: LiveJourneys) -> BackgroundSender:
    """The server's own sender (ORBITA_DELIVER_INTERVAL), on the applied strategy's channels."""
    return BackgroundSender(
        workspace=workspace,
        journeys=live,
        open_clients=lambda strategy: open_channels(strategy.channels, env=dict(os.environ)),
        interval=settings.deliver_interval,
        worker_id=f"serve:{socket.gethostname()}:{settings.port}",
    )


def _open(settings: Settings) -> Workspace:
    return open_workspace(settings=settings)
