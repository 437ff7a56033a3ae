"""Tracking: signed links in sent messages, and what a customer's click, open or
unsubscribe does when it reaches the server.

    /t/o/<token>.gif   the open pixel          token: the message key, signed for "open"
    /t/c/<token>       a click, 302 to the URL token: the key and the link's index, signed
    /t/u/<token>       unsubscribe: one-click POST (RFC 8058), or the preference page

Links are rewritten by the sender when it renders a message (`track_message`), and the
message's links are stored with its outbox row before it is sent: a click redirects only to
a URL that was in that message, looked up by index, so a valid token cannot be made to send
anyone elsewhere (no open redirect), and an unknown or altered token redirects nowhere.

Machines open and click too: mail privacy proxies fetch every image at delivery, security
scanners follow every link. A hit that looks like one (`classify_hit`) is recorded as a bot
event with its reason (`Email Opened by Bot`), not as a customer's open or click.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import html
import ipaddress
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from orbita.core.settings import Settings
from orbita.model.delivery import OutgoingMessage
from orbita.model.strategy import Strategy
from orbita.services.journeys import CustomerEvent
from orbita.services.message_events import (
    MessageEvent,
    message_channel,
    message_facts,
    record_message_events,
)
from orbita.services.workspace import Workspace, read_keys
from orbita.store.state import consents, customers, outbox

# --- signed tokens -------------------------------------------------------------------------


def link_token(secret: bytes, key: str, purpose: str = "unsubscribe") -> str:
    """`<key>.<signature>`: names the message and cannot be forged or moved to another."""
    mac = hmac.digest(secret, f"{purpose}:{key}".encode(), "sha256").hex()[:32]
    return f"{key}.{mac}"


def check_link_token(secret: bytes, token: str, purpose: str = "unsubscribe") -> str | None:
    """The message key a token was made for, or None when it was not made by us."""
    key, _, _mac = token.partition(".")
    return key if hmac.compare_digest(link_token(secret, key, purpose), token) else None


def link_secret_for(*, settings: Settings) -> bytes:
    """The key that signs a workspace's tracking and unsubscribe links: derived from its
    admin key, so it is stable across restarts and never stored apart from it."""
    admin = read_keys(settings=settings).admin_key
    return hashlib.sha256(b"orbita-links\x00" + admin.encode()).digest()


def click_token(secret: bytes, key: str, index: int) -> str:
    return link_token(secret, f"{key}-{index}", "click")


def check_click_token(secret: bytes, token: str) -> tuple[str, int] | None:
    """(message key, link index) of a click token made by us, else None."""
    signed = check_link_token(secret, token, "click")
    if signed is None:
        return None
    key, _, index = signed.rpartition("-")
    return (key, int(index)) if key and index.isdigit() else None


# --- rewriting a message -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkTracker:
    """Makes a workspace's tracking links: `public_url` is where customers reach the server
    (`ORBITA_PUBLIC_URL`)."""

    secret: bytes
    public_url: str
    # The key's HMAC state, copied per link: the sender signs a dozen links a message.
    _keyed: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        object.__setattr__(self, "_keyed", hmac.new(self.secret, digestmod=hashlib.sha256))

    def _token(self, key: str, purpose: str) -> str:
        """`link_token(secret, key, purpose)`, faster."""
        mac = self._keyed.copy()
        mac.update(f"{purpose}:{key}".encode())
        return f"{key}.{mac.hexdigest()[:32]}"

    def open_url(self, key: str) -> str:
        return f"{self.public_url}/t/o/{self._token(key, 'open')}.gif"

    def click_url(self, key: str, index: int) -> str:
        return f"{self.public_url}/t/c/{self._token(f'{key}-{index}', 'click')}"

    def unsubscribe_url(self, key: str) -> str:
        return f"{self.public_url}/t/u/{self._token(key, 'unsubscribe')}"

    @property
    def prefix(self) -> str:
        return f"{self.public_url}/t/"


_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\bhref\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.IGNORECASE)
_OPTED_OUT = re.compile(r"""\bdata-orbita-track\s*=\s*["']?off\b""", re.IGNORECASE)
# A URL in plain text; trailing punctuation belongs to the sentence, not the URL.
_TEXT_URL = re.compile(r"""https?://[^\s<>()"']+""", re.IGNORECASE)
_TRAILING = ".,;:!?"
PIXEL = (
    '<img src="{url}" width="1" height="1" alt="" border="0" style="display:block;'
    'height:1px;width:1px;border:0;margin:0;padding:0" />'
)


@dataclass(slots=True)
class _Links:
    """The message's tracked URLs in first-seen order (a URL twice is one link)."""

    tracker: LinkTracker
    key: str
    skip: set[str]
    urls: list[str] = field(default_factory=list)
    redirects: dict[str, str] = field(default_factory=dict)  # url -> its click URL

    def tracked(self, url: str) -> str | None:
        """The click URL standing for `url`, or None when it stays as it is."""
        found = self.redirects.get(url)
        if found is not None:
            return found
        if url in self.skip or not url.lower().startswith(("http://", "https://")):
            return None  # mailto:, tel:, anchors, the unsubscribe link, opted out
        if url.startswith(self.tracker.prefix) or "{{" in url or "{%" in url:
            return None
        found = self.redirects[url] = self.tracker.click_url(self.key, len(self.urls))
        self.urls.append(url)
        return found


def _rewrite_html(source: str, links: _Links) -> str:
    def anchor(match: re.Match[str]) -> str:
        tag = match.group(0)
        href = _HREF.search(tag)
        if href is None:
            return tag
        raw = next(value for value in href.groups()[1:] if value is not None)
        url = (html.unescape(raw) if "&" in raw else raw).strip()
        if _OPTED_OUT.search(tag):
            links.skip.add(url)  # also left alone in the text part
            return tag
        tracked = links.tracked(url)
        if tracked is None:
            return tag
        return f'{tag[: href.start()]}{href.group(1)}"{tracked}"{tag[href.end() :]}'

    return _ANCHOR.sub(anchor, source)


def _rewrite_text(source: str, links: _Links) -> str:
    def url(match: re.Match[str]) -> str:
        found = match.group(0)
        stripped = found.rstrip(_TRAILING)
        tracked = links.tracked(stripped)
        return found if tracked is None else tracked + found[len(stripped) :]

    return _TEXT_URL.sub(url, source)


def _with_pixel(source: str, pixel_url: str) -> str:
    pixel = PIXEL.format(url=pixel_url)
    # (rfind: a regular expression over the whole body took a tenth of a render.)
    at = max(source.rfind("</body"), source.rfind("</BODY"), source.rfind("</Body"))
    if at < 0:
        return source + pixel
    return source[:at] + pixel + source[at:]


def track_message(
    tracker: LinkTracker,
    message: OutgoingMessage,
    *,
    opens: bool = True,
    clicks: bool = True,
) -> tuple[OutgoingMessage, list[str]]:
    """The message with its links going through the click redirect (HTML and text parts)
    and, with `opens`, the open pixel in its HTML; and the links in index order, to be
    stored with the message. Left alone: `mailto:`, `tel:`, anchors, the unsubscribe link,
    links the template marks `data-orbita-track="off"`."""
    skip = {message.unsubscribe_url} if message.unsubscribe_url else set()
    links = _Links(tracker=tracker, key=message.key, skip=skip)
    html_part, text_part = message.html, message.text
    if clicks and html_part is not None:
        html_part = _rewrite_html(html_part, links)
    if clicks and text_part is not None:
        text_part = _rewrite_text(text_part, links)
    if opens and html_part is not None:
        html_part = _with_pixel(html_part, tracker.open_url(message.key))
    if html_part is message.html and text_part is message.text:
        return message, links.urls
    return dataclasses.replace(message, html=html_part, text=text_part), links.urls


def store_links(connection: Connection, links: Mapping[int, Sequence[str]]) -> None:
    """Each message's links (by outbox id), recorded before it is sent: a click that comes
    back the moment the message arrives finds them."""
    if not links:
        return
    connection.execute(
        update(outbox)
        .where(outbox.c.outbox_id == bindparam("b_id"))
        .values(links=bindparam("b_links", type_=outbox.c.links.type)),
        [{"b_id": outbox_id, "b_links": list(urls)} for outbox_id, urls in links.items()],
    )


# --- bots and prefetchers ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    """One request for a tracking link."""

    method: str
    user_agent: str
    ip: str | None
    at: datetime


_AGENTS = (
    ("googleimageproxy", "Google Image Proxy"),
    ("yahoomailproxy", "Yahoo Mail Proxy"),
    ("barracuda", "Barracuda link scanner"),
    ("mimecast", "Mimecast link scanner"),
    ("proofpoint", "Proofpoint link scanner"),
    ("symantec", "Symantec link scanner"),
    ("safelinks", "Microsoft Safe Links"),
    ("headlesschrome", "a headless browser"),
    ("bot", "a bot's user agent"),
    ("spider", "a crawler's user agent"),
    ("crawler", "a crawler's user agent"),
    ("python-requests", "an HTTP library's user agent"),
    ("go-http-client", "an HTTP library's user agent"),
    ("wget/", "an HTTP library's user agent"),
)
# Networks of mail privacy proxies: Apple's (Mail Privacy Protection) and Google's image
# proxy. People's own browsers do not come from there.
_PROXY_NETWORKS = (
    (ipaddress.ip_network("17.0.0.0/8"), "Apple Mail Privacy Protection"),
    (ipaddress.ip_network("66.249.64.0/19"), "Google Image Proxy"),
    (ipaddress.ip_network("66.102.0.0/20"), "Google Image Proxy"),
)


@dataclass(frozen=True, slots=True)
class BotRules:
    """When a hit is a machine's: times are counted from when the message was sent."""

    open_within: timedelta = timedelta(seconds=2)
    click_within: timedelta = timedelta(seconds=5)
    # A scanner follows every link of a message at once; a person clicks one or two.
    sweep_links: int = 3
    sweep_within: timedelta = timedelta(seconds=2)


def classify_hit(
    hit: Hit, *, kind: str, sent_at: datetime | None, rules: BotRules = BotRules()
) -> str | None:
    """Why this open or click is a machine's, or None for a person's (as far as can be
    told). `sent_at` None: the send is not recorded yet, so it is seconds old at most."""
    if hit.method.upper() == "HEAD":
        return "a HEAD request (link checkers fetch headers only)"
    agent = hit.user_agent.strip()
    if not agent:
        return "no user agent"
    if agent == "Mozilla/5.0":
        # What Apple's privacy proxy sends, and no mail client a person uses.
        return "Apple Mail Privacy Protection (bare Mozilla/5.0 user agent)"
    lowered = agent.lower()
    for needle, reason in _AGENTS:
        if needle in lowered:
            return reason
    if hit.ip:
        try:
            address = ipaddress.ip_address(hit.ip)
        except ValueError:
            address = None
        for network, reason in _PROXY_NETWORKS:
            if address is not None and address in network:
                return f"{reason} ({hit.ip})"
    within = rules.open_within if kind == "open" else rules.click_within
    if sent_at is None:
        return f"{kind} before the send was recorded"
    if hit.at - sent_at < within:
        seconds = (hit.at - sent_at).total_seconds()
        return f"{kind} {seconds:.1f} s after the send (under {within.total_seconds():g} s)"
    return None


class ClickSweeps:
    """Recent clicks per message in this process, to see a scanner following every link
    at once (bounded: the oldest messages are forgotten first)."""

    def __init__(self, *, rules: BotRules = BotRules(), capacity: int = 10_000) -> None:
        self.rules = rules
        self.capacity = capacity
        self._recent: OrderedDict[str, list[tuple[datetime, int]]] = OrderedDict()
        self._lock = threading.Lock()

    def sweep(self, key: str, index: int, at: datetime) -> str | None:
        """Record the click; the reason when it makes a sweep of the message's links."""
        with self._lock:
            clicks = [
                (when, link)
                for when, link in self._recent.pop(key, [])
                if at - when < self.rules.sweep_within
            ]
            clicks.append((at, index))
            self._recent[key] = clicks
            while len(self._recent) > self.capacity:
                self._recent.popitem(last=False)
        links = {link for _when, link in clicks}
        if len(links) >= self.rules.sweep_links:
            seconds = self.rules.sweep_within.total_seconds()
            return f"{len(links)} links of the message clicked within {seconds:g} s"
        return None


# --- the endpoints' work -------------------------------------------------------------------

OnStored = Callable[[Sequence[CustomerEvent]], None]


@dataclass
class Tracking:
    """What the tracking endpoints need, made once per server."""

    secret: bytes
    rules: BotRules = BotRules()
    sweeps: ClickSweeps = field(default_factory=ClickSweeps)

    @classmethod
    def for_settings(cls, settings: Settings) -> Tracking:
        return cls(secret=link_secret_for(settings=settings))


@dataclass(frozen=True, slots=True)
class _Message:
    key: str
    customer_id: int
    channel: str | None
    template: str | None
    sent_at: datetime | None
    links: tuple[str, ...]
    # As `message_facts` read them: the events recorded for the hit need them too.
    facts: Mapping[str, Mapping[str, Any]]


def _message(workspace: Workspace, key: str, strategy: Strategy | None) -> _Message | None:
    facts = message_facts(workspace=workspace, keys={key})
    found = facts.get(key)
    if found is None:
        return None
    properties = found["properties"]
    return _Message(
        key=key,
        customer_id=int(found["customer_id"]),
        channel=message_channel(
            strategy, channel=properties["channel"], template=properties["template"]
        ),
        template=properties["template"],
        sent_at=found["sent_at"],
        links=found["links"],
        facts=facts,
    )


def _bot_properties(reason: str | None) -> dict[str, Any]:
    return {"bot_reason": reason} if reason else {}


def track_open(
    *,
    workspace: Workspace,
    tracking: Tracking,
    token: str,
    hit: Hit,
    strategy: Strategy | None = None,
    on_stored: OnStored | None = None,
) -> bool:
    """Record an open of the message the pixel token names; False: not a token of ours or
    no such message (the caller answers 404)."""
    key = check_link_token(tracking.secret, token, "open")
    message = _message(workspace, key, strategy) if key is not None else None
    if message is None:
        return False
    reason = classify_hit(hit, kind="open", sent_at=message.sent_at, rules=tracking.rules)
    event = MessageEvent(
        kind="opened",
        key=message.key,
        at=hit.at,
        bot=reason is not None,
        properties=_bot_properties(reason),
    )
    record_message_events(
        workspace=workspace,
        events=[event],
        strategy=strategy,
        on_stored=on_stored,
        facts=message.facts,
    )
    return True


def track_click(
    *,
    workspace: Workspace,
    tracking: Tracking,
    token: str,
    hit: Hit,
    strategy: Strategy | None = None,
    on_stored: OnStored | None = None,
) -> str | None:
    """Record a click and return the URL it leads to: only ever one the message had, at
    the index the signed token names. None: not ours, no such message or link."""
    parsed = check_click_token(tracking.secret, token)
    if parsed is None:
        return None
    key, index = parsed
    message = _message(workspace, key, strategy)
    if message is None or index >= len(message.links):
        return None
    url = message.links[index]
    if not url.lower().startswith(("http://", "https://")):
        return None  # never stored so; checked again all the same
    reason = classify_hit(hit, kind="click", sent_at=message.sent_at, rules=tracking.rules)
    sweep = tracking.sweeps.sweep(key, index, hit.at)
    reason = reason or sweep
    bot = reason is not None
    link = {"url": url, "link": index, **_bot_properties(reason)}
    events = [
        MessageEvent(
            kind="clicked", key=key, at=hit.at, bot=bot, properties=link, once_per=str(index)
        )
    ]
    if not bot:
        # A click means the message was opened, images shown or not (the first open counts).
        events.append(
            MessageEvent(kind="opened", key=key, at=hit.at, properties={"from_click": True})
        )
    record_message_events(
        workspace=workspace,
        events=events,
        strategy=strategy,
        on_stored=on_stored,
        facts=message.facts,
    )
    return url


# --- unsubscribe and preferences -----------------------------------------------------------

ALL = "*"
TRANSACTIONAL = "transactional"


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    subscribed: bool


@dataclass(frozen=True, slots=True)
class Preferences:
    """The preference page of the customer one message went to, for its channel."""

    address: str  # masked: the page says whose it is without showing it whole
    channel: str
    message_topic: str
    topics: tuple[Topic, ...]
    unsubscribed_from_all: bool


def set_consents(
    connection: Connection,
    *,
    customer_id: int,
    decisions: Mapping[tuple[str, str], bool],
    source: str,
    at: datetime,
) -> None:
    """Record consent decisions ((channel, topic) → granted; `*` for any) of one customer:
    the latest decision per scope replaces the one before."""
    if not decisions:
        return
    scopes = list(decisions)
    for channel, topic in scopes:
        connection.execute(
            delete(consents).where(
                consents.c.customer_id == customer_id,
                consents.c.channel == channel,
                consents.c.topic == topic,
            )
        )
    connection.execute(
        insert(consents),
        [
            {
                "customer_id": customer_id,
                "channel": channel,
                "topic": topic,
                "granted": granted,
                "source": source,
                "at": at,
            }
            for (channel, topic), granted in decisions.items()
        ],
    )


def _topic_of(strategy: Strategy | None, template: str | None) -> str:
    found = strategy.templates.get(template or "") if strategy is not None else None
    return found.topic if found is not None else ALL


def _unsubscribe_message(
    workspace: Workspace, tracking: Tracking, token: str, strategy: Strategy | None
) -> _Message | None:
    key = check_link_token(tracking.secret, token, "unsubscribe")
    message = _message(workspace, key, strategy) if key is not None else None
    if message is None or message.channel is None:
        return None
    return message


def unsubscribe(
    *,
    workspace: Workspace,
    tracking: Tracking,
    token: str,
    at: datetime,
    strategy: Strategy | None = None,
    on_stored: OnStored | None = None,
) -> bool:
    """One-click unsubscribe (RFC 8058): consent to the message's topic on its channel
    withdrawn, and an `Unsubscribed` event. False: not a token of ours, no such message."""
    message = _unsubscribe_message(workspace, tracking, token, strategy)
    if message is None:
        return False
    assert message.channel is not None
    topic = _topic_of(strategy, message.template)
    _withdraw(
        workspace,
        message,
        {(message.channel, topic): False},
        at=at,
        strategy=strategy,
        on_stored=on_stored,
        how="one-click",
    )
    return True


def preferences(
    *, workspace: Workspace, tracking: Tracking, token: str, strategy: Strategy | None = None
) -> Preferences | None:
    """What the preference page shows; None: not a token of ours, no such message."""
    message = _unsubscribe_message(workspace, tracking, token, strategy)
    if message is None:
        return None
    assert message.channel is not None
    with workspace.state.connect() as connection:
        decided = {
            (row.channel, row.topic): bool(row.granted)
            for row in connection.execute(
                select(consents).where(consents.c.customer_id == message.customer_id)
            )
        }
        address = connection.execute(
            select(customers.c.email, customers.c.phone).where(
                customers.c.customer_id == message.customer_id
            )
        ).first()
    names = _topics(strategy, message, decided)
    channel = message.channel

    def subscribed(topic: str) -> bool:
        scopes = ((channel, topic), (ALL, topic), (channel, ALL), (ALL, ALL))
        return all(decided.get(scope) is not False for scope in scopes)

    shown = address.email or address.phone if address is not None else None
    return Preferences(
        address=mask(shown or ""),
        channel=channel,
        message_topic=_topic_of(strategy, message.template),
        topics=tuple(Topic(name=name, subscribed=subscribed(name)) for name in names),
        unsubscribed_from_all=decided.get((channel, ALL)) is False
        or decided.get((ALL, ALL)) is False,
    )


def save_preferences(
    *,
    workspace: Workspace,
    tracking: Tracking,
    token: str,
    subscribed: Iterable[str],
    unsubscribe_all: bool,
    at: datetime,
    strategy: Strategy | None = None,
    on_stored: OnStored | None = None,
) -> Preferences | None:
    """The preference page's answer: each topic it showed kept or withdrawn on the
    message's channel, or everything on that channel withdrawn. Topics the page did not
    show are ignored. None: not a token of ours, no such message."""
    message = _unsubscribe_message(workspace, tracking, token, strategy)
    shown = preferences(workspace=workspace, tracking=tracking, token=token, strategy=strategy)
    if message is None or shown is None:
        return None
    channel = shown.channel
    wanted = set(subscribed)
    decisions: dict[tuple[str, str], bool]
    if unsubscribe_all:
        decisions = {(channel, ALL): False}
    else:
        # The page's choice per topic governs from now on, so an earlier "all" is lifted.
        decisions = {(channel, t.name): t.name in wanted for t in shown.topics}
        if shown.unsubscribed_from_all:
            decisions[(channel, ALL)] = True
    _withdraw(
        workspace,
        message,
        decisions,
        at=at,
        strategy=strategy,
        on_stored=on_stored,
        how="preference page",
    )
    return preferences(workspace=workspace, tracking=tracking, token=token, strategy=strategy)


def _withdraw(
    workspace: Workspace,
    message: _Message,
    decisions: Mapping[tuple[str, str], bool],
    *,
    at: datetime,
    strategy: Strategy | None,
    on_stored: OnStored | None,
    how: str,
) -> None:
    with workspace.state.begin() as connection:
        set_consents(
            connection,
            customer_id=message.customer_id,
            decisions=decisions,
            source=f"{how} (message {message.key})",
            at=at,
        )
    events = [
        MessageEvent(
            kind="unsubscribed",
            key=message.key,
            at=at,
            properties={"topic": topic, "scope_channel": channel, "via": how},
            once_per=f"{channel}/{topic}",
        )
        for (channel, topic), granted in decisions.items()
        if not granted
    ]
    record_message_events(
        workspace=workspace,
        events=events,
        strategy=strategy,
        on_stored=on_stored,
        facts=message.facts,
    )


def _topics(
    strategy: Strategy | None, message: _Message, decided: Mapping[tuple[str, str], bool]
) -> list[str]:
    """The topics a customer can choose on this channel: the strategy's marketing topics
    of templates sent on it, the message's own, and any with a decision recorded."""
    names: set[str] = set()
    if strategy is not None:
        for template in strategy.templates.values():
            if template.channel == message.channel and template.topic != TRANSACTIONAL:
                names.add(template.topic)
    own = _topic_of(strategy, message.template)
    if own not in (ALL, TRANSACTIONAL):
        names.add(own)
    names.update(
        topic
        for (channel, topic) in decided
        if channel in (message.channel, ALL) and topic not in (ALL, TRANSACTIONAL)
    )
    return sorted(names)


def mask(address: str) -> str:
    """`j***@example.com`, `+38******67`: enough to recognise, not enough to read."""
    if "@" in address:
        local, _, domain = address.partition("@")
        return f"{local[:1]}***@{domain}"
    if len(address) > 4:
        return address[:3] + "*" * (len(address) - 5) + address[-2:]
    return "***" if address else ""
