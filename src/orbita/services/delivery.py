"""Delivery: queued outbox messages claimed, checked, rendered and sent; every decision
recorded with its reason in `delivery_attempts`.

    deliver_due     claim due rows in batches -> rules -> render -> send -> mark
    run_sender      deliver_due in a loop on a clock until told to stop (the worker's loop)
    recover_outbox  rows a dead sender left claimed: back to the queue, or sent (unconfirmed)

A row moves `queued` -> `sending` (claimed with a lease, one transaction per batch) ->
`sent` | `queued` again (transient failure: exponential backoff with jitter) | `dead`
(terminal, or out of attempts) | `skipped` (a rule said no). SMTP has a point of no return:
right before the final dot the row becomes `committing`, durably, in its own commit.

What a crash leaves, and what happens to it (DESIGN.md, Delivery guarantees):
- `sending`: the server never got the final dot (it drops such a transaction), so the
  message is sent again with the same Message-ID. HTTP providers get the same
  Idempotency-Key and deduplicate.
- `committing`: right after that commit the sender notes the message in its journal, a
  file of its own (`services.send_journal`), and then writes the dot, which the kernel
  delivers even when the process is killed. A row its journal names is not sent again
  (marked `sent`, `unconfirmed`); a row it does not name never got its dot (the sender died
  waiting for the database's answer to the commit, say) and is sent again.
So: exactly once at the server. The one gap is a kill in the microseconds between the
journal's write and the dot's, which loses that message; its row says unconfirmed. A
sender that ran on another host leaves no journal here: its `committing` rows are taken
as sent, unconfirmed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as time_of_day
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    bindparam,
    false,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from orbita.core.clock import Clock
from orbita.core.errors import InvalidInputError, NotFoundError, UserError
from orbita.model.channels import Channel, WebhookChannel
from orbita.model.delivery import ChannelClient, CommitPoint, DeliveryResult, OutgoingMessage
from orbita.model.durations import format_duration
from orbita.model.strategy import Strategy
from orbita.services.message_events import (
    MessageEvent,
    MessageEventKind,
    OnStored,
    record_message_events,
)
from orbita.services.recommendations import RecommendationCache, message_recommendations
from orbita.services.send_journal import Journal, SendJournal, discard_journals, journals
from orbita.services.send_rules import blocked_by_rules
from orbita.services.templates import (
    DEFAULT_CURRENCY,
    DEFAULT_LOCALE,
    CompiledTemplate,
    MessageContext,
    RenderedMessage,
    TemplateRenderError,
    compile_templates,
    render_message,
)
from orbita.services.tracking import (
    LinkTracker,
    store_links,
    track_message,
)
from orbita.services.tracking import check_link_token as check_link_token
from orbita.services.tracking import link_secret_for as link_secret_for
from orbita.services.tracking import link_token as link_token
from orbita.services.workspace import Workspace
from orbita.store.state import (
    consents,
    customers,
    delivery_attempts,
    outbox,
    suppressions,
)

ADDRESS_KINDS = {"smtp": "email", "sms": "phone", "telegram": "telegram", "push": "push"}


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    max_attempts: int = 8
    backoff_base: timedelta = timedelta(seconds=30)
    backoff_cap: timedelta = timedelta(hours=6)
    # How long a claim holds: a sender dead longer than this loses its rows to another.
    lease: timedelta = timedelta(minutes=5)
    batch_size: int = 500


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    claimed: int = 0
    sent: int = 0
    retried: int = 0
    dead: int = 0
    skipped: int = 0
    deferred: int = 0
    unconfirmed: int = 0
    recovered: int = 0
    batches: int = 0

    def __add__(self, other: DeliveryReport) -> DeliveryReport:
        return DeliveryReport(
            **{name: getattr(self, name) + getattr(other, name) for name in self.__slots__}
        )


class _Limiter:
    """Per channel: at most `concurrency` sends at once, and at most `rate` a second."""

    def __init__(self, *, concurrency: int, rate: float | None) -> None:
        self.slots = asyncio.Semaphore(concurrency)
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = 0.0

    async def wait_turn(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


@dataclass
class Delivery:
    """What a sender needs, prepared once: the strategy's compiled templates, a client per
    channel (opened by the edge, see `orbita.channels.open_channels`), limits, who it is."""

    strategy: Strategy
    templates: Mapping[str, CompiledTemplate]
    clients: Mapping[str, ChannelClient]
    worker_id: str = "sender"
    policy: DeliveryPolicy = DeliveryPolicy()
    # Signs unsubscribe links; None: marketing mail goes without one (tests, previews).
    link_secret: bytes | None = None
    # Where customers reach the server (`ORBITA_PUBLIC_URL`): with `link_secret`, links are
    # tracked, opens too, and a channel without its own unsubscribe URL uses the server's.
    public_url: str | None = None
    # Message events (`Email Sent`…) newly stored are handed here: a server's journeys.
    on_events: OnStored | None = None
    rng: random.Random = field(default_factory=random.Random)
    # What templates read as `recommendations` (deliver_due gives it the workspace's).
    recommendations: RecommendationCache | None = None
    _limiters: dict[str, _Limiter] = field(default_factory=dict)
    _recovered: bool = False
    _journal: SendJournal | None = None
    # What this sender's claims carry: its worker id and a token of this run, so that two
    # processes started with one worker id by mistake still never both send a message.
    claim_id: str = ""

    def __post_init__(self) -> None:
        if not self.claim_id:
            self.claim_id = f"{self.worker_id}/{secrets.token_hex(6)}"

    @functools.cached_property
    def tracker(self) -> LinkTracker | None:
        if self.link_secret is None or not self.public_url:
            return None
        return LinkTracker(secret=self.link_secret, public_url=self.public_url)

    def limiter(self, channel: str) -> _Limiter:
        if channel not in self._limiters:
            config = self.strategy.channels[channel]
            self._limiters[channel] = _Limiter(
                concurrency=config.concurrency, rate=config.rate_per_second
            )
        return self._limiters[channel]

    def journal(self, workspace: Workspace) -> SendJournal:
        if self._journal is None:
            self._journal = SendJournal(
                workspace_dir=workspace.settings.workspace, claim=self.claim_id
            )
        return self._journal

    def close_journal(self) -> None:
        """The run is over and its outcomes written: its journal is of no more use."""
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def webhook_channel(self) -> str | None:
        for name, config in self.strategy.channels.items():
            if isinstance(config, WebhookChannel):
                return name
        return None


def prepare_delivery(
    *,
    strategy: Strategy,
    base_dir: Path,
    clients: Mapping[str, ChannelClient],
    worker_id: str = "sender",
    policy: DeliveryPolicy | None = None,
    link_secret: bytes | None = None,
    public_url: str | None = None,
    on_events: OnStored | None = None,
    seed: int | None = None,
) -> Delivery:
    """Compile the templates (InvalidInputError naming each broken one) and check that every
    channel of the strategy has a client."""
    missing = sorted(set(strategy.channels) - set(clients))
    if missing:
        raise InvalidInputError(
            [], summary=f"no client for the channels {', '.join(missing)}: open them all"
        )
    return Delivery(
        strategy=strategy,
        templates=compile_templates(strategy=strategy, base_dir=base_dir),
        clients=clients,
        worker_id=worker_id,
        policy=policy or DeliveryPolicy(),
        link_secret=link_secret,
        public_url=public_url,
        on_events=on_events,
        rng=random.Random(seed),
    )


# --- the batch -----------------------------------------------------------------------------


@dataclass
class _Decision:
    row: Mapping[str, Any]
    outcome: str  # sent | retry | dead | skipped | unconfirmed
    reason: str
    result: DeliveryResult | None = None
    next_attempt_at: datetime | None = None


def _is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def _claim(
    connection: Connection, *, now: datetime, limit: int, worker: str, lease: timedelta
) -> list[dict[str, Any]]:
    if not _is_postgres(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite: one writer claims at a time
    query = (
        select(outbox)
        # The partial index's predicate as text: SQLite uses the index only then.
        .where(text("status = 'queued'"), outbox.c.next_attempt_at <= now)
        .order_by(outbox.c.next_attempt_at)
        .limit(limit)
    )
    if _is_postgres(connection):
        query = query.with_for_update(skip_locked=True)
    rows = [dict(row._mapping) for row in connection.execute(query)]
    if rows:
        connection.execute(
            update(outbox)
            .where(outbox.c.outbox_id.in_([row["outbox_id"] for row in rows]))
            .values(
                status="sending",
                claimed_by=worker,
                claimed_until=now + lease,
                attempts=outbox.c.attempts + 1,
            )
        )
        for row in rows:
            row["attempts"] += 1
    return rows


def _profiles(connection: Connection, ids: set[int]) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for row in connection.execute(select(customers).where(customers.c.customer_id.in_(ids))):
        found[int(row.customer_id)] = dict(row._mapping)
    return found


def _blocked(
    connection: Connection, rows: Sequence[Mapping[str, Any]], addresses: Mapping[int, str]
) -> tuple[dict[tuple[str, str], str], dict[tuple[int, str, str], bool]]:
    """Suppressed addresses and consent decisions of this batch's customers."""
    wanted = {value for value in addresses.values() if value}
    suppressed: dict[tuple[str, str], str] = {}
    if wanted:
        for row in connection.execute(
            select(suppressions).where(suppressions.c.address.in_(sorted(wanted)))
        ):
            suppressed[(row.kind, row.address)] = row.reason
    ids = {int(row["customer_id"]) for row in rows}
    decided: dict[tuple[int, str, str], bool] = {}
    if ids:
        for row in connection.execute(select(consents).where(consents.c.customer_id.in_(ids))):
            decided[(int(row.customer_id), row.channel, row.topic)] = bool(row.granted)
    return suppressed, decided


def _address(config: Channel, row: Mapping[str, Any], profile: Mapping[str, Any]) -> str | None:
    if config.type == "smtp":
        return profile.get("email")
    if config.type == "sms":
        return profile.get("phone")
    if config.type == "telegram":
        return profile.get("telegram_chat_id")
    if config.type == "push":
        token = (profile.get("traits") or {}).get("push_token")
        return str(token) if token else None
    url = (row.get("payload") or {}).get("url")
    return str(url) if url else None


def _context(
    delivery: Delivery, row: Mapping[str, Any], profile: Mapping[str, Any], unsubscribe: str
) -> MessageContext:
    traits = dict(profile.get("traits") or {})
    payload = row.get("payload") or {}
    properties = dict(payload.get("properties") or {})
    customer = {
        **traits,
        "id": profile.get("customer_id"),
        "user_id": profile.get("user_id"),
        "email": profile.get("email"),
        "phone": profile.get("phone"),
        "timezone": profile.get("timezone"),
        "locale": profile.get("locale"),
    }
    customer = {key: value for key, value in customer.items() if value is not None}
    return MessageContext(
        customer=customer,
        event={"name": payload.get("trigger_event"), "properties": properties, **properties},
        journey={
            "name": row["journey"],
            "node": row["node"],
            "run_id": row["run_id"],
            "variant": row.get("variant"),
        },
        message={"key": row["idempotency_key"], "unsubscribe_url": unsubscribe},
        extra={
            "recommendations": message_recommendations(
                cache=delivery.recommendations,
                customer_id=profile.get("customer_id"),
                properties=properties,
                traits=traits,
            )
        },
        locale=str(profile.get("locale") or traits.get("locale") or DEFAULT_LOCALE),
        currency=str(traits.get("currency") or properties.get("currency") or DEFAULT_CURRENCY),
        timezone=str(profile.get("timezone") or delivery.strategy.timezone),
    )


def _unsubscribe_url(delivery: Delivery, config: Channel, key: str) -> str:
    template = getattr(config, "unsubscribe_url", None)
    if delivery.link_secret is None:
        return ""
    if not template:
        tracker = delivery.tracker  # the server's own one-click endpoint and preference page
        return tracker.unsubscribe_url(key) if tracker is not None else ""
    return str(template).replace("{token}", link_token(delivery.link_secret, key))


def _prepare(
    delivery: Delivery,
    row: Mapping[str, Any],
    profile: Mapping[str, Any] | None,
    *,
    now: datetime,
    suppressed: Mapping[tuple[str, str], str],
    decided: Mapping[tuple[int, str, str], bool],
    caps: _Caps,
) -> tuple[str, OutgoingMessage] | _Decision:
    """The channel and message for a row, or the decision not to send it."""
    strategy = delivery.strategy
    key = row["idempotency_key"]
    if row["kind"] == "webhook":
        name = delivery.webhook_channel()
        if name is None:
            return _Decision(row, "dead", "no webhook channel in the strategy (type: webhook)")
        payload = row.get("payload") or {}
        body = payload.get("body") or {
            "journey": row["journey"],
            "customer_id": row["customer_id"],
            "event": payload.get("trigger_event"),
            "properties": payload.get("properties") or {},
        }
        return name, OutgoingMessage(
            key=key,
            channel=name,
            to=str(payload.get("url") or ""),
            at=now,
            body=body,
            method=str(payload.get("method") or "POST"),
        )
    template = delivery.templates.get(row["template"] or "")
    if template is None:
        return _Decision(row, "dead", f"template {row['template']!r} is not in the strategy")
    channel = row["channel"] or template.channel
    config = strategy.channels.get(channel)
    if config is None:
        return _Decision(row, "dead", f"channel {channel!r} is not in the strategy")
    checked = send_rules(
        row,
        profile,
        strategy=strategy,
        template=template,
        channel=channel,
        config=config,
        now=now,
        suppressed=suppressed,
        decided=decided,
        caps=caps,
    )
    if isinstance(checked, _Decision):
        return checked
    assert profile is not None  # send_rules turns a missing customer away
    address = checked
    unsubscribe = "" if template.transactional else _unsubscribe_url(delivery, config, key)
    try:
        rendered = render_message(
            template,
            variant=row.get("variant"),
            context=_context(delivery, row, profile, unsubscribe),
        )
    except TemplateRenderError as error:
        return _Decision(row, "dead", str(error))
    return channel, OutgoingMessage(
        key=key,
        channel=channel,
        to=address,
        at=now,
        subject=rendered.subject,
        preheader=rendered.preheader,
        sender=rendered.sender,
        reply_to=rendered.reply_to,
        html=rendered.html,
        text=rendered.text,
        url=rendered.url,
        unsubscribe_url=unsubscribe or None,
    )


def send_rules(
    row: Mapping[str, Any],
    profile: Mapping[str, Any] | None,
    *,
    strategy: Strategy,
    template: CompiledTemplate,
    channel: str,
    config: Channel,
    now: datetime,
    suppressed: Mapping[tuple[str, str], str],
    decided: Mapping[tuple[int, str, str], bool],
    caps: _Caps,
) -> _Decision | str:
    """The send-time rules for one message: the decision not to send it now (no address,
    suppressed, no consent, quiet hours, frequency cap), or the address it goes to. A
    message let through counts against the cap. Broadcasts' dry run asks the same."""
    if profile is None:
        return _Decision(row, "skipped", "the customer no longer exists")
    address = _address(config, row, profile)
    if not address:
        kind = ADDRESS_KINDS.get(config.type, config.type)
        return _Decision(row, "skipped", f"the customer has no {kind} address")
    kind = ADDRESS_KINDS.get(config.type, config.type)
    if (kind, address) in suppressed:
        return _Decision(row, "skipped", f"suppressed: {suppressed[(kind, address)]}")
    customer_id = int(row["customer_id"])
    for scope in ((channel, template.topic), ("*", template.topic), (channel, "*"), ("*", "*")):
        granted = decided.get((customer_id, *scope))
        if granted is False and not (template.transactional and "*" in scope[1]):
            return _Decision(
                row, "skipped", f"no consent: {template.topic} on {channel} was withdrawn"
            )
    if not template.transactional:
        zone = str(profile.get("timezone") or strategy.timezone)
        quiet = config.quiet_hours
        wake = quiet_until(now, quiet.start, quiet.end, zone) if quiet is not None else None
        if wake is not None and quiet is not None:
            return _Decision(
                row,
                "deferred",
                f"quiet hours {quiet.start:%H:%M}-{quiet.end:%H:%M} in {zone}: "
                f"deferred to {wake.isoformat()}",
                next_attempt_at=wake,
            )
        cap = config.frequency_cap
        if cap is not None and not caps.allows(customer_id, channel, cap.messages, cap.per, now):
            return _Decision(
                row,
                "skipped",
                f"frequency cap: {cap.messages} marketing messages per "
                f"{format_duration(cap.per)} on {channel} reached",
            )
        caps.count(customer_id, channel, now)
    return address


def quiet_until(now: datetime, start: time_of_day, end: time_of_day, zone: str) -> datetime | None:
    """When quiet hours (`start` to `end`, local time in `zone`) that hold at `now` end;
    None when they do not hold. A window may span midnight."""
    local = now.astimezone(ZoneInfo(zone))
    clock = local.time().replace(tzinfo=None)
    spans_midnight = start > end
    inside = (start <= clock or clock < end) if spans_midnight else (start <= clock < end)
    if not inside:
        return None
    day = local.date()
    if spans_midnight and clock >= start:
        day = day + timedelta(days=1)
    wake = datetime.combine(day, end, tzinfo=ZoneInfo(zone))
    # A wall-clock time skipped by a DST change: fold onto the real instant after it.
    return wake.astimezone(UTC)


@dataclass
class _Caps:
    """Marketing messages sent to the batch's customers within the caps' windows, per
    channel, and those this batch adds as it goes."""

    sent: dict[tuple[int, str], list[datetime]] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        connection: Connection,
        delivery: Delivery,
        rows: Sequence[Mapping[str, Any]],
        *,
        now: datetime,
    ) -> _Caps:
        windows = [
            config.frequency_cap.per
            for config in delivery.strategy.channels.values()
            if config.frequency_cap is not None
        ]
        caps = cls()
        if not windows:
            return caps
        ids = sorted({int(row["customer_id"]) for row in rows})
        query = select(
            outbox.c.customer_id, outbox.c.template, outbox.c.channel, outbox.c.sent_at
        ).where(
            outbox.c.customer_id.in_(ids),
            outbox.c.sent_at >= now - max(windows),
            outbox.c.status == "sent",
            outbox.c.kind == "send",
        )
        for customer_id, template_name, channel, sent_at in connection.execute(query):
            template = delivery.templates.get(template_name or "")
            if template is None or template.transactional:
                continue
            caps.count(int(customer_id), channel or template.channel, sent_at)
        return caps

    def allows(
        self, customer: int, channel: str, messages: int, per: timedelta, now: datetime
    ) -> bool:
        recent = self.sent.get((customer, channel), [])
        return sum(1 for at in recent if at > now - per) < messages

    def count(self, customer: int, channel: str, at: datetime) -> None:
        self.sent.setdefault((customer, channel), []).append(at)


class _CommitPoints:
    """Records the point of no return of one message at a time, each in its own commit, on
    a DB-API connection kept open for it, then in the sender's journal right before the
    dot (`services.send_journal`)."""

    def __init__(self, workspace: Workspace, worker: str, journal: SendJournal) -> None:
        self.raw = workspace.state.raw_connection()
        self.worker = worker
        self.journal = journal
        mark = "?" if workspace.state.dialect.paramstyle == "qmark" else "%s"
        # Plain SQL on purpose: this runs once per message, between two SMTP writes.
        self.sql = (
            "UPDATE outbox SET status = 'committing' "
            f"WHERE outbox_id = {mark} AND status = 'sending' AND claimed_by = {mark}"
        )

    def point(self, outbox_id: int) -> CommitPoint:
        def commit() -> bool:
            cursor = self.raw.cursor()
            try:
                cursor.execute(self.sql, (outbox_id, self.worker))
                changed = cursor.rowcount
            finally:
                cursor.close()
            self.raw.commit()
            if changed != 1:
                return False
            self.journal.about_to_finish(outbox_id)  # the last thing before the dot
            return True

        return commit

    def close(self) -> None:
        self.raw.close()


def _backoff(delivery: Delivery, attempts: int, retry_after: float | None) -> timedelta:
    policy = delivery.policy
    delay: timedelta = min(policy.backoff_cap, policy.backoff_base * (2 ** max(0, attempts - 1)))
    jittered: timedelta = delay * (0.5 + delivery.rng.random() / 2)  # "equal jitter": 50-100 %
    if retry_after is not None:
        jittered = max(jittered, timedelta(seconds=retry_after))
    return jittered


def _decide(
    delivery: Delivery, row: Mapping[str, Any], result: DeliveryResult, *, now: datetime
) -> _Decision:
    if result.status == "delivered":
        outcome = "unconfirmed" if result.unconfirmed else "sent"
        return _Decision(row, outcome, result.detail or "delivered", result)
    if result.status == "terminal":
        return _Decision(row, "dead", result.detail, result)
    attempts = int(row["attempts"])
    if attempts >= delivery.policy.max_attempts:
        reason = f"gave up after {attempts} attempts: {result.detail}"
        return _Decision(row, "dead", reason, result)
    wait = _backoff(delivery, attempts, result.retry_after)
    return _Decision(row, "retry", result.detail, result, next_attempt_at=now + wait)


async def _send_one(
    delivery: Delivery,
    channel: str,
    message: OutgoingMessage,
    row: Mapping[str, Any],
    points: _CommitPoints,
    *,
    now: datetime,
) -> _Decision:
    limiter = delivery.limiter(channel)
    async with limiter.slots:
        await limiter.wait_turn()
        client = delivery.clients[channel]
        result = await client.send(message, commit=points.point(int(row["outbox_id"])))
    if result.status == "delivered" and not result.unconfirmed:
        points.journal.taken(int(row["outbox_id"]))
    return _decide(delivery, row, result, now=now)


# Rendered messages are handed to the connections this many at a time, each group's links
# stored in one write: small enough that no connection waits long for work.
_RELEASE_EVERY = 16

_STATUS = {"sent": "sent", "unconfirmed": "sent", "retry": "queued", "dead": "dead"}
_STATUS |= {"skipped": "skipped", "deferred": "queued"}


def _write(
    connection: Connection,
    decisions: Sequence[_Decision],
    *,
    now: datetime,
    worker: str,
) -> None:
    """Each row's new state, fenced by the claim, and the attempt with its reason."""
    updates = []
    for decision in decisions:
        result = decision.result
        updates.append(
            {
                "b_id": decision.row["outbox_id"],
                "b_status": _STATUS[decision.outcome],
                # Quiet hours defer a message without using one of its attempts.
                "b_refund": 1 if decision.outcome == "deferred" else 0,
                "b_next": decision.next_attempt_at,
                "b_sent_at": now if decision.outcome in ("sent", "unconfirmed") else None,
                "b_provider": result.provider_id if result is not None else None,
                "b_result": {"outcome": decision.outcome, "reason": decision.reason[:1000]},
            }
        )
    connection.execute(
        update(outbox)
        .where(
            outbox.c.outbox_id == bindparam("b_id"),
            outbox.c.claimed_by == worker,
            text("status IN ('sending', 'committing')"),
        )
        .values(
            # Bind names differ from column names: an executemany UPDATE needs that.
            status=bindparam("b_status"),
            attempts=outbox.c.attempts - bindparam("b_refund"),
            next_attempt_at=bindparam("b_next"),
            sent_at=bindparam("b_sent_at"),
            provider_id=bindparam("b_provider"),
            result=bindparam("b_result", type_=outbox.c.result.type),
            claimed_by=None,
            claimed_until=None,
        ),
        updates,
    )
    connection.execute(
        insert(delivery_attempts),
        [
            {
                "outbox_id": decision.row["outbox_id"],
                "customer_id": decision.row["customer_id"],
                "attempt": decision.row["attempts"],
                "at": now,
                "outcome": decision.outcome,
                "reason": decision.reason[:1000],
                "worker": worker,
            }
            for decision in decisions
        ],
    )


def recover_outbox(
    *,
    workspace: Workspace,
    worker_id: str | None,
    now: datetime,
    strategy: Strategy | None = None,
) -> int:
    """Rows left claimed by a sender that died: this worker id's own (it restarted: a worker
    id names one sender process at a time) and any whose lease ran out. `sending` goes back
    to the queue (the server never got the message). A `committing` row goes by the dead
    sender's journal (`services.send_journal`): back to the queue if its dot was never
    written, `sent` if the server took it, else `sent`, unconfirmed (it was, as far as can
    be known); with no journal here, unconfirmed. A claim whose sender still runs here
    (its journal locked) is left alone. `strategy` names the message events of what was
    sent."""
    found = journals(workspace.settings.workspace)
    with workspace.state.begin() as connection:
        if not _is_postgres(connection):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        query = select(
            outbox.c.outbox_id,
            outbox.c.customer_id,
            outbox.c.idempotency_key,
            outbox.c.attempts,
            outbox.c.status,
            outbox.c.claimed_by,
        ).where(
            text("status IN ('sending', 'committing')"),
            or_(
                outbox.c.claimed_until < now,
                outbox.c.claimed_by.startswith(f"{worker_id}/", autoescape=True)
                if worker_id is not None
                else false(),
            ),
        )
        if _is_postgres(connection):
            query = query.with_for_update(skip_locked=True)
        rows = [
            dict(row._mapping)
            for row in connection.execute(query)
            if not _alive(found.get(str(row.claimed_by)))
        ]
        for row in rows:
            row["outcome"], row["reason"] = _recovered(row, found.get(str(row["claimed_by"])))
        requeue = [r["outbox_id"] for r in rows if r["outcome"] == "requeued"]
        if requeue:
            connection.execute(
                update(outbox)
                .where(outbox.c.outbox_id.in_(requeue))
                .values(status="queued", next_attempt_at=now, claimed_by=None, claimed_until=None)
            )
        for outcome in ("sent", "unconfirmed"):
            sent = [r["outbox_id"] for r in rows if r["outcome"] == outcome]
            if sent:
                connection.execute(
                    update(outbox)
                    .where(outbox.c.outbox_id.in_(sent))
                    .values(
                        status="sent",
                        sent_at=now,
                        claimed_by=None,
                        claimed_until=None,
                        result={"outcome": outcome, "reason": _RECOVERED_SENT[outcome]},
                    )
                )
        if rows:
            connection.execute(
                insert(delivery_attempts),
                [
                    {
                        "outbox_id": r["outbox_id"],
                        "customer_id": r["customer_id"],
                        "attempt": r["attempts"],
                        "at": now,
                        "outcome": r["outcome"],
                        "reason": r["reason"],
                        "worker": worker_id or "(lease expired)",
                    }
                    for r in rows
                ],
            )
        done = {str(r["claimed_by"]) for r in rows}
        if worker_id is not None:  # its earlier runs are over, rows left or not
            done |= {
                claim
                for claim, journal in found.items()
                if claim.startswith(f"{worker_id}/") and not journal.alive
            }
        left = connection.execute(
            select(outbox.c.claimed_by)
            .distinct()
            .where(text("status IN ('sending', 'committing')"), outbox.c.claimed_by.in_(done))
        ).scalars()
        done -= {str(claim) for claim in left}
    discard_journals(workspace.settings.workspace, done)
    events = [
        MessageEvent(kind=kind, key=r["idempotency_key"], at=now)
        for r in rows
        for kind in _RECOVERED_EVENTS.get(r["outcome"], ())
    ]
    if events:
        record_message_events(workspace=workspace, events=events, strategy=strategy)
    return len(rows)


_RECOVERED_SENT = {
    "sent": "the server took it; the sender stopped before writing that down",
    "unconfirmed": "the sender stopped after the point of no return",
}
_RECOVERED_EVENTS: dict[str, tuple[MessageEventKind, ...]] = {
    "sent": ("sent", "delivered"),
    "unconfirmed": ("sent",),
}


def _alive(journal: Journal | None) -> bool:
    """The claim's sender is still running here (its journal is locked): not ours to take."""
    return journal is not None and journal.alive


def _recovered(row: Mapping[str, Any], journal: Journal | None) -> tuple[str, str]:
    """What becomes of a row a dead sender left claimed, and why."""
    claim = row["claimed_by"]
    if row["status"] == "sending":
        return "requeued", f"{claim} stopped before the message was committed"
    outbox_id = int(row["outbox_id"])
    if journal is not None and outbox_id not in journal.dots:
        return "requeued", f"{claim} stopped before the final dot (its journal): sent again"
    if journal is not None and outbox_id in journal.taken:
        return "sent", f"{claim} stopped after the server took it (its journal)"
    return "unconfirmed", f"{claim} stopped after the point of no return"


async def deliver_due(
    *,
    workspace: Workspace,
    delivery: Delivery,
    now: datetime,
    max_batches: int | None = None,
) -> DeliveryReport:
    """Send every outbox message due at `now`, a batch (`policy.batch_size`) at a time.

    The first call of a `Delivery` first recovers what this worker left claimed when it
    last stopped (and, on every call, what other senders left past their lease)."""
    if now.tzinfo is None:
        raise InvalidInputError([], summary="deliver_due needs an aware datetime")
    worker = delivery.claim_id
    if delivery.recommendations is None:
        delivery.recommendations = RecommendationCache(workspace=workspace)
    recovered = 0
    if not delivery._recovered:
        recovered = recover_outbox(
            workspace=workspace, worker_id=delivery.worker_id, now=now, strategy=delivery.strategy
        )
        delivery._recovered = True
    else:
        recovered = _recover_expired(workspace, delivery, now)
    report = DeliveryReport(recovered=recovered)
    points = _CommitPoints(workspace, worker, delivery.journal(workspace))
    try:
        while max_batches is None or report.batches < max_batches:
            batch = await _deliver_batch(workspace, delivery, points, now=now)
            if batch.claimed == 0:
                break
            report = report + batch
            if batch.claimed < delivery.policy.batch_size:
                break
    finally:
        points.close()
    return report


def _recover_expired(workspace: Workspace, delivery: Delivery, now: datetime) -> int:
    with workspace.state.connect() as connection:
        stale = connection.execute(
            select(outbox.c.outbox_id)
            .where(text("status IN ('sending', 'committing')"), outbox.c.claimed_until < now)
            .limit(1)
        ).first()
    if stale is None:
        return 0
    # Another sender's lease ran out; our own live claims are never older than one batch.
    return recover_outbox(workspace=workspace, worker_id=None, now=now, strategy=delivery.strategy)


async def _deliver_batch(
    workspace: Workspace, delivery: Delivery, points: _CommitPoints, *, now: datetime
) -> DeliveryReport:
    policy = delivery.policy
    with workspace.state.begin() as connection:
        rows = _claim(
            connection,
            now=now,
            limit=policy.batch_size,
            worker=delivery.claim_id,
            lease=policy.lease,
        )
    if not rows:
        return DeliveryReport()
    with workspace.state.connect() as connection:
        profiles = _profiles(connection, {int(row["customer_id"]) for row in rows})
        suppressed, decided = _suppression_and_consent(connection, rows, profiles)
        caps = _Caps.load(connection, delivery, rows, now=now)
    # The strategy's send rules: what changed since a journey queued a message counts.
    blocked = blocked_by_rules(
        events=workspace.events,
        strategy=delivery.strategy,
        rows=rows,
        profiles=profiles,
        now=now,
    )
    decisions = await _render_and_send(
        workspace,
        delivery,
        points,
        rows,
        now=now,
        profiles=profiles,
        blocked=blocked,
        checks=(suppressed, decided, caps),
    )
    with workspace.state.begin() as connection:
        _write(connection, decisions, now=now, worker=delivery.claim_id)
    points.journal.clear()  # every message of the batch has its outcome now
    _record_sent(workspace, delivery, decisions, now=now)
    counts = {"sent": 0, "retry": 0, "dead": 0, "skipped": 0, "unconfirmed": 0, "deferred": 0}
    for decision in decisions:
        counts[decision.outcome] += 1
    return DeliveryReport(
        claimed=len(rows),
        sent=counts["sent"] + counts["unconfirmed"],
        retried=counts["retry"],
        dead=counts["dead"],
        skipped=counts["skipped"],
        deferred=counts["deferred"],
        unconfirmed=counts["unconfirmed"],
        batches=1,
    )


async def _io_turn() -> None:
    """Let the connections move before the next render. The event loop runs its ready
    callbacks in order, and this task's wake-up is queued before the ones it lets in: on
    the first turn the loop polls the sockets, on the second their replies are read and
    wake the sends waiting on them, on the third those sends write their next command."""
    for _turn in range(3):
        await asyncio.sleep(0)


async def _render_and_send(
    workspace: Workspace,
    delivery: Delivery,
    points: _CommitPoints,
    rows: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    profiles: Mapping[int, Mapping[str, Any]],
    blocked: Mapping[int, str],
    checks: tuple[Mapping[tuple[str, str], str], Mapping[tuple[int, str, str], bool], _Caps],
) -> list[_Decision]:
    """Each row's decision: rules, render and send. Rendering is this process's work and
    sending mostly the server's, so messages go out as they are rendered: between two
    renders the event loop reads the servers' replies and moves every connection on, and
    both run at once instead of one after the other."""
    suppressed, decided, caps = checks
    decisions: list[_Decision] = []
    sending: list[asyncio.Task[_Decision]] = []
    ready: list[tuple[str, OutgoingMessage, Mapping[str, Any]]] = []
    links: dict[int, list[str]] = {}

    def release() -> None:
        """Send what is rendered, its links stored first (a click may come back at once)."""
        if links:
            with workspace.state.begin() as connection:
                store_links(connection, links)
            links.clear()
        for channel, message, row in ready:
            sending.append(
                asyncio.create_task(_send_one(delivery, channel, message, row, points, now=now))
            )
        ready.clear()

    try:
        for row in rows:
            if int(row["outbox_id"]) in blocked:
                decisions.append(_Decision(row, "skipped", blocked[int(row["outbox_id"])]))
                continue
            prepared = _prepare(
                delivery,
                row,
                profiles.get(int(row["customer_id"])),
                now=now,
                suppressed=suppressed,
                decided=decided,
                caps=caps,
            )
            if isinstance(prepared, _Decision):
                decisions.append(prepared)
                continue
            channel, message = prepared
            message = _tracked(delivery, channel, message, int(row["outbox_id"]), links)
            ready.append((channel, message, row))
            if len(ready) >= _RELEASE_EVERY:
                release()
            await _io_turn()
        release()
        decisions.extend(await asyncio.gather(*sending))
    except BaseException:
        # A failed batch leaves its rows claimed for recovery; sends not finished stop here.
        for task in sending:
            task.cancel()
        raise
    return decisions


def _tracked(
    delivery: Delivery,
    channel: str,
    message: OutgoingMessage,
    outbox_id: int,
    links: dict[int, list[str]],
) -> OutgoingMessage:
    """The message with tracked links and open pixel, as its channel asks; its links kept
    in `links` to be stored before it is sent."""
    tracker = delivery.tracker
    config = delivery.strategy.channels[channel]
    opens = bool(getattr(config, "track_opens", False))
    clicks = bool(getattr(config, "track_clicks", False))
    if tracker is None or not (opens or clicks):
        return message
    tracked, urls = track_message(tracker, message, opens=opens, clicks=clicks)
    if urls:
        links[outbox_id] = urls
    return tracked


def _record_sent(
    workspace: Workspace, delivery: Delivery, decisions: Sequence[_Decision], *, now: datetime
) -> None:
    """`Email Sent` and `Email Delivered` (the server took it; unconfirmed: sent only)…"""
    events = []
    for decision in decisions:
        if decision.outcome not in ("sent", "unconfirmed"):
            continue
        key = decision.row["idempotency_key"]
        events.append(MessageEvent(kind="sent", key=key, at=now))
        if decision.outcome == "sent":
            events.append(MessageEvent(kind="delivered", key=key, at=now))
    if events:
        record_message_events(
            workspace=workspace,
            events=events,
            strategy=delivery.strategy,
            on_stored=delivery.on_events,
        )


def _suppression_and_consent(
    connection: Connection,
    rows: Sequence[Mapping[str, Any]],
    profiles: Mapping[int, Mapping[str, Any]],
) -> tuple[dict[tuple[str, str], str], dict[tuple[int, str, str], bool]]:
    addresses: dict[int, str] = {}
    index = 0
    for profile in profiles.values():
        for name in ("email", "phone", "telegram_chat_id"):
            value = profile.get(name)
            if value:
                addresses[index] = str(value)
                index += 1
        token = (profile.get("traits") or {}).get("push_token")
        if token:
            addresses[index] = str(token)
            index += 1
    return _blocked(connection, rows, addresses)


async def run_sender(
    *,
    workspace: Workspace,
    delivery: Delivery,
    clock: Clock,
    stop: asyncio.Event,
    idle_seconds: float = 1.0,
) -> DeliveryReport:
    """The sender's loop: deliver what is due, sleep `idle_seconds` when nothing was, until
    `stop` is set. Returns the totals."""
    total = DeliveryReport()
    while not stop.is_set():
        report = await deliver_due(workspace=workspace, delivery=delivery, now=clock.now())
        total = total + report
        if report.claimed == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=idle_seconds)
    delivery.close_journal()
    return total


class BlockingSender:
    """`deliver_due` for callers without an event loop (a synchronous worker, the demo): one
    event loop kept for the sender's life, so SMTP connections are reused across calls.

        sender = BlockingSender(delivery=prepare_delivery(...))
        report = sender.deliver_due(workspace=workspace, now=clock.now())
        sender.close()
    """

    def __init__(self, *, delivery: Delivery) -> None:
        self.delivery = delivery
        self._runner = asyncio.Runner()

    def deliver_due(
        self, *, workspace: Workspace, now: datetime, max_batches: int | None = None
    ) -> DeliveryReport:
        return self._runner.run(
            deliver_due(
                workspace=workspace, delivery=self.delivery, now=now, max_batches=max_batches
            )
        )

    def close(self) -> None:
        async def close_all() -> None:
            for client in self.delivery.clients.values():
                await client.close()

        try:
            self._runner.run(close_all())
        finally:
            self._runner.close()
            self.delivery.close_journal()

    def __enter__(self) -> BlockingSender:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


# --- preview -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preview:
    template: str
    channel: str
    customer_id: int
    to: str | None
    message: RenderedMessage


def preview_message(
    *,
    workspace: Workspace,
    strategy: Strategy,
    base_dir: Path,
    template: str,
    customer: str,
    variant: str | None = None,
    properties: Mapping[str, Any] | None = None,
    event: str | None = None,
) -> Preview:
    """Exactly what a customer (a user id, or `#<customer id>`) would get from a template,
    with `properties` standing in for the trigger event's. Nothing is sent or stored."""
    compiled = compile_templates(strategy=strategy, base_dir=base_dir)
    found = compiled.get(template)
    if found is None:
        known = ", ".join(sorted(compiled)) or "none"
        raise NotFoundError(f"no template {template!r} in the strategy (templates: {known})")
    with workspace.state.connect() as connection:
        query = select(customers)
        if customer.startswith("#") and customer[1:].isdigit():
            query = query.where(customers.c.customer_id == int(customer[1:]))
        else:
            query = query.where(customers.c.user_id == customer)
        row = connection.execute(query).first()
    if row is None:
        raise NotFoundError(f"no customer {customer!r}")
    profile = dict(row._mapping)
    config = strategy.channels[found.channel]
    key = "preview"
    outbox_row = {
        "idempotency_key": key,
        "journey": "(preview)",
        "node": "(preview)",
        "run_id": "(preview)",
        "variant": variant,
        "payload": {"trigger_event": event, "properties": dict(properties or {})},
    }
    delivery = Delivery(
        strategy=strategy,
        templates=compiled,
        clients={},
        recommendations=RecommendationCache(workspace=workspace),
    )
    unsubscribe = "" if found.transactional else _unsubscribe_url(delivery, config, key)
    try:
        rendered = render_message(
            found, variant=variant, context=_context(delivery, outbox_row, profile, unsubscribe)
        )
    except TemplateRenderError as error:
        raise UserError(f"{error} (for customer {customer!r})") from None
    return Preview(
        template=template,
        channel=found.channel,
        customer_id=int(profile["customer_id"]),
        to=_address(config, outbox_row, profile),
        message=rendered,
    )


def outbox_status(*, workspace: Workspace, dead_limit: int = 20) -> dict[str, Any]:
    """Messages per status, how many of those sent are unconfirmed (a sender stopped after
    the final dot, before the server's answer), and the latest dead letters with their
    reasons."""
    with workspace.state.connect() as connection:
        counts = {
            str(status): int(n)
            for status, n in connection.execute(
                select(outbox.c.status, func.count()).group_by(outbox.c.status)
            )
        }
        unconfirmed = connection.execute(
            select(func.count()).where(
                outbox.c.status == "sent",
                outbox.c.result["outcome"].as_string() == "unconfirmed",
            )
        ).scalar_one()
        dead = [
            {
                "outbox_id": row.outbox_id,
                "journey": row.journey,
                "template": row.template,
                "customer_id": row.customer_id,
                "attempts": row.attempts,
                "reason": (row.result or {}).get("reason", ""),
            }
            for row in connection.execute(
                select(outbox)
                .where(outbox.c.status == "dead")
                .order_by(outbox.c.outbox_id.desc())
                .limit(dead_limit)
            )
        ]
    return {"counts": counts, "unconfirmed": int(unconfirmed), "dead": dead}
