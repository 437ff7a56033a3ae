"""`orbita analytics ltv`: BG/NBD and Gamma-Gamma fitted on the workspace's orders, the value
by tier, segment and lifecycle stage, the calibration check, and LTV traits on demand."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from orbita.cli.common import (
    DEFAULT_WORKSPACE,
    JsonOption,
    WorkspaceOption,
    console,
    parse_moment,
    print_json,
    settings_for,
    user_errors,
)
from orbita.services.ltv import Group, LtvReport, as_json, ltv_report, ltv_strategy
from orbita.services.workspace import open_workspace

CutoffOption = Annotated[
    str | None,
    typer.Option(
        "--cutoff",
        help="The models see only purchases before this date (YYYY-MM-DD, midnight UTC, or "
        "ISO 8601 with a zone); default now.",
    ),
]
CalibrationOption = Annotated[
    bool,
    typer.Option(
        "--calibration",
        help="Compare the purchases predicted after --cutoff with those that came, by the "
        "number of repeat purchases before it.",
    ),
]
WriteOption = Annotated[
    bool,
    typer.Option(
        "--write-traits",
        help="Write each customer's LTV traits (ltv_tier, predicted CLV, p_alive, "
        "churn_probability…) into their profile, for segments, branches and templates.",
    ),
]
StrategyOption = Annotated[
    Path | None,
    typer.Option("--strategy", help="Strategy file (its `ltv:` part).", dir_okay=False),
]


def ltv(
    workspace: WorkspaceOption = DEFAULT_WORKSPACE,
    as_json_output: JsonOption = False,
    cutoff: CutoffOption = None,
    calibration: CalibrationOption = False,
    write_traits: WriteOption = False,
    strategy_file: StrategyOption = None,
) -> None:
    """Parameters with standard errors and log-likelihoods, CLV over the strategy's horizon
    by tier, segment and stage; the holdout check with --calibration."""
    settings = settings_for(workspace)
    with user_errors(workspace=workspace), open_workspace(settings=settings) as ws:
        strategy = ltv_strategy(settings=settings, path=strategy_file)
        report = ltv_report(
            workspace=ws,
            strategy=strategy,
            as_of=_cutoff(cutoff) if cutoff is not None else None,
            with_calibration=calibration,
            write_traits=write_traits,
        )
    if as_json_output:
        print_json(as_json(report))
        return
    _show(report)


def _cutoff(text: str) -> datetime:
    if len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            pass
        else:
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
    return parse_moment(text, option="--cutoff")


def _show(report: LtvReport) -> None:
    out = console()
    out.print(
        f"LTV as of {report.as_of.isoformat()}: {report.customers:,} customers with "
        f"{report.purchase_event!r} ({report.repeat_buyers:,} repeat buyers); "
        f"{report.horizon_months}-month CLV at {report.monthly_discount:.1%} a month"
    )
    fits = [(report.purchase_model, report.purchases.params, report.purchases.log_likelihood)]
    if report.spend is not None:
        fits.append(("Gamma-Gamma", report.spend.params, report.spend.log_likelihood))
    table = Table("model", "parameter", "estimate", "std. error", "log-likelihood")
    for model, params, log_likelihood in fits:
        for index, (name, estimate) in enumerate(params.items()):
            table.add_row(
                model if index == 0 else "",
                name,
                f"{estimate.value:.4g}",
                f"{estimate.standard_error:.3g}",
                f"{log_likelihood:,.2f}" if index == 0 else "",
            )
    out.print(table)
    if report.spend is None:
        out.print("Too few repeat buyers with a value for Gamma-Gamma: own mean order values.")
    for title, groups in (
        ("tier", report.tiers),
        ("segment", report.segments),
        ("stage", report.stages),
    ):
        if groups and any(g.customers for g in groups):
            out.print(_groups(title, groups))
    out.print(
        f"historical value {report.historical_ltv:,.2f}; predicted {report.horizon_months}-month "
        f"CLV {report.predicted_clv:,.2f} (revenue: the catalogue has no costs for a margin)"
    )
    if report.written:
        out.print(f"LTV traits written for {report.written:,} customers.")
    checked = report.calibration
    if checked is not None:
        table = Table(
            "repeat purchases before", "customers", "actual after", "predicted after",
            title=f"Calibration: fitted before {checked.cutoff.date()}, "
            f"{checked.holdout_days} days after (mean purchase days per customer)",
        )  # fmt: skip
        for b in checked.buckets:
            table.add_row(
                b.repeat_purchases, f"{b.customers:,}", f"{b.actual:.3f}", f"{b.predicted:.3f}"
            )
        table.add_row(
            "all",
            f"{checked.customers:,}",
            f"{checked.actual_total:,.0f}",
            f"{checked.predicted_total:,.1f}",
        )
        out.print(table)


def _groups(title: str, groups: tuple[Group, ...]) -> Table:
    table = Table(
        title, "customers", "historical value", "predicted CLV", "mean CLV", "mean P(alive)"
    )
    for g in groups:
        table.add_row(
            g.name,
            f"{g.customers:,}",
            f"{g.historical_ltv:,.2f}",
            f"{g.predicted_clv:,.2f}",
            f"{g.mean_predicted_clv:,.2f}",
            f"{g.mean_p_alive:.3f}",
        )
    return table
