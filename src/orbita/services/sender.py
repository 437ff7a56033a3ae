"""A sender running beside a server (`orbita serve` with `ORBITA_DELIVER_INTERVAL`): due
outbox messages sent as soon as the journeys queue them, on the applied strategy's
channels, opened again after each `orbita apply`.

It runs in a thread of its own with its own event loop, so the server's requests never
wait behind SMTP conversations or the sender's store writes.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from orbita.core.errors import UserError
from orbita.model.delivery import ChannelClient
from orbita.model.strategy import Strategy
from orbita.services.delivery import Delivery, deliver_due, prepare_delivery
from orbita.services.tracking import link_secret_for
from orbita.services.work import LiveJourneys
from orbita.services.workspace import Workspace

log = logging.getLogger("orbita.sender")

OpenClients = Callable[[Strategy], Mapping[str, ChannelClient]]


class BackgroundSender:
    """`start()` it once the server listens, `stop()` it before the workspace closes.

    `open_clients` opens the channels of a strategy (the edge's `open_channels`: services
    do not import channels). Message events (`Email Sent`…) reach `journeys` as stored."""

    def __init__(
        self,
        *,
        workspace: Workspace,
        journeys: LiveJourneys,
        open_clients: OpenClients,
        interval: float,
        worker_id: str,
    ) -> None:
        self.workspace = workspace
        self.journeys = journeys
        self.open_clients = open_clients
        self.interval = interval
        self.worker_id = worker_id
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orbita-sender", daemon=True)
        self._delivery: Delivery | None = None
        self._version: int | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        with asyncio.Runner() as runner:
            runner.run(self._loop())

    async def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                claimed = 0
                try:
                    delivery = await self._current()
                    if delivery is not None:
                        report = await deliver_due(
                            workspace=self.workspace,
                            delivery=delivery,
                            now=self.workspace.clock.now(),
                        )
                        claimed, self.sent = report.claimed, self.sent + report.sent
                except Exception:
                    log.exception("sender pass failed; trying again")
                if claimed == 0:
                    await asyncio.sleep(self.interval)
        finally:
            await self._close()

    async def _current(self) -> Delivery | None:
        """The delivery of the applied strategy; None before the first apply."""
        self.journeys.current()  # loads the newest applied version
        applied = self.journeys.applied
        if applied is None:
            return None
        if self._version != applied.version:
            await self._close()
            self._version = applied.version  # a broken one is not retried every pass
            clients = self.open_clients(applied.strategy)
            try:
                self._delivery = prepare_delivery(
                    strategy=applied.strategy,
                    base_dir=Path(applied.source).parent,
                    clients=clients,
                    worker_id=self.worker_id,
                    link_secret=link_secret_for(settings=self.workspace.settings),
                    public_url=self.workspace.settings.public_url,
                    on_events=self.journeys.on_stored,
                )
            except UserError:
                for client in clients.values():
                    await client.close()
                log.exception("strategy version %s cannot be sent", applied.version)
                return None
        return self._delivery

    async def _close(self) -> None:
        if self._delivery is not None:
            for client in self._delivery.clients.values():
                await client.close()
            self._delivery.close_journal()
            self._delivery = None
