"""What `orbita demo` prints: the simulated weeks, each journey against its holdout, the
KPIs and customer value by stage. Imported only by the demo (it needs the analytics)."""

from __future__ import annotations

import math

from rich import box
from rich.console import Console
from rich.table import Table

from orbita.analytics.experiments.stats import Interval
from orbita.analytics.kpis import CATALOGUE, shown
from orbita.cli.render import import_line, rate
from orbita.services.demo import DemoReport


def demo_tables(console: Console, report: DemoReport) -> None:
    console.print(import_line(report.customers), markup=False, highlight=False)
    console.print(import_line(report.history), markup=False, highlight=False)
    run = report.run
    console.print(
        f"Simulated {report.start:%Y-%m-%d} -> {report.until:%Y-%m-%d}: {run.events:,} events "
        f"played ({report.responses:,} of them the customers' answers to messages), "
        f"{run.entered:,} journey entries, {run.messages:,} messages queued, "
        f"{run.suppressed:,} held back for holdouts, {run.refreshes:,} segment refreshes",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    sent = report.delivery
    if sent is not None:
        console.print(
            f"Delivery: {sent.sent:,} sent, {sent.deferred:,} deferred by quiet hours, "
            f"{sent.skipped:,} skipped by the rules (consent, suppression, caps), "
            f"{sent.retried:,} retried, {sent.dead:,} dead",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(_journey_messages(report))
    console.print(_journey_uplifts(report))
    console.print(
        "in: entered (treatment); held: entered the holdout; open, click: human opens and "
        "clicks of the delivered messages; conv: converted within the goal window; uplift: "
        "treatment minus holdout conversion, in percentage points, with its 95% interval; "
        "true: the simulator's effect of "
        "one message, what the interval should hold 95 times in 100",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(_kpi_table(report))
    console.print(_ltv_table(report))


def _journey_messages(report: DemoReport) -> Table:
    table = Table(title="Journeys: who entered, what was sent", box=box.SIMPLE, pad_edge=False)
    table.add_column("journey", no_wrap=True)
    for column in ("in", "held", "sent", "delivered", "open", "click"):
        table.add_column(column, justify="right", no_wrap=True)
    for outcome in report.journeys:
        stats, kpis = outcome.stats, outcome.messages
        delivered = kpis.get("messages_delivered")
        table.add_row(
            stats.name,
            f"{stats.arms['treatment'].entered:,}",
            f"{stats.arms['holdout'].entered:,}",
            f"{stats.sent:,}",
            "-" if delivered is None else f"{delivered:,.0f}",
            rate(kpis.get("open_rate")),
            rate(kpis.get("click_rate")),
        )
    return table


def _journey_uplifts(report: DemoReport) -> Table:
    table = Table(
        title="Journeys: conversion, treatment vs holdout", box=box.SIMPLE, pad_edge=False
    )
    table.add_column("journey", no_wrap=True)
    for column in ("conv", "held conv", "uplift [95% CI]", "true"):
        table.add_column(column, justify="right", no_wrap=True)
    for outcome in report.journeys:
        stats, measured = outcome.stats, outcome.measured
        treated, held = stats.arms["treatment"], stats.arms["holdout"]
        table.add_row(
            stats.name,
            rate(treated.conversion_rate),
            rate(held.conversion_rate),
            "-" if measured is None else _points(measured.uplift, measured.interval),
            "-" if outcome.true_uplift is None else f"{outcome.true_uplift * 100:+.1f}",
        )
    return table


def _points(value: float, interval: Interval) -> str:
    low, high = (
        f"{end * 100:+.1f}" if math.isfinite(end) else "?" for end in (interval.low, interval.high)
    )
    return f"{value * 100:+.1f} [{low}, {high}]"


def _kpi_table(report: DemoReport) -> Table:
    table = Table(
        title=f"KPIs, {report.start:%Y-%m-%d} -> {report.until:%Y-%m-%d}",
        box=box.SIMPLE,
        pad_edge=False,
    )
    table.add_column("KPI", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("what it is")
    for row in report.kpis:
        table.add_row(row.metric, shown(row.metric, row.value), CATALOGUE[row.metric].description)
    return table


def _ltv_table(report: DemoReport) -> Table:
    ltv = report.ltv
    table = Table(
        title=f"Customer value by lifecycle stage ({ltv.model}, next {ltv.horizon_months} months)",
        box=box.SIMPLE,
        pad_edge=False,
    )
    table.add_column("stage", no_wrap=True)
    for column in ("customers", "P(alive)", "mean CLV", "predicted", "to date"):
        table.add_column(column, justify="right", no_wrap=True)
    for stage in ltv.stages:
        table.add_row(
            stage.name,
            f"{stage.customers:,}",
            f"{stage.mean_p_alive:.0%}",
            f"{stage.mean_predicted_clv:,.0f}",
            f"{stage.predicted_clv:,.0f}",
            f"{stage.historical_ltv:,.0f}",
        )
    return table
