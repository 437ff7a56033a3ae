"""`orbita analytics experiments [JOURNEY]`: every holdout, split and A/B variant with its
statistics and verdict, then each journey's uplift over its holdout."""

from __future__ import annotations

import math
from typing import Annotated, Any

import typer
from rich.table import Table

from orbita.analytics.experiments.report import experiments_report
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
        out.print("No experiments yet: no journey has run.")
        return
    for experiment in report["experiments"]:
        title = f"{experiment['journey']}: {experiment['kind']} {experiment['experiment']}"
        table = Table(
            "arm", "runs", "conversion", "lift [95% CI]", "p", "seq. p", "P(beat)",
            "rev./recipient", "Δ rev. [95% CI]", "unsub.", "compl.", title=title,
        )  # fmt: skip
        for row in experiment["arms"]:
            control = row["control"]
            table.add_row(
                row["arm"] + (" (control)" if control else ""),
                f"{row['n']:,}",
                f"{row['conversions']:,} ({_percent(row['conversion_rate'])})",
                ""
                if control
                else _points(row.get("lift"), row.get("lift_low"), row.get("lift_high")),
                "" if control else _p(row.get("p_value")),
                "" if control else _p(row.get("sequential_p_value")),
                "" if control else _percent(row.get("probability_to_beat_control")),
                _money(row["revenue_per_recipient"]),
                "" if control else _money_range(row),
                f"{row['unsubscribes']:,}",
                f"{row['complaints']:,}",
            )
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
        table = Table(
            "journey", "treated", "held out", "uplift [95% CI]", "incr. conversions",
            "incr. revenue", "earns its keep", title="Uplift over the holdout",
        )  # fmt: skip
        for item in report["uplift"]:
            table.add_row(
                item["journey"],
                f"{item['treated']:,}",
                f"{item['held_out']:,}",
                _points(item["uplift"], item["uplift_low"], item["uplift_high"]),
                _count_range(
                    item["incremental_conversions"],
                    item["incremental_conversions_low"],
                    item["incremental_conversions_high"],
                ),
                _count_range(
                    item["incremental_revenue"],
                    item["incremental_revenue_low"],
                    item["incremental_revenue_high"],
                ),
                "yes" if item["earns_its_keep"] else "not shown",
            )
        out.print(table)


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
    return f"{value * 100:+.2f} pp {_range(low, high, scale=100)}"


def _money(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.2f}"


def _money_range(row: dict[str, Any]) -> str:
    difference = row.get("revenue_difference")
    if difference is None:
        return "-"
    return f"{difference:+,.2f} {_range(row.get('revenue_low'), row.get('revenue_high'))}"


def _count_range(value: float, low: float | None, high: float | None) -> str:
    if low is None or high is None:
        return f"{value:+,.0f}"
    return f"{value:+,.0f} [{low:+,.0f}, {high:+,.0f}]"
