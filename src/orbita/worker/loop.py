"""`orbita worker`: journeys on the wall clock, one pass at a time, and (with `deliver`) a
sender on the strategy's channels, opened again after each `orbita apply`."""

from __future__ import annotations

import os
from pathlib import Path

from orbita.channels import open_channels
from orbita.core.errors import UserError
from orbita.core.settings import Settings
from orbita.services.delivery import BlockingSender, link_secret_for, prepare_delivery
from orbita.services.work import LiveJourneys
from orbita.services.workspace import Workspace


class WorkerLoop:
    def __init__(
        self, *, workspace: Workspace, settings: Settings, name: str, batch: int, deliver: bool
    ) -> None:
        self.workspace, self.settings, self.name, self.batch = workspace, settings, name, batch
        self.live = LiveJourneys(workspace=workspace)
        self.deliver = deliver
        self.sender: BlockingSender | None = None
        self._sender_version: int | None = None
        self.advanced = self.sent = 0

    def once(self) -> bool:
        """One pass: scheduled entries, a batch of due steps, a batch of due messages.
        Whether it found anything to do."""
        now = self.workspace.clock.now()
        report = self.live.work(now=now, worker_id=self.name, batch=self.batch, max_batches=1)
        if report is None:
            raise UserError("no strategy is applied to this workspace yet: run `orbita apply FILE`")
        self.advanced += report.advanced
        claimed = 0
        sender = self._sender() if self.deliver else None
        if sender is not None:
            delivered = sender.deliver_due(workspace=self.workspace, now=now, max_batches=1)
            self.sent += delivered.sent
            claimed = delivered.claimed
        return report.advanced > 0 or claimed > 0

    def _sender(self) -> BlockingSender:
        applied = self.live.applied
        assert applied is not None  # a pass ran: a strategy is applied
        if self.sender is None or self._sender_version != applied.version:
            self.close()
            delivery = prepare_delivery(
                strategy=applied.strategy,
                base_dir=Path(applied.source).parent,
                clients=open_channels(applied.strategy.channels, env=dict(os.environ)),
                worker_id=self.name,
                link_secret=link_secret_for(settings=self.settings),
                public_url=self.settings.public_url,
                on_events=self.live.on_stored,
            )
            self.sender, self._sender_version = BlockingSender(delivery=delivery), applied.version
        return self.sender

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()
            self.sender = None
