"""Errors that say who made the mistake and whether a retry can help."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class OrbitaError(Exception):
    """Base of every error Orbita raises on purpose."""


class UserError(OrbitaError):
    """A mistake in what the user asked for: shown as one line (CLI exit 2, HTTP 4xx)."""


class NotFoundError(UserError):
    """The thing named does not exist."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One problem with one field of one input item (`index` is None for a single item)."""

    field: str
    message: str
    index: int | None = None
    line: int | None = None

    def describe(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.index is not None:
            where.append(f"item {self.index}")
        where.append(self.field or "(body)")
        return f"{', '.join(where)}: {self.message}"


class InvalidInputError(UserError):
    """Input failed validation; nothing of it was stored."""

    def __init__(self, problems: Sequence[FieldProblem], *, summary: str = "invalid input") -> None:
        self.problems = tuple(problems)
        self.summary = summary
        shown = "; ".join(p.describe() for p in self.problems[:5])
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(f"{summary}: {shown}{more}")

    def __reduce__(self) -> tuple[object, ...]:
        # Raised in parse worker processes and pickled back: keep the problems, not the text.
        return (_rebuild_invalid, (type(self), self.problems, self.summary))


def _rebuild_invalid(
    kind: type[InvalidInputError], problems: tuple[FieldProblem, ...], summary: str
) -> InvalidInputError:
    return kind(problems, summary=summary)


class StoreLockedError(UserError):
    """Another process owns the workspace's embedded event store."""


class TransientError(OrbitaError):
    """A failure that a later retry may cure (timeouts, 429, 5xx, a lock held briefly)."""


class TerminalError(OrbitaError):
    """A failure that no retry will cure (bad address, 4xx, rejected content)."""


class TooLargeError(InvalidInputError):
    """Input over a size limit (HTTP 413)."""
