"""`orbita analytics experiments [JOURNEY]`: every holdout, split and A/B variant with its
statistics and verdict, then each journey's uplift over its holdout."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from orbita.analytics.experiments.report import experiments_report, uplift_lines
from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    print_json,
    settings_for,
    user_errors,
)
from orbita.services.workspace import open_workspace

JourneyArgument = Annotated[
    str | None, typer.Argument(help="One journey (default: every published journey).")
]
SequentialOption = Annotated[
    bool,
    typer.Option(
        "--sequential",
        help="Decide by the always-valid sequential test (safe to look every day) and show "
        "its daily looks.",
    ),
]


def experiments(
    journey: JourneyArgument = None,
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json: JsonOption = False,
    sequential: SequentialOption = False,
) -> None:
    """Per arm: runs, conversion rate, lift over the control with 95% intervals, z-test and
    sequential p-values, P(beat control), revenue per recipient (Welch), guardrails; the
    sample-ratio check and the verdict; each journey's incremental conversions and revenue."""
    with user_errors(workspace=workspace), open_workspace(settings=settings_for(workspace)) as ws:
        report = experiments_report(
            state=ws.state,
            events=ws.events,
            journeys=[journey] if journey is not None else None,
            timeline=sequential,
        )
    if as_json:
        print_json(report)
        return
    out = console()
    if not report["experiments"]:
        out.print("No experiments: no journey with a holdout, a split or A/B variants has run.")
        return
    for experiment in report["experiments"]:
        title = f"{experiment['journey']}: {experiment['kind']} {experiment['experiment']}"
        arms = experiment["arms"]
        table = Table(
            "", *(row["arm"] + (" (control)" if row["control"] else "") for row in arms),
            title=title, box=box.SIMPLE_HEAD,
        )  # fmt: skip
        for label, cell in _ROWS:
            table.add_row(label, *(cell(row) for row in arms))
        out.print(table)
        ratio = experiment["sample_ratio"]
        if ratio is not None:
            state = "MISMATCH" if ratio["mismatch"] else "ok"
            out.print(f"  sample ratio {state} (chi-square p = {ratio['p_value']:.3g})")
        verdict = experiment["sequential_verdict" if sequential else "verdict"]
        out.print(f"  verdict: {verdict['winner'] or 'no winner'}: {verdict['reason']}")
        if sequential and experiment.get("timeline"):
            _print_timeline(experiment["timeline"])
    if report["uplift"]:
        out.print("\nUplift over the holdout", style="bold")
        for line in uplift_lines(report["uplift"]):
            out.print(line, markup=False, highlight=False, soft_wrap=True)


def _print_timeline(points: list[dict[str, Any]]) -> None:
    table = Table("day", "arm", "runs", "lift", "always-valid p", "confidence sequence")
    for point in points:
        table.add_row(
            point["at"][:16].replace("T", " "),
            point["arm"],
            f"{point['n']:,}",
            f"{point['lift'] * 100:+.2f} pp",
            _p(point["p_value"]),
            _range(point["low"], point["high"], scale=100, unit=" pp"),
        )
    console().print(table)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _range(low: float | None, high: float | None, *, scale: float = 1, unit: str = "") -> str:
    if low is None or high is None:
        return "unbounded yet"
    return f"[{low * scale:+.2f}, {high * scale:+.2f}]{unit}"


def _points(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 100:+.2f} {_range(low, high, scale=100)}"


def _relative(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    if low is None or high is None:
        return f"{value:+.0%}"
    return f"{value:+.0%} [{low:+.0%}, {high:+.0%}]"


def _money(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.2f}"


def _money_range(row: dict[str, Any]) -> str:
    difference = row.get("revenue_difference")
    if difference is None:
        return "-"
    return f"{difference:+,.2f} {_range(row.get('revenue_low'), row.get('revenue_high'))}"


def _compared(show: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
    """A cell of a comparison with the control: empty in the control's own column."""
    return lambda row: "" if row["control"] else show(row)


# Rows of an experiment's table (arms are the columns: two or three fit 80 columns).
_ROWS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("runs", lambda r: f"{r['n']:,}"),
    ("expected share", lambda r: _percent(r["expected_share"])),
    ("converted", lambda r: f"{r['conversions']:,} ({_percent(r['conversion_rate'])})"),
    ("lift, pp [95% CI]", _compared(lambda r: _points(r["lift"], r["lift_low"], r["lift_high"]))),
    (
        "relative lift [95% CI]",
        _compared(lambda r: _relative(r["relative_lift"], r["relative_low"], r["relative_high"])),
    ),
    ("z-test p", _compared(lambda r: _p(r["p_value"]))),
    ("sequential p", _compared(lambda r: _p(r["sequential_p_value"]))),
    ("P(beats control)", _compared(lambda r: _percent(r["probability_to_beat_control"]))),
    ("revenue per recipient", lambda r: _money(r["revenue_per_recipient"])),
    ("Δ revenue [95% CI]", _compared(_money_range)),
    ("Welch p", _compared(lambda r: _p(r["revenue_p_value"]))),
    ("unsubscribed", lambda r: f"{r['unsubscribes']:,} ({_percent(r['unsubscribe_rate'])})"),
    ("complained", lambda r: f"{r['complaints']:,} ({_percent(r['complaint_rate'])})"),
]
