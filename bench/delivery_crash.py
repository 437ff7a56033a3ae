"""Kill the sender (SIGKILL) while it works through the queue, start it again: every email
arrives at the SMTP server exactly once (by Message-ID), none is lost (issue 5, full size).

    .venv/bin/python bench/delivery_crash.py [--emails 100000] [--kills 5] [--connections 8]
                                             [--postgres URL] [--seed 5]

Queues `--emails` cart reminders the real way (bench/delivery.py's strategy, MJML and
queue: customers identified, `Product Added` ingested, the journey advanced), starts an
aiosmtpd server in its own process that records every Message-ID it receives, then runs
`orbita deliver` as a separate OS process (tracking on, as the CLI does), SIGKILLs it
`--kills` times at random moments (after a random number of messages has arrived, plus a
random 0-50 ms), starts it again each time with the same worker id, and lets the last
one finish. It then compares what the server received with the outbox.

A kill in the one known gap (services/delivery.py's docstring: microseconds before SMTP's
final dot is written) loses that message; its row says `unconfirmed`, and such a loss is
reported apart. Exit code 1 when a message arrived twice, when one is lost that no
`unconfirmed` row explains, or when a sender run failed on its own.

With `--postgres URL` the state is in a scratch database created on that server (and
dropped afterwards); events stay in the workspace's DuckDB file, as in bench/delivery.py.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import func, select

# bench/delivery.py: the same strategy, MJML and queueing; this file adds only the kills.
from delivery import MJML, free_port, load_average, queue, strategy_text
from orbita.core.settings import Settings
from orbita.model.strategy import parse_strategy
from orbita.services.workspace import init_workspace, open_workspace
from orbita.store.state import delivery_attempts, outbox

WORKER = "crash-bench"


# --- the server, in its own process ---------------------------------------------------------


class Recorder:
    """Counts messages (shared with the bench, which polls it to time its kills) and keeps
    every Message-ID received, repeats included."""

    def __init__(self, count: Any) -> None:
        self.count = count
        self.ids: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        head = content[: content.find(b"\r\n\r\n")]
        start = head.lower().find(b"message-id:")
        found = b"(none)"
        if start >= 0:
            end = head.find(b"\r\n", start)
            found = head[start + len(b"message-id:") : end if end >= 0 else None].strip()
        self.ids.append(found)
        self.count.value += 1
        return "250 OK"


def serve(port: int, count: Any, control: Connection) -> None:
    from aiosmtpd.controller import Controller

    recorder = Recorder(count)
    controller = Controller(recorder, hostname="127.0.0.1", port=port, data_size_limit=0)
    controller.start()
    control.send("ready")
    while control.recv() != "stop":
        # The list is appended to on the controller's thread; a copy is enough here.
        control.send(list(recorder.ids))
    controller.stop()


# --- the sender runs ------------------------------------------------------------------------


@dataclass
class Run:
    number: int
    seconds: float
    received_before: int
    received_after: int
    outcome: str  # "killed at N" | "finished" | "exited N"


def start_sender(folder: Path, settings: Settings, run: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if settings.database_url:
        env["ORBITA_DATABASE_URL"] = settings.database_url
    orbita = Path(sys.executable).with_name("orbita")
    command = [str(orbita), "deliver", "--workspace", str(settings.workspace)]
    command += ["--strategy", str(folder / "strategy.yaml"), "--worker-id", WORKER]
    return subprocess.Popen(
        command,
        env=env,
        stdout=(folder / f"sender-{run}.out").open("wb"),
        stderr=(folder / f"sender-{run}.err").open("wb"),
    )


def run_senders(
    folder: Path, settings: Settings, count: Any, emails: int, kills: int, rng: random.Random
) -> tuple[list[Run], bool]:
    """`kills` runs killed after a random number of arrivals, then one run to the end."""
    low, high = max(1, emails // 20), max(2, emails * 19 // 20)
    points = sorted(rng.randrange(low, high) for _ in range(kills))
    runs: list[Run] = []
    for number, point in enumerate([*points, None], start=1):
        before = count.value
        started = time.perf_counter()
        sender = start_sender(folder, settings, number)
        if point is not None:
            # At least one new arrival per run, so that every kill lands while sending.
            point = max(point, before + 1)
            last_progress, seen = time.monotonic(), before
            while count.value < point and sender.poll() is None:
                if count.value != seen:
                    last_progress, seen = time.monotonic(), count.value
                if time.monotonic() - last_progress > 600:
                    sender.kill()
                    raise SystemExit(f"run {number}: no message arrived for 600 s")
                time.sleep(0.001)
            if sender.poll() is None:
                time.sleep(rng.uniform(0, 0.05))
                os.kill(sender.pid, signal.SIGKILL)
                sender.wait()
                outcome = f"killed after {point:,} arrivals"
            else:
                outcome = f"finished before its kill point ({sender.returncode})"
        else:
            sender.wait()
            outcome = "finished" if sender.returncode == 0 else f"exited {sender.returncode}"
        seconds = time.perf_counter() - started
        runs.append(Run(number, seconds, before, count.value, outcome))
        print(
            f"run {number}: {seconds:7.1f} s, {count.value - before:>7,} messages arrived, "
            f"{outcome}",
            flush=True,
        )
        if sender.returncode not in (0, -signal.SIGKILL):
            err = (folder / f"sender-{number}.err").read_text()[-3000:]
            print(f"sender run {number} failed (exit {sender.returncode}):\n{err}")
            return runs, False
        if point is None or sender.returncode == 0:
            break
    return runs, True


# --- the check ------------------------------------------------------------------------------


def key_of(message_id: bytes) -> str:
    """`<key@domain>` -> key (the sender derives Message-IDs from the idempotency key)."""
    return message_id.decode(errors="replace").strip("<>").partition("@")[0]


def check(settings: Settings, ids: list[bytes]) -> int:
    received = Counter(key_of(found) for found in ids)
    with open_workspace(settings=settings) as workspace, workspace.state.connect() as db:
        rows = {
            row.idempotency_key: row
            for row in db.execute(
                select(outbox.c.outbox_id, outbox.c.idempotency_key, outbox.c.status,
                       outbox.c.result, outbox.c.attempts)
            )
        }  # fmt: skip
        attempts = dict(
            db.execute(
                select(delivery_attempts.c.outcome, func.count()).group_by(
                    delivery_attempts.c.outcome
                )
            ).all()
        )
    statuses = Counter(
        f"{row.status} ({(row.result or {}).get('outcome', '-')})" for row in rows.values()
    )
    unconfirmed = {
        key for key, row in rows.items() if (row.result or {}).get("outcome") == "unconfirmed"
    }
    duplicates = {key: n for key, n in received.items() if n > 1}
    unknown = {key: n for key, n in received.items() if key not in rows}
    missing = sorted(set(rows) - set(received))
    explained = [key for key in missing if key in unconfirmed]
    lost = [key for key in missing if key not in unconfirmed]

    print(f"emails queued (outbox rows):   {len(rows):>9,}")
    print(f"messages the server received:  {len(ids):>9,}")
    print(f"distinct Message-IDs:          {len(received):>9,}")
    print(f"duplicates:                    {len(duplicates):>9,}")
    for key, n in sorted(duplicates.items())[:50]:
        row = rows.get(key)
        where = f"outbox {row.outbox_id} {row.status} {row.result}" if row else "no outbox row"
        print(f"  {key}: {n} times; {where}")
    if unknown:
        print(f"Message-IDs with no outbox row: {len(unknown):,}: {sorted(unknown)[:20]}")
    print(f"missing:                       {len(missing):>9,}")
    for key in missing[:50]:
        row = rows[key]
        print(
            f"  {key}: outbox {row.outbox_id} {row.status}, attempts {row.attempts}, {row.result}"
        )
    print(
        f"  of them unconfirmed (the known gap): {len(explained):,}; "
        f"lost without explanation: {len(lost):,}"
    )
    print(
        f"unconfirmed rows: {len(unconfirmed):,} "
        f"({len(unconfirmed) - len(explained):,} of them arrived)"
    )
    print("outbox rows per final status (result outcome):")
    for name, n in sorted(statuses.items()):
        print(f"  {name:<24} {n:>9,}")
    print(f"delivery attempts per outcome: {dict(sorted(attempts.items()))}")
    failed = bool(duplicates or unknown or lost)
    gap = f" (except {len(explained)} lost in the known gap)" if explained else ""
    print("RESULT: " + ("FAILED" if failed else f"every email arrived exactly once{gap}"))
    return 1 if failed else 0


# --- main -----------------------------------------------------------------------------------


def scratch_database(url: str) -> tuple[str, str]:
    """A fresh database on the server `url` names: (its URL, its name)."""
    admin = url.replace("postgresql+psycopg://", "postgresql://")
    name = f"orbita_bench_crash_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin.rpartition("/")[0] + "/" + name, name


def drop_database(url: str, name: str) -> None:
    admin = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def code_version() -> str:
    """The commit, and the files under src/ that differ from it: every sender run imports
    the work tree's code as it is when the run starts."""
    root = Path(__file__).resolve().parents[1]

    def git(*arguments: str) -> str:
        done = subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True)
        return done.stdout.rstrip()

    changed = git("status", "--porcelain", "--", "src").splitlines()
    return f"{git('rev-parse', '--short', 'HEAD')}" + (
        f"; changed under src/: {', '.join(line[3:] for line in changed)}" if changed else ""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emails", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--postgres", help="state on this PostgreSQL server (default SQLite)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    print(f"cpus: {os.cpu_count()}, load average before: {load_average()}", flush=True)
    print(f"code: {code_version()}", flush=True)

    port = free_port()
    count = multiprocessing.Value("q", 0, lock=False)
    control, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=serve, args=(port, count, child), daemon=True)
    server.start()
    assert control.recv() == "ready"

    database: tuple[str, str] | None = None
    try:
        if args.postgres:
            database = scratch_database(args.postgres)
        with tempfile.TemporaryDirectory(prefix="orbita-bench-crash-") as tmp:
            code = bench(args, Path(tmp), port, count, control, database, rng)
    finally:
        control.send("stop")
        server.join(timeout=10)
        if database is not None:
            drop_database(args.postgres, database[1])
    sys.exit(code)


def bench(
    args: argparse.Namespace,
    folder: Path,
    port: int,
    count: Any,
    control: Connection,
    database: tuple[str, str] | None,
    rng: random.Random,
) -> int:
    (folder / "cart.mjml").write_text(MJML)
    text = strategy_text(port, args.connections)
    (folder / "strategy.yaml").write_text(text)
    strategy = parse_strategy(text, source=str(folder / "strategy.yaml"))
    settings = Settings(workspace=folder / "ws", database_url=database[0] if database else None)
    init_workspace(settings=settings)
    started = time.perf_counter()
    # Closed before any sender starts: a sender process opens the workspace on its own.
    with open_workspace(settings=settings) as workspace:
        queue(workspace, strategy, args.emails)
    queued = time.perf_counter() - started
    backend = "postgres" if database else "sqlite"
    print(
        f"queued {args.emails:,} cart emails the real way in {queued:.1f} s "
        f"(state: {backend}); load average: {load_average()}",
        flush=True,
    )

    started = time.perf_counter()
    runs, ran = run_senders(folder, settings, count, args.emails, args.kills, rng)
    sending = time.perf_counter() - started
    load_after = load_average()
    time.sleep(0.5)  # any DATA handler still running finishes
    control.send("ids")
    ids: list[bytes] = control.recv()
    last = runs[-1].number
    print(f"last run's report: {' '.join((folder / f'sender-{last}.out').read_text().split())}")
    kills = sum(1 for run in runs if run.outcome.startswith("killed"))

    started = time.perf_counter()
    code = check(settings, ids)
    checked = time.perf_counter() - started
    print("time per phase:")
    print(f"  queue                 {queued:8.1f} s")
    for run in runs:
        print(f"  sender run {run.number:<2}         {run.seconds:8.1f} s  ({run.outcome})")
    print(f"  all sender runs       {sending:8.1f} s  ({kills} kills, {len(runs)} starts)")
    print(f"  check                 {checked:8.1f} s")
    final = runs[-1]
    print(
        f"emails/s over all sender runs (restarts included): {len(set(ids)) / sending:,.0f}; "
        f"last run alone: {(final.received_after - final.received_before) / final.seconds:,.0f}"
    )
    print(f"load average after sending: {load_after}; now: {load_average()}")
    if not ran:
        print("RESULT: FAILED (a sender run failed on its own)")
        return 1
    return code


if __name__ == "__main__":
    main()
