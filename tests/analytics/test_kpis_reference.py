"""KPIs computed in the stores (DuckDB and PostgreSQL) against a plain-Python reading of the
definitions in orbita.analytics.kpis, on random purchases, views and message events."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from measure_data import Event, Events, at

from orbita.analytics.kpis import (
    CATALOGUE,
    MESSAGE_EVENTS,
    OWN_EVENTS,
    SUMMARY_METRICS,
    KpiOptions,
    compute_kpis,
    kpi_summary,
    kpi_value,
    lapse_days,
    shown,
)
from orbita.core.errors import UserError
from orbita.services.strategy import load_strategy
from orbita.services.workspace import Workspace

CHURN_DAYS = 20
OPTIONS = KpiOptions(churn_days=CHURN_DAYS)
PROPS = ("journey", "step", "variant", "channel", "template")


def shop(seed: int) -> Events:
    rng = random.Random(seed)
    events = Events()
    for number in range(30):
        user = f"c{number:02d}"
        for _ in range(rng.randint(0, 6)):
            when = at(days=rng.uniform(-20, 75))
            events.add(user, "Order Completed", when, {"revenue": rng.choice((10, 25.5, 80))})
        for _ in range(rng.randint(0, 5)):
            events.add(user, "Product Viewed", at(days=rng.uniform(0, 75)))
        for _ in range(rng.randint(0, 4)):
            journey = rng.choice(("welcome", "win_back"))
            props = {
                "journey": journey,
                "step": rng.choice(("steps[1]", "steps[3]")),
                "channel": rng.choice(("email", "sms")),
                "template": rng.choice(("t1", "t2")),
            }
            if rng.random() < 0.5:
                props["variant"] = rng.choice(("a", "b"))
            sent = at(days=rng.uniform(0, 70))
            events.add(user, "Email Sent", sent, props)
            if rng.random() < 0.9:
                events.add(user, "Email Delivered", sent + timedelta(minutes=1), props)
            else:
                events.add(user, "Email Bounced", sent + timedelta(minutes=1), props)
            if rng.random() < 0.6:
                bot = rng.random() < 0.3
                events.add(user, "Email Opened", sent + timedelta(hours=1), {**props, "bot": bot})
            if rng.random() < 0.3:
                events.add(user, "Email Clicked", sent + timedelta(hours=2), props)
            if rng.random() < 0.1:
                events.add(user, "Unsubscribed", sent + timedelta(hours=3), props)
    return events


def period_of(moment: datetime, grain: str, start: datetime) -> date:
    day = moment.date()
    if grain == "week":
        return day - timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    return start.date()


def bounds(period: date, grain: str, start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The instants the period's running figures are read at: its start and its end."""
    if grain == "total":
        return start, end
    a = datetime(period.year, period.month, period.day, tzinfo=UTC)
    if grain == "week":
        b = a + timedelta(days=7)
    else:
        b = datetime(a.year + a.month // 12, a.month % 12 + 1, 1, tzinfo=UTC)
    return a, min(b, end)


def reference(
    events: list[Event], grain: str, start: datetime, end: datetime
) -> dict[tuple[str, date, str, str], float | None]:
    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    expected: dict[tuple[str, date, str, str], float | None] = {}
    tracks = [e for e in events if e.kind == "track"]
    orders = [e for e in tracks if e.name == "Order Completed"]
    in_range = [e for e in tracks if start <= e.timestamp < end]
    periods = sorted(
        {period_of(start + timedelta(days=d), grain, start) for d in range((end - start).days)}
        | {period_of(end - timedelta(microseconds=1), grain, start)}
    )
    span = timedelta(days=CHURN_DAYS)
    for period in periods:
        mine = [e for e in in_range if period_of(e.timestamp, grain, start) == period]
        bought = [e for e in mine if e.name == "Order Completed"]
        money = sum(e.properties["revenue"] for e in bought)
        buyers = len({e.user for e in bought})
        active = len({e.user for e in mine if e.name not in OWN_EVENTS})
        a, b = bounds(period, grain, start, end)
        before = [e for e in orders if e.timestamp < b]
        count: dict[str, int] = defaultdict(int)
        for e in before:
            count[e.user] += 1
        ever = sum(1 for n in count.values() if n >= 1)
        times: dict[str, list[datetime]] = defaultdict(list)
        for e in sorted(orders, key=lambda e: e.timestamp):
            if e.timestamp < end:
                times[e.user].append(e.timestamp)
        at_start = churned = 0
        for stamps in times.values():
            if any(a - span <= t < a for t in stamps):
                at_start += 1
                lapses = [
                    t + span
                    for i, t in enumerate(stamps)
                    if not any(t < u <= t + span for u in stamps[i + 1 :])
                ]
                first_lapse = min(lapse for lapse in lapses if lapse >= a)
                if first_lapse < b:
                    churned += 1
        figures = {
            "orders": len(bought),
            "revenue": money,
            "buyers": buyers,
            "average_order_value": ratio(money, len(bought)),
            "purchase_frequency": ratio(len(bought), buyers),
            "active_customers": active,
            "conversion_rate": ratio(buyers, active),
            "repeat_purchase_rate": ratio(sum(1 for n in count.values() if n >= 2), ever),
            "ltv_historical": ratio(sum(e.properties["revenue"] for e in before), ever),
            "churn_rate": ratio(churned, at_start),
        }
        for metric, value in figures.items():
            expected[(metric, period, "all", "")] = value
        for dimension in ("all", *PROPS):
            groups: dict[str, list[Event]] = defaultdict(list)
            for e in mine:
                if e.name not in MESSAGE_EVENTS:
                    continue
                p = e.properties
                key = {
                    "all": "",
                    "journey": p["journey"],
                    "step": f"{p['journey']}/{p['step']}",
                    "variant": f"{p['journey']}/{p.get('variant', '')}",
                    "channel": p["channel"],
                    "template": p["template"],
                }[dimension]
                if dimension == "variant" and "variant" not in p:
                    continue
                groups[key].append(e)
            for key, group in groups.items():

                def n(name: str, group: list[Event] = group) -> int:
                    return sum(1 for e in group if e.name == name)

                def who(name: str, group: list[Event] = group) -> int:
                    return len(
                        {e.user for e in group if e.name == name and not e.properties.get("bot")}
                    )

                for metric, value in {
                    "messages_sent": n("Email Sent"),
                    "messages_delivered": n("Email Delivered"),
                    "delivery_rate": ratio(n("Email Delivered"), n("Email Sent")),
                    "bounce_rate": ratio(n("Email Bounced"), n("Email Sent")),
                    "open_rate": ratio(who("Email Opened"), who("Email Delivered")),
                    "click_rate": ratio(who("Email Clicked"), who("Email Delivered")),
                    "click_to_open_rate": ratio(who("Email Clicked"), who("Email Opened")),
                    "unsubscribe_rate": ratio(who("Unsubscribed"), who("Email Delivered")),
                }.items():
                    expected[(metric, period, dimension, key)] = value
    return expected


@pytest.mark.parametrize("grain", ["month", "week", "total"])
def test_kpis_match_the_reference(workspace: Workspace, grain: str) -> None:
    events = shop(5)
    events.store(workspace)
    start, end = at(days=3, hours=7), at(days=66, hours=2)
    metrics = [m for m in CATALOGUE if "all" in CATALOGUE[m].dimensions]
    found = compute_kpis(
        events=workspace.events,
        state=workspace.state,
        start=start,
        end=end,
        grain=grain,  # type: ignore[arg-type]
        metrics=[*metrics, *(m for m in CATALOGUE if m.startswith(("messages", "open")))],
        dimensions=["all", *PROPS],
        options=OPTIONS,
    )
    expected = reference(events.items, grain, start, end)
    measured = {(r.metric, r.period, r.dimension, r.key): r.value for r in found}
    assert measured.keys() == {k for k in expected if k[0] in {r.metric for r in found}}
    for key, value in expected.items():
        if key in measured:
            assert measured[key] == (pytest.approx(value) if value is not None else None), key
    assert any(value for (m, *_), value in measured.items() if m == "churn_rate")
    assert any(value for (m, *_), value in measured.items() if m == "open_rate")


def test_one_value_over_a_range_and_bad_names(embedded_workspace: Workspace) -> None:
    events = shop(9)
    events.store(embedded_workspace)
    start, end = at(), at(days=40)
    row = kpi_value(
        events=embedded_workspace.events,
        state=embedded_workspace.state,
        metric="open_rate",
        start=start,
        end=end,
        dimension="journey",
        key="win_back",
    )
    expected = reference(events.items, "total", start, end)
    assert row is not None and row.value == pytest.approx(
        expected[("open_rate", start.date(), "journey", "win_back")]
    )
    summary = kpi_summary(
        events=embedded_workspace.events,
        state=embedded_workspace.state,
        start=start,
        end=end,
        options=OPTIONS,
    )
    assert tuple(r.metric for r in summary) == SUMMARY_METRICS
    assert [r.value for r in summary] == pytest.approx(
        [expected[(m, start.date(), "all", "")] for m in SUMMARY_METRICS]
    )
    assert shown("open_rate", 0.25) == "25.0%" and shown("revenue", 1234.5) == "1,234.50"
    with pytest.raises(UserError, match=r"^metric: unknown KPI 'opens'"):
        compute_kpis(
            events=embedded_workspace.events,
            state=embedded_workspace.state,
            start=start,
            end=end,
            metrics=["opens"],
        )
    with pytest.raises(UserError, match=r"^dimension: "):
        compute_kpis(
            events=embedded_workspace.events,
            state=embedded_workspace.state,
            start=start,
            end=end,
            dimensions=["colour"],
        )


def test_churn_window_comes_from_the_lifecycle() -> None:
    example = Path(__file__).parents[2] / "examples" / "clothing-store" / "strategy.yaml"
    assert lapse_days(load_strategy(path=example)) == 180  # `lapsed`: no order within 180d
    assert lapse_days(None) == 90
