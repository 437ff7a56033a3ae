"""Reading a strategy file and checking it against what the workspace has seen."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from orbita.core.errors import UserError
from orbita.engine.segments.tables import PROFILE_TEXT, PROFILE_TIMES
from orbita.model.strategy import Strategy, parse_strategy
from orbita.model.yaml_source import dotted
from orbita.services.workspace import Workspace

STRATEGY_FILE = "strategy.yaml"


@dataclass(frozen=True, slots=True)
class StrategyWarning:
    """Something that is valid but probably a mistake (a typo in an event name, say)."""

    line: int | None
    field: str
    message: str

    def describe(self) -> str:
        where = f"line {self.line}, " if self.line is not None else ""
        return f"{where}{self.field}: {self.message}"


def strategy_path(*, workspace_dir: Path, path: Path | None = None) -> Path:
    return path if path is not None else workspace_dir / STRATEGY_FILE


def load_strategy(*, path: Path) -> Strategy:
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(
            f"no strategy file at {path}: write one (see tests/fixtures/clothing_segments.yaml) "
            "or name it with --strategy"
        ) from None
    return parse_strategy(content, source=str(path))


def check_strategy(*, workspace: Workspace, strategy: Strategy) -> list[StrategyWarning]:
    """Event names the store has never seen and traits no profile has: warnings, since the
    first such event may simply not have arrived yet."""
    seen_events = set(workspace.events.counts_by_name())
    seen_traits = _trait_names(workspace)
    warnings: list[StrategyWarning] = []
    source = strategy.source
    if source is None:
        return warnings
    for under in (("segments",), ("computed_traits",), ("stages",)):
        for path, value in source.keys_named("event", under=under):
            if isinstance(value, str) and value not in seen_events:
                warnings.append(
                    _warning(strategy, (*path, "event"), _unseen_event(value, seen_events))
                )
        for path, value in source.keys_named("trait", under=under):
            if (
                isinstance(value, str)
                and value not in PROFILE_TEXT
                and value not in PROFILE_TIMES
                and value not in seen_traits
            ):
                warnings.append(
                    _warning(strategy, (*path, "trait"), f"no customer has the trait {value!r} yet")
                )
    return sorted(warnings, key=lambda w: w.line or 0)


def _unseen_event(name: str, seen: set[str]) -> str:
    close = [known for known in sorted(seen) if known.lower() == name.lower()]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"no event {name!r} has been stored yet{hint}"


def _warning(strategy: Strategy, path: tuple[str | int, ...], message: str) -> StrategyWarning:
    place = strategy.place(path)
    return StrategyWarning(line=place.line if place else None, field=dotted(path), message=message)


def _trait_names(workspace: Workspace) -> set[str]:
    """Every trait key any profile has (one scan of the profiles)."""
    dialect = workspace.state.dialect.name
    statement = (
        "SELECT DISTINCT jsonb_object_keys(traits::jsonb) FROM customers"
        if dialect == "postgresql"
        else "SELECT DISTINCT j.key FROM customers, json_each(customers.traits) AS j"
    )
    with workspace.state.connect() as connection:
        return {str(row[0]) for row in connection.execute(text(statement))}
