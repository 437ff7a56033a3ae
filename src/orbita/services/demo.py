"""The demo: a generated store, its strategy applied, and eight simulated weeks of it.

The generated history is split at `weeks` before its end: what came before is imported as
history (it triggers nothing), what comes after is played through the journeys as the
simulated clock passes it. The loop is closed: after each window the customers who were
sent a message answer it through the simulator's response model (opens, clicks and, with
the campaign's true uplift, an extra order), and those events flow back in — so each
journey's measured uplift against its holdout can be checked against the generator's truth.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sqlalchemy import and_, select

from orbita.analytics.experiments.report import Uplift, journey_uplifts
from orbita.analytics.kpis import KpiRow, compute_kpis, kpi_summary, options_for
from orbita.core.clock import SimulatedClock
from orbita.model.events import EventRecord
from orbita.model.strategy import Strategy
from orbita.services.apply import apply_strategy
from orbita.services.delivery import DeliveryReport
from orbita.services.generate import GenerateReport
from orbita.services.importer import ImportReport, import_customers, import_events, read_events
from orbita.services.journey_stats import JourneyStats, journeys_stats
from orbita.services.ltv import Group, ltv_report
from orbita.services.runner import RunReport, run_until
from orbita.services.segments import refresh_segments
from orbita.services.workspace import Workspace
from orbita.simulation.response import CAMPAIGNS, sample_responses
from orbita.store.state import customers, outbox

# What the channel's opens and clicks are called when they come back as events.
RESPONSE_EVENTS = {
    "smtp": ("Email Opened", "Email Clicked"),
    "sms": (None, "SMS Clicked"),
    "push": ("Push Opened", None),
    "telegram": ("Telegram Read", "Telegram Clicked"),
}
OPEN_FACTOR_KEY = {"smtp": "email", "sms": "sms", "push": "push", "telegram": "telegram"}
# The simulator's campaign a journey of the example strategies plays (by default its name).
CAMPAIGN_OF = {"bank": {"onboarding": "activation_nudge"}}


def campaign_of(store: str, journey: str) -> str:
    return CAMPAIGN_OF.get(store, {}).get(journey, journey)


# Per journey: what its messages did once delivered (human opens and clicks only).
JOURNEY_MESSAGE_KPIS = ("messages_delivered", "open_rate", "click_rate")


@dataclass(frozen=True, slots=True)
class JourneyOutcome:
    stats: JourneyStats
    true_uplift: float | None  # the generator's per-message uplift of the campaign
    measured: Uplift | None  # against the holdout, with intervals
    messages: dict[str, float | None]  # JOURNEY_MESSAGE_KPIS by name


@dataclass(frozen=True, slots=True)
class LtvByStage:
    model: str  # BG/NBD or Pareto/NBD, with Gamma-Gamma for spend
    horizon_months: int
    stages: tuple[Group, ...]


@dataclass(frozen=True, slots=True)
class DemoReport:
    history: ImportReport
    customers: ImportReport
    start: datetime
    until: datetime
    run: RunReport
    journeys: list[JourneyOutcome]
    responses: int  # opens, clicks and extra orders the simulated customers sent back
    delivery: DeliveryReport | None  # what the sender did, when the demo delivered
    kpis: list[KpiRow]  # the headline KPIs over the simulated weeks
    ltv: LtvByStage


def split_events(*, events_path: Path, at: datetime, out: Path) -> tuple[Path, Path]:
    """The generated events before `at` and from `at` on, as two Parquet files."""
    table = pq.read_table(events_path)
    cut = pa.scalar(at, type=table.schema.field("timestamp").type)
    before = table.filter(pc.less(table["timestamp"], cut))
    after = table.filter(pc.greater_equal(table["timestamp"], cut))
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / "history.parquet", out / "replay.parquet")
    pq.write_table(before, paths[0])
    pq.write_table(after, paths[1])
    return paths


def run_demo(
    *,
    workspace: Workspace,
    generated: GenerateReport,
    strategy: Strategy,
    content: str,
    source: str,
    end: datetime,
    weeks: int = 8,
    step: timedelta = timedelta(hours=6),
    seed: int = 7,
    progress: Callable[[str, int, int], None] | None = None,
    deliver: Callable[[datetime], DeliveryReport] | None = None,
) -> DemoReport:
    """Import, apply, and run `weeks` of simulated time ending at `end` (see the module).

    With `deliver` (the sender, opened by the caller on its channels), what is due is sent
    after each window, and customers answer the messages sent; without it they answer the
    messages queued."""
    notify = progress or (lambda _phase, _done, _total: None)
    start = end - timedelta(weeks=weeks)
    history_path, replay_path = split_events(
        events_path=generated.events_path, at=start, out=generated.events_path.parent / "demo"
    )
    workspace.clock = SimulatedClock(start)
    people = import_customers(workspace=workspace, path=generated.customers_path)
    history = import_events(workspace=workspace, path=history_path, progress=progress)
    applied = apply_strategy(workspace=workspace, strategy=strategy, content=content, source=source)
    assert applied.journeys is not None
    # Memberships as of the start: the run's refreshes then report changes, not everyone.
    refresh_segments(workspace=workspace, strategy=strategy, as_of=start)
    replay = read_events(workspace=workspace, path=replay_path)
    loop = _ClosedLoop(
        workspace=workspace, strategy=strategy, store=generated.store, seed=seed, deliver=deliver
    )
    total = (end - start).total_seconds()
    report = run_until(
        workspace=workspace,
        strategy=strategy,
        journeys=applied.journeys,
        start=start,
        until=end,
        events=replay,
        step=step,
        on_window=loop.respond,
        progress=lambda now: notify(
            "simulated weeks", int((now - start).total_seconds()), int(total)
        ),
    )
    truth = CAMPAIGNS.get(generated.store, {})
    measured = {
        uplift.journey: uplift
        for uplift in journey_uplifts(state=workspace.state, events=workspace.events, now=end)
    }
    options = options_for(strategy)
    messages: dict[str, dict[str, float | None]] = defaultdict(dict)
    for row in compute_kpis(
        events=workspace.events,
        state=workspace.state,
        start=start,
        end=end,
        grain="total",
        metrics=JOURNEY_MESSAGE_KPIS,
        dimensions=["journey"],
        options=options,
    ):
        messages[row.key][row.metric] = row.value
    outcomes = []
    for stats in journeys_stats(workspace=workspace):
        campaign = truth.get(campaign_of(generated.store, stats.name))
        outcomes.append(
            JourneyOutcome(
                stats,
                true_uplift=campaign.uplift if campaign else None,
                measured=measured.get(stats.name),
                messages=messages.get(stats.name, {}),
            )
        )
    values = ltv_report(workspace=workspace, strategy=strategy, as_of=end)
    return DemoReport(
        history=history,
        customers=people,
        start=start,
        until=end,
        run=report,
        journeys=outcomes,
        responses=loop.responses,
        delivery=loop.delivered if deliver is not None else None,
        kpis=kpi_summary(
            events=workspace.events, state=workspace.state, start=start, end=end, options=options
        ),
        ltv=LtvByStage(
            model=values.purchase_model,
            horizon_months=values.horizon_months,
            stages=tuple(stage for stage in values.stages if stage.customers),
        ),
    )


class _ClosedLoop:
    """The simulated customers' answers to what the journeys sent in a window."""

    def __init__(
        self,
        *,
        workspace: Workspace,
        strategy: Strategy,
        store: str,
        seed: int,
        deliver: Callable[[datetime], DeliveryReport] | None,
    ) -> None:
        self.workspace = workspace
        self.deliver = deliver
        self.delivered = DeliveryReport()
        self.strategy = strategy
        self.store = store
        self.seed = seed
        self.responses = 0
        self._answered: set[str] = set()  # runs whose first message was answered

    def respond(self, start: datetime, end: datetime) -> Iterable[EventRecord]:
        if self.deliver is not None:
            self.delivered += self.deliver(end)
            # Customers answer what reached them (quiet hours move a message's moment).
            moment = outbox.c.sent_at
            window = and_(outbox.c.status == "sent", moment > start, moment <= end)
        else:
            moment = outbox.c.created_at
            window = and_(moment >= start, moment < end)
        query = (
            select(
                outbox.c.run_id,
                outbox.c.journey,
                outbox.c.channel,
                outbox.c.template,
                moment,
                outbox.c.idempotency_key,
                customers.c.user_id,
            )
            .join(customers, customers.c.customer_id == outbox.c.customer_id)
            .where(outbox.c.kind == "send", window)
            .order_by(moment, outbox.c.outbox_id)
        )
        with self.workspace.state.connect() as connection:
            rows = connection.execute(query).all()
        campaigns = CAMPAIGNS.get(self.store, {})
        # One vectorised draw per (campaign, channel, moment); a customer's answer does not
        # depend on who else is drawn with them, so grouping changes no answer.
        groups: dict[tuple[str, str, datetime], list[Any]] = defaultdict(list)
        for row in rows:
            campaign = campaign_of(self.store, row.journey)
            if campaign in campaigns and row.user_id is not None:
                kind = self._channel_type(row.channel, row.template)
                groups[(campaign, kind, row[4])].append(row)
        records: list[EventRecord] = []
        for (campaign, kind, sent_at), members in groups.items():
            n = len(members)
            answers = sample_responses(
                store=self.store,
                campaign=campaign,
                seed=self.seed,
                now=sent_at,
                user_ids=[f"{row.user_id}:{row.idempotency_key}" for row in members],
                active=np.ones(n, dtype=np.bool_),
                goal_rate=np.zeros(n),  # orders they make anyway are in the history
                engagement=np.ones(n),
                order_value=np.full(n, 80.0),
                channel=OPEN_FACTOR_KEY.get(kind, "email"),
            )
            opened_name, clicked_name = RESPONSE_EVENTS.get(kind, (None, None))
            for i, row in enumerate(members):
                key, user_id = row.idempotency_key, row.user_id
                props = {"journey": row.journey, "template": row.template, "message": key}
                if answers.opened[i] and opened_name:
                    records.append(_event(opened_name, user_id, answers.opened_at[i], key, props))
                if answers.clicked[i] and clicked_name:
                    records.append(_event(clicked_name, user_id, answers.clicked_at[i], key, props))
                # Only a run's first message can bring an extra order: the campaign's true
                # uplift is per customer reached, which is what the journey's holdout measures.
                first = row.run_id not in self._answered
                self._answered.add(row.run_id)
                if answers.incremental[i] and first:
                    order = {"order_id": f"demo-{key[:12]}", "revenue": float(answers.value[i])}
                    goal = campaigns[campaign].goal_event
                    records.append(_event(goal, user_id, answers.converted_at[i], key, order))
        self.responses += len(records)
        return records

    def _channel_type(self, channel: str | None, template: str | None) -> str:
        name = channel
        if name is None and template is not None and template in self.strategy.templates:
            name = self.strategy.templates[template].channel
        found = self.strategy.channels.get(name or "")
        return found.type if found is not None else "smtp"


def _event(
    name: str, user_id: str, at_ms: Any, key: str, properties: dict[str, Any]
) -> EventRecord:
    moment = datetime.fromtimestamp(int(at_ms) / 1000, tz=UTC)
    digest = hashlib.sha256(f"{name}:{key}".encode()).hexdigest()[:24]
    return EventRecord(
        message_id=f"demo-{digest}",
        type="track",
        name=name,
        user_id=user_id,
        anonymous_id=None,
        properties=dict(properties),
        context={"library": {"name": "orbita-demo"}},
        timestamp=moment,
        received_at=moment,
    )
