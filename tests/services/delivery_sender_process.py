"""A sender in its own process, for the crash test: `python delivery_sender_process.py
WORKSPACE STRATEGY WORKER` delivers until nothing is due, then exits 0."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from orbita.channels import close_channels, open_channels
from orbita.core.settings import Settings
from orbita.services.delivery import DeliveryPolicy, deliver_due, prepare_delivery
from orbita.services.strategy import load_strategy
from orbita.services.workspace import open_workspace


async def main(workspace_dir: Path, strategy_path: Path, worker: str) -> None:
    strategy = load_strategy(path=strategy_path)
    with open_workspace(settings=Settings(workspace=workspace_dir)) as workspace:
        clients = open_channels(strategy.channels, env=dict(os.environ))
        try:
            delivery = prepare_delivery(
                strategy=strategy,
                base_dir=strategy_path.parent,
                clients=clients,
                worker_id=worker,
                policy=DeliveryPolicy(batch_size=100),
            )
            while True:
                report = await deliver_due(
                    workspace=workspace, delivery=delivery, now=datetime.now(UTC)
                )
                print(report, flush=True)
                if report.claimed == 0:
                    break
        finally:
            await close_channels(clients)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]))
