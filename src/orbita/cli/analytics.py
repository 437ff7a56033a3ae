"""`orbita analytics …`: measurement from the command line (KPIs, funnels, cohorts, LTV,
experiments). Each subcommand lives in its own `analytics_<topic>.py` module and is
registered below; each takes `--json` and prints tidy rows ready to plot."""

from __future__ import annotations

import typer

from orbita.cli import (
    analytics_cohorts,
    analytics_experiments,
    analytics_funnels,
    analytics_kpis,
    analytics_ltv,
)

app = typer.Typer(
    help="Measure: KPIs, funnels, cohorts, LTV and churn models, experiments and uplift.",
    no_args_is_help=True,
)

# Subcommands, one line each: app.command("ltv")(analytics_ltv.ltv)
app.command("experiments")(analytics_experiments.experiments)
app.command("ltv")(analytics_ltv.ltv)
app.command("kpis")(analytics_kpis.kpis)
app.command("funnel")(analytics_funnels.funnel)
app.command("cohorts")(analytics_cohorts.cohorts)
