"""KPIs, a 5-step funnel and monthly cohorts on a generated clothing store: Orbita's portable
expressions against the same figures in hand-written DuckDB SQL, in the same run.

    .venv/bin/python bench/analytics.py [--customers 1000000] [--days 365] [--repeat 3]

The store and its workspace are bench/segments.py's (generated once into bench/out/, or
ORBITA_BENCH_OUT, and reused). Each figure is checked equal to its hand-written peer before
it is timed; the ratio is Orbita's best time over the peer's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from orbita.analytics.cohorts import compute_cohorts
from orbita.analytics.funnels import compute_funnel
from orbita.analytics.kpis import KpiOptions, compute_kpis
from orbita.model.funnels import Funnel
from orbita.services.workspace import open_workspace
from segments import GENERATED_END, best_of, generated, loaded_workspace

END = GENERATED_END
YEAR = END - timedelta(days=365)
CHURN_DAYS = 90
KPI_METRICS = ["orders", "revenue", "buyers", "repeat_purchase_rate", "churn_rate"]
FUNNEL = Funnel.model_validate(
    {
        "within": "30d",
        "steps": [
            "Product Viewed",
            "Product Added",
            "Checkout Started",
            "Order Completed",
            "Order Completed",
        ],
    }
)
FUNNEL_START = END - timedelta(days=90)

# --- the peers: the same figures as a person writes them for DuckDB -----------------------

ORDERS_SQL = """
SELECT date_trunc('month', timestamp) AS period, count(*) AS orders,
       sum(coalesce(TRY_CAST(properties->>'revenue' AS DOUBLE), 0)) AS revenue,
       count(DISTINCT customer_id) AS buyers
FROM events WHERE type = 'track' AND name = 'Order Completed'
  AND timestamp >= $start AND timestamp < $end
GROUP BY 1
"""
REPEAT_SQL = """
WITH ranked AS (
  SELECT timestamp, row_number() OVER (PARTITION BY customer_id ORDER BY timestamp, message_id) AS n
  FROM events WHERE type = 'track' AND name = 'Order Completed' AND timestamp < $end)
SELECT date_trunc('month', timestamp) AS period, count(*) FILTER (n = 1) AS firsts,
       count(*) FILTER (n = 2) AS seconds
FROM ranked WHERE n <= 2 GROUP BY 1
"""
CHURN_SQL = """
WITH orders AS (
  SELECT customer_id, timestamp,
         lag(timestamp) OVER (PARTITION BY customer_id ORDER BY timestamp) AS previous
  FROM events WHERE type = 'track' AND name = 'Order Completed' AND timestamp < $end),
spells AS (
  SELECT customer_id, timestamp,
         sum(CASE WHEN previous IS NULL OR timestamp > previous + to_days($days) THEN 1 ELSE 0 END)
           OVER (PARTITION BY customer_id ORDER BY timestamp ROWS UNBOUNDED PRECEDING) AS spell
  FROM orders),
bounds AS (
  SELECT min(timestamp) AS s, max(timestamp) + to_days($days) AS e FROM spells
  GROUP BY customer_id, spell)
SELECT date_trunc('month', s) AS ps, date_trunc('month', e) AS pe, e < $end AS over, count(*) AS n
FROM bounds GROUP BY ALL
"""
FUNNEL_SQL = """
WITH scoped AS (
  SELECT customer_id, message_id, timestamp,
         name = 'Product Viewed' AS s1, name = 'Product Added' AS s2,
         name = 'Checkout Started' AS s3, name = 'Order Completed' AS s4,
         name = 'Order Completed' AS s5
  FROM events
  WHERE type = 'track' AND timestamp >= $start AND timestamp <= $horizon
    AND name IN ('Product Viewed', 'Product Added', 'Checkout Started', 'Order Completed')),
ordered AS (
  SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY timestamp,
           CASE WHEN s1 THEN 1 WHEN s2 THEN 2 WHEN s3 THEN 3 ELSE 4 END, message_id) AS pos
  FROM scoped),
pointers AS (
  SELECT *,
    min(CASE WHEN s2 THEN pos END) OVER w AS n2, min(CASE WHEN s2 THEN timestamp END) OVER w AS t2,
    min(CASE WHEN s3 THEN pos END) OVER w AS n3, min(CASE WHEN s3 THEN timestamp END) OVER w AS t3,
    min(CASE WHEN s4 THEN pos END) OVER w AS n4, min(CASE WHEN s4 THEN timestamp END) OVER w AS t4,
    min(CASE WHEN s5 THEN pos END) OVER w AS n5, min(CASE WHEN s5 THEN timestamp END) OVER w AS t5
  FROM ordered
  WINDOW w AS (PARTITION BY customer_id ORDER BY pos
               ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)),
chains AS (
  SELECT a.customer_id, a.pos AS p1, a.timestamp AS t1, a.t2, b.t3, c.t4, d.t5
  FROM pointers a
  LEFT JOIN pointers b ON b.customer_id = a.customer_id AND b.pos = a.n2
  LEFT JOIN pointers c ON c.customer_id = a.customer_id AND c.pos = b.n3
  LEFT JOIN pointers d ON d.customer_id = a.customer_id AND d.pos = c.n4
  WHERE a.s1 AND a.timestamp >= $start AND a.timestamp < $end),
scored AS (
  SELECT *, 1 + coalesce((t2 <= t1 + to_days(30))::INT, 0)
           + coalesce((t3 <= t1 + to_days(30))::INT, 0)
           + coalesce((t4 <= t1 + to_days(30))::INT, 0)
           + coalesce((t5 <= t1 + to_days(30))::INT, 0) AS depth
  FROM chains),
best AS (
  SELECT * FROM scored
  QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY depth DESC, p1) = 1)
SELECT count(*) FILTER (depth >= 1) AS c1, count(*) FILTER (depth >= 2) AS c2,
       count(*) FILTER (depth >= 3) AS c3, count(*) FILTER (depth >= 4) AS c4,
       count(*) FILTER (depth >= 5) AS c5,
       median(epoch(t2) - epoch(t1)) FILTER (depth >= 2) AS m2,
       median(epoch(t5) - epoch(t4)) FILTER (depth >= 5) AS m5
FROM best
"""
COHORTS_SQL = """
WITH firsts AS (
  SELECT customer_id, timestamp FROM events
  WHERE type = 'track' AND name = 'Order Completed' AND timestamp < $end
  QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY timestamp, message_id) = 1),
people AS (
  SELECT customer_id, year(timestamp) * 12 + month(timestamp) - 1 AS acquired_in,
         date_trunc('month', timestamp) AS cohort
  FROM firsts WHERE timestamp >= $start),
acts AS (
  SELECT customer_id, year(timestamp) * 12 + month(timestamp) - 1 AS active_in,
         coalesce(TRY_CAST(properties->>'revenue' AS DOUBLE), 0) AS revenue
  FROM events WHERE type = 'track' AND name = 'Order Completed'
    AND timestamp >= $start AND timestamp < $end)
SELECT cohort, active_in - acquired_in AS period, count(DISTINCT customer_id) AS active,
       sum(revenue) AS revenue
FROM acts JOIN people USING (customer_id) GROUP BY ALL
"""


def peer(con: Any, sql: str, **params: Any) -> Callable[[], list[tuple[Any, ...]]]:
    return lambda: con.execute(sql, params).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    settings = loaded_workspace(args.customers, generated(args.customers, args.days))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with open_workspace(settings=settings) as workspace:
        events, state = workspace.events, workspace.state
        con = events.ibis().con  # the DuckDB connection the store's Ibis backend runs on
        options = KpiOptions(churn_days=CHURN_DAYS)

        def kpis() -> Any:
            return compute_kpis(
                events=events,
                state=state,
                start=YEAR,
                end=END,
                grain="month",
                metrics=KPI_METRICS,
                options=options,
            )

        def funnel() -> Any:
            return compute_funnel(
                events=events, funnel=FUNNEL, name="bench", start=FUNNEL_START, end=END
            )

        def cohorts() -> Any:
            return compute_cohorts(events=events, start=YEAR, end=END, grain="month")

        hand_kpis = [
            peer(con, ORDERS_SQL, start=YEAR, end=END),
            peer(con, REPEAT_SQL, end=END),
            peer(con, CHURN_SQL, end=END, days=CHURN_DAYS),
        ]
        horizon = END + timedelta(days=30)
        hand_funnel = peer(con, FUNNEL_SQL, start=FUNNEL_START, end=END, horizon=horizon)
        hand_cohorts = peer(con, COHORTS_SQL, start=YEAR, end=END)

        _check(kpis(), funnel(), cohorts(), hand_kpis[0](), hand_funnel(), hand_cohorts())
        rows = []
        for label, ours, theirs in (
            ("KPIs (5 metrics by month)", kpis, lambda: [run() for run in hand_kpis]),
            ("5-step funnel (90 days, 30 d window)", funnel, hand_funnel),
            ("monthly cohorts (a year)", cohorts, hand_cohorts),
        ):
            mine, _ = best_of(args.repeat, ours)
            hand, _ = best_of(args.repeat, theirs)
            rows.append((label, mine, hand))
        print(f"{'':40} {'orbita':>9} {'hand SQL':>9} {'ratio':>6}")
        for label, mine, hand in rows:
            print(f"{label:40} {mine:8.2f}s {hand:8.2f}s {mine / hand:6.2f}")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


def _check(
    kpis: Any, funnel: Any, cohorts: Any, orders: Any, hand_funnel: Any, hand_cohorts: Any
) -> None:
    """The figures agree with their peers before anything is timed."""
    by_period = {r[0].astimezone(UTC).date(): r for r in orders}
    for row in kpis:
        if row.metric == "orders":
            expected = by_period.get(row.period)
            assert row.value == (expected[1] if expected else 0), row
    counts = [r.customers for r in funnel.rows if r.group == ""]
    assert counts == list(hand_funnel[0][:5]), (counts, hand_funnel)
    found = {(r.cohort, r.period): (r.active, r.revenue) for r in cohorts if r.active}
    expected_cohorts = {
        (c.astimezone(UTC).date().isoformat(), p): (a, m) for c, p, a, m in hand_cohorts
    }
    assert found.keys() == expected_cohorts.keys()
    for key, (active, revenue) in found.items():
        assert active == expected_cohorts[key][0]
        assert abs(revenue - expected_cohorts[key][1]) < 1e-6 * max(1.0, revenue)
    print("checked: orders by month, funnel counts and cohort cells equal their peers")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - started:.0f} s ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)")
