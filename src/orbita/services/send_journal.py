"""The sender's journal of final dots: which messages it was about to finish.

SMTP's point of no return is the final dot. The sender records `committing` in the database
before it, and then, as the very last thing before writing the dot, appends the message's
outbox id to its journal, a file of its claim's own in the workspace. A process killed with
SIGKILL keeps what it wrote to a file (the kernel has it), so the `committing` rows a dead
sender leaves come in two kinds, told apart by its journal:

- in the journal: the dot was written, or was about to be in the few microseconds between
  two system calls: the message is not sent again (sent, unconfirmed);
- not in the journal: the sender died before the dot, waiting for the database to confirm
  the commit, say: the server dropped that transaction, so the message is sent again.

The server's answer to the dot is noted too, so a message it took (a batch's outcomes are
written at the batch's end) is recovered as sent, not as unconfirmed.

A `committing` row whose claim has no journal here (its sender ran on another host, or
from another workspace folder) cannot be told apart: it is taken as sent, unconfirmed.

A live sender holds a lock on its journal, which the kernel drops when the process dies
however it dies: recovery leaves the rows of a claim whose journal is still locked alone,
even when another process was started with the same worker id by mistake.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

_SUFFIX = ".dots"


def _folder(workspace_dir: Path) -> Path:
    return workspace_dir / "senders"


class SendJournal:
    """The journal of one claim (one sender process's run): an append-only file of outbox
    ids, open for the run's life and emptied once a batch's outcomes are written."""

    def __init__(self, *, workspace_dir: Path, claim: str) -> None:
        folder = _folder(workspace_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{quote(claim, safe='')}{_SUFFIX}"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held while this process lives

    def about_to_finish(self, outbox_id: int) -> None:
        # One write(2), unbuffered: nothing of it stays in this process to be lost.
        os.write(self._fd, b"%d\n" % outbox_id)

    def taken(self, outbox_id: int) -> None:
        """The server answered the dot: it has the message."""
        os.write(self._fd, b"+%d\n" % outbox_id)

    def clear(self) -> None:
        os.ftruncate(self._fd, 0)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class Journal:
    """What one claim's journal says: the outbox ids whose final dot may have been written,
    those the server took, and whether its sender still lives."""

    dots: frozenset[int]
    taken: frozenset[int]
    alive: bool


def journals(workspace_dir: Path) -> dict[str, Journal]:
    """Every claim's journal in this workspace, by claim."""
    found: dict[str, Journal] = {}
    folder = _folder(workspace_dir)
    if not folder.is_dir():
        return found
    for path in folder.glob(f"*{_SUFFIX}"):
        claim = unquote(path.name[: -len(_SUFFIX)])
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # its sender closed it just now
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                alive = False
            except BlockingIOError:
                alive = True
            with os.fdopen(os.dup(fd), "rb") as file:
                lines = file.read().split()
        finally:
            os.close(fd)
        found[claim] = Journal(
            dots=frozenset(int(line) for line in lines if line.isdigit()),
            taken=frozenset(int(line[1:]) for line in lines if line[1:].isdigit()),
            alive=alive,
        )
    return found


def discard_journals(workspace_dir: Path, claims: Collection[str]) -> None:
    """Journals of claims that have nothing left to recover."""
    for claim in claims:
        (_folder(workspace_dir) / f"{quote(claim, safe='')}{_SUFFIX}").unlink(missing_ok=True)
