"""How fast `orbita run` moves a store through simulated time (issue: months of a 100 K-customer
store in minutes).

    .venv/bin/python bench/simulate.py --customers 100000 --days 150 --weeks 8
    .venv/bin/python bench/simulate.py --customers 100000 --weeks 4 --generated /tmp/store-100k

Generates the clothing store, imports all but the last `--weeks` as history, applies
examples/clothing-store/strategy.yaml, then times the closed-loop run of the last weeks (the
demo's path: events stored and played through the journeys, schedules, daily segment
refreshes, due steps, the customers' answers). Prints the phases and the rates; the peer is
the bulk import of the same events as plain history (no journeys), measured in the same run.
`--generated DIR` keeps the generated store there and reuses it when it is already there
(generating 100 K customers takes minutes).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq

from orbita.core.settings import Settings
from orbita.model.strategy import parse_strategy
from orbita.services.demo import run_demo, split_events
from orbita.services.generate import DEFAULT_END, GenerateReport, generate_store
from orbita.services.importer import import_customers, import_events
from orbita.services.workspace import init_workspace, open_workspace

EXAMPLE = Path(__file__).parents[1] / "examples" / "clothing-store" / "strategy.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=150)
    parser.add_argument("--weeks", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--generated", type=Path, help="keep / reuse the generated store here")
    parser.add_argument(
        "--no-peer", action="store_true", help="skip the peer (minutes at 100 K customers)"
    )
    args = parser.parse_args()
    content = EXAMPLE.read_text()
    strategy = parse_strategy(content, source=str(EXAMPLE))
    with tempfile.TemporaryDirectory(prefix="orbita-bench-sim-") as tmp:
        root = Path(tmp)
        made = _generated(args, root)

        peer_seconds = _peer(args, made, root) if not args.no_peer else None

        settings = Settings(workspace=root / "workspace")
        init_workspace(settings=settings)
        with open_workspace(settings=settings) as opened:
            began = time.perf_counter()
            report = run_demo(
                workspace=opened,
                generated=made,
                strategy=strategy,
                content=content,
                source=str(EXAMPLE),
                end=DEFAULT_END,
                weeks=args.weeks,
                seed=args.seed,
            )
            total = time.perf_counter() - began
        run = report.run
        print(f"history import: {report.history.rows:,} events in {report.history.seconds:.1f} s")
        print(
            f"run: {args.weeks} simulated weeks, {run.events:,} events played "
            f"({report.responses:,} answers), {run.entered:,} entries, {run.advanced:,} runs "
            f"advanced, {run.messages:,} messages, {run.refreshes} refreshes"
        )
        print(f"whole demo path (import, apply, run): {total:.1f} s")
        run_seconds = total - report.history.seconds - report.customers.seconds
        print(
            f"run alone: {run_seconds:.1f} s = {run.events / run_seconds:,.0f} events/s, "
            f"{args.weeks * 7 / (run_seconds / 60):.1f} simulated days per minute"
            + (
                f"; vs plain import of the same events: {run_seconds / peer_seconds:.1f}x the time"
                if peer_seconds
                else ""
            )
        )
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in run.seconds.items())
        print(f"run phases: {phases}")
        print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _peer(args: argparse.Namespace, made: GenerateReport, root: Path) -> float:
    """The replayed weeks imported as plain history into a fresh workspace: the seconds."""
    start = DEFAULT_END - timedelta(weeks=args.weeks)
    _, replay = split_events(events_path=made.events_path, at=start, out=root / "split")
    peer = Settings(workspace=root / "peer")
    init_workspace(settings=peer)
    with open_workspace(settings=peer) as opened:
        import_customers(workspace=opened, path=made.customers_path)
        began = time.perf_counter()
        imported = import_events(workspace=opened, path=replay)
        peer_seconds = time.perf_counter() - began
    rate = imported.rows / peer_seconds
    print(f"peer: the same {imported.rows:,} events imported as history (no journeys) ")
    print(f"      in {peer_seconds:.1f} s = {rate:,.0f} events/s")
    return peer_seconds


def _generated(args: argparse.Namespace, root: Path) -> GenerateReport:
    out = args.generated or root / "generated"
    options = {"customers": args.customers, "days": args.days, "seed": args.seed}
    # The same arguments give the same files: a kept store is reused only when they match.
    marker = out / "bench-arguments.txt"
    started = time.perf_counter()
    if args.generated and marker.exists() and marker.read_text() == repr(options):
        customers_path = out / "customers.parquet"
        events_path = out / "events.parquet"
        made = GenerateReport(
            store="clothing-store",
            customers=args.customers,
            events=pq.read_metadata(events_path).num_rows,
            customers_path=customers_path,
            events_path=events_path,
            truth_path=out / "truth.json",
            revenue=0.0,
        )
        print(f"reused {made.customers:,} customers, {made.events:,} events from {out}")
        return made
    made = generate_store(store="clothing-store", out=out, **options)
    marker.write_text(repr(options))
    seconds = time.perf_counter() - started
    print(f"generated {made.customers:,} customers, {made.events:,} events in {seconds:.1f} s")
    return made


if __name__ == "__main__":
    main()
