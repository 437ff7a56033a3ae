"""Tracking: links rewritten at send time and stored with the message, signed tokens, bots
told apart from people, unsubscribe and preferences; on both backends, with the real sender
and a real aiosmtpd server."""

from __future__ import annotations

import asyncio
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from delivery_setup import T0, queue_cart_emails, write_strategy
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parents[1] / "channels"))
from loopback import smtp_server

from orbita.channels import close_channels, open_channels
from orbita.model.delivery import OutgoingMessage
from orbita.model.strategy import Strategy
from orbita.services.delivery import DeliveryReport, deliver_due, prepare_delivery
from orbita.services.tracking import (
    BotRules,
    ClickSweeps,
    Hit,
    LinkTracker,
    Tracking,
    check_click_token,
    check_link_token,
    classify_hit,
    click_token,
    link_token,
    preferences,
    save_preferences,
    track_click,
    track_message,
    track_open,
    unsubscribe,
)
from orbita.services.workspace import Workspace
from orbita.store.state import consents, outbox

SECRET = b"tracking-secret"
PUBLIC = "https://t.shop.example.com"
TRACKER = LinkTracker(secret=SECRET, public_url=PUBLIC + "/")
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537"

HTML = """<html><body>
<a href="https://shop.example.com/p/1?utm_source=orbita&amp;utm_medium=email">Shirt</a>
<a class="button" href='https://shop.example.com/cart'>Cart</a>
<A HREF="https://shop.example.com/p/1?utm_source=orbita&amp;utm_medium=email">Shirt again</A>
<a href="mailto:help@shop.example.com">Mail us</a> <a href="tel:+380441234567">Call</a>
<a href="#top">Top</a> <a name="anchor">no href</a>
<a href="https://shop.example.com/privacy" data-orbita-track="off">Privacy</a>
<a href="https://shop.example.com/u/TOKEN">Unsubscribe</a>
</BODY></html>"""
TEXT = (
    "Shirt (https://shop.example.com/p/1?utm_source=orbita&utm_medium=email)\n"
    "See https://shop.example.com/new. Privacy: https://shop.example.com/privacy\n"
    "Unsubscribe: https://shop.example.com/u/TOKEN\n"
)


def _message(**fields: Any) -> OutgoingMessage:
    return OutgoingMessage(
        key="k" * 32,
        channel="email",
        to="a@example.org",
        at=T0,
        html=HTML,
        text=TEXT,
        unsubscribe_url="https://shop.example.com/u/TOKEN",
        **fields,
    )


def test_links_go_through_the_redirect_and_the_pixel_is_added() -> None:
    tracked, links = track_message(TRACKER, _message())
    assert links == [
        "https://shop.example.com/p/1?utm_source=orbita&utm_medium=email",  # entities undone
        "https://shop.example.com/cart",
        "https://shop.example.com/new",  # only in the text part
    ]
    html = tracked.html or ""
    clicks = re.findall(r'(?i)href="(https://t\.shop\.example\.com/t/c/[^"]+)"', html)
    # The same URL twice is one link (one index); every click token names its index.
    assert [check_click_token(SECRET, url.rsplit("/", 1)[1]) for url in clicks] == [
        ("k" * 32, 0),
        ("k" * 32, 1),
        ("k" * 32, 0),
    ]
    for kept in (
        'href="mailto:help@shop.example.com"',
        'href="tel:+380441234567"',
        'href="#top"',
        'href="https://shop.example.com/privacy" data-orbita-track="off"',
        'href="https://shop.example.com/u/TOKEN"',
    ):
        assert kept in html
    pixel = f'<img src="{TRACKER.open_url("k" * 32)}"'
    assert html.index(pixel) < html.index("</BODY>")  # inside the body, at its end
    text = tracked.text or ""
    assert f"Shirt ({TRACKER.click_url('k' * 32, 0)})" in text
    assert f"See {TRACKER.click_url('k' * 32, 2)}." in text  # the full stop stays outside
    assert "Privacy: https://shop.example.com/privacy\n" in text  # opted out in the HTML
    assert "Unsubscribe: https://shop.example.com/u/TOKEN\n" in text


def test_tracking_can_be_turned_off_per_part() -> None:
    message = _message()
    same, links = track_message(TRACKER, message, opens=False, clicks=False)
    assert same is message and links == []
    pixel_only, links = track_message(TRACKER, message, clicks=False)
    assert links == [] and "/t/c/" not in (pixel_only.html or "")
    assert "/t/o/" in (pixel_only.html or "")
    no_body = OutgoingMessage(key="k", channel="sms", to="+1", at=T0, text="Hi there")
    assert track_message(TRACKER, no_body) == (no_body, [])


def test_tokens_cannot_be_forged_or_moved() -> None:
    token = click_token(SECRET, "abc123", 2)
    assert check_click_token(SECRET, token) == ("abc123", 2)
    key_part, mac = token.split(".")
    assert check_click_token(SECRET, f"abc123-3.{mac}") is None  # another link
    assert check_click_token(SECRET, f"abc124-2.{mac}") is None  # another message
    assert check_click_token(b"another workspace", token) is None
    assert check_click_token(SECRET, key_part) is None
    # Purposes do not mix: an open token does not unsubscribe, nor the other way.
    opened = link_token(SECRET, "abc123", "open")
    assert check_link_token(SECRET, opened, "open") == "abc123"
    assert check_link_token(SECRET, opened, "unsubscribe") is None
    assert check_link_token(SECRET, link_token(SECRET, "abc123"), "open") is None


def _hit(
    agent: str = BROWSER, *, at: datetime, method: str = "GET", ip: str = "203.0.113.9"
) -> Hit:
    return Hit(method=method, user_agent=agent, ip=ip, at=at)


def test_bots_and_prefetchers_are_told_apart_from_people() -> None:
    sent = T0
    later = T0 + timedelta(minutes=5)

    def why(hit: Hit, kind: str = "open", sent_at: datetime | None = sent) -> str | None:
        return classify_hit(hit, kind=kind, sent_at=sent_at)

    assert why(_hit(at=later)) is None
    assert why(_hit(at=later), "click") is None
    reasons = {
        "apple": why(_hit("Mozilla/5.0", at=later)),
        "apple ip": why(_hit(BROWSER, at=later, ip="17.58.1.2")),
        "google": why(_hit("Mozilla/5.0 (via ggpht.com GoogleImageProxy)", at=later)),
        "scanner": why(_hit("Barracuda Sentinel (EE)", at=later), "click"),
        "head": why(_hit(at=later, method="HEAD"), "click"),
        "no agent": why(_hit("", at=later)),
        "prefetch": why(_hit(at=sent + timedelta(seconds=1))),
        "fast click": why(_hit(at=sent + timedelta(seconds=3)), "click"),
        "unrecorded": why(_hit(at=later), "click", None),
    }
    assert all(reasons.values()), reasons
    assert "Apple" in (reasons["apple"] or "") and "17.58.1.2" in (reasons["apple ip"] or "")
    assert "HEAD" in (reasons["head"] or "")
    # A slower rule set counts the same hits as a person's.
    slow = BotRules(open_within=timedelta(0), click_within=timedelta(0))
    assert (
        classify_hit(_hit(at=sent + timedelta(seconds=1)), kind="open", sent_at=sent, rules=slow)
        is None
    )


def test_a_scanner_following_every_link_is_flagged() -> None:
    sweeps = ClickSweeps(rules=BotRules(sweep_links=3, sweep_within=timedelta(seconds=2)))
    at = T0 + timedelta(minutes=5)
    assert sweeps.sweep("m1", 0, at) is None
    assert sweeps.sweep("m1", 0, at + timedelta(milliseconds=100)) is None  # the same link
    assert sweeps.sweep("m1", 1, at + timedelta(milliseconds=200)) is None
    assert "3 links" in (sweeps.sweep("m1", 2, at + timedelta(milliseconds=300)) or "")
    assert sweeps.sweep("m2", 3, at) is None  # another message
    # A person clicking links minutes apart is never a sweep.
    assert sweeps.sweep("m3", 0, at) is None
    assert sweeps.sweep("m3", 1, at + timedelta(minutes=1)) is None
    assert sweeps.sweep("m3", 2, at + timedelta(minutes=2)) is None


# --- with the sender -------------------------------------------------------------------------


def deliver(
    workspace: Workspace, strategy: Strategy, folder: Path, *, now: datetime = T0
) -> DeliveryReport:
    async def run() -> DeliveryReport:
        clients = open_channels(strategy.channels, env={})
        try:
            delivery = prepare_delivery(
                strategy=strategy,
                base_dir=folder,
                clients=clients,
                link_secret=SECRET,
                public_url=PUBLIC,
            )
            return await deliver_due(workspace=workspace, delivery=delivery, now=now)
        finally:
            await close_channels(clients)

    return asyncio.run(run())


def _events(workspace: Workspace, *names: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name in names:
        table = workspace.events.events_of(
            customer_ids=list(range(1, 100)),
            name=name,
            kind="track",
            start=None,
            end=datetime(2100, 1, 1, tzinfo=UTC),
        )
        import orjson

        found += [(name, orjson.loads(p)) for p in table.column("properties").to_pylist()]
    return found


def test_sent_messages_are_tracked_and_clicks_only_go_where_they_linked(
    workspace: Workspace, tmp_path: Path
) -> None:
    with smtp_server() as (port, server):
        strategy = write_strategy(tmp_path, port)
        queue_cart_emails(workspace, strategy, ["ann", "bob"])
        report = deliver(workspace, strategy, tmp_path)
        received = {r.rcpt_tos[0]: r.message for r in server.messages}
    assert report.sent == 2
    mail = received["ann@example.org"]
    html_part = mail.get_body(("html",))
    assert html_part is not None
    html = html_part.get_content()
    assert "https://shop.example.com/p/" not in html  # every product link goes through us
    clicks = re.findall(r'href="(https://t\.shop\.example\.com/t/c/[^"]+)"', html)
    pixels = re.findall(r'src="(https://t\.shop\.example\.com/t/o/[^"]+)"', html)
    assert len(clicks) == 2 and len(pixels) == 1
    # The default unsubscribe link is the server's own one-click endpoint.
    unsubscribe_url = mail["List-Unsubscribe"].strip("<>")
    assert unsubscribe_url.startswith(f"{PUBLIC}/t/u/")
    with workspace.state.connect() as connection:
        stored = dict(connection.execute(select(outbox.c.customer_id, outbox.c.links)).all())
    assert sorted(map(len, stored.values())) == [2, 2]

    tracking = Tracking(secret=SECRET)
    later = T0 + timedelta(minutes=10)
    token = clicks[1].rsplit("/", 1)[1]
    url = track_click(
        workspace=workspace, strategy=strategy, tracking=tracking, token=token, hit=_hit(at=later)
    )
    assert url == "https://shop.example.com/p/CS-0"
    # A valid message key with a link index it never had, or a tampered token: nowhere.
    key = check_click_token(SECRET, token)
    assert key is not None
    beyond = click_token(SECRET, key[0], 2)
    assert (
        track_click(
            workspace=workspace,
            strategy=strategy,
            tracking=tracking,
            token=beyond,
            hit=_hit(at=later),
        )
        is None
    )
    assert (
        track_click(
            workspace=workspace,
            strategy=strategy,
            tracking=tracking,
            token=token[:-1] + "0",
            hit=_hit(at=later),
        )
        is None
    )
    pixel = pixels[0].rsplit("/", 1)[1].removesuffix(".gif")
    for _ in range(3):  # a pixel loaded again counts once
        assert track_open(
            workspace=workspace,
            strategy=strategy,
            tracking=tracking,
            token=pixel,
            hit=_hit(at=later),
        )
    assert not track_open(
        workspace=workspace,
        strategy=strategy,
        tracking=tracking,
        token="x" + pixel,
        hit=_hit(at=later),
    )
    # Bob's mail was opened by Apple's proxy: recorded, but as a bot.
    bob_html = received["bob@example.org"].get_body(("html",))
    assert bob_html is not None
    bob_pixel = re.findall(r"/t/o/([^\"]+)\.gif", bob_html.get_content())[0]
    assert track_open(
        workspace=workspace,
        strategy=strategy,
        tracking=tracking,
        token=bob_pixel,
        hit=_hit("Mozilla/5.0", at=later),
    )

    events = _events(
        workspace, "Email Sent", "Email Delivered", "Email Opened", "Email Clicked",
        "Email Opened by Bot",
    )  # fmt: skip
    names = sorted(name for name, _ in events)
    assert names == [
        "Email Clicked",
        "Email Delivered",
        "Email Delivered",
        "Email Opened",
        "Email Opened by Bot",
        "Email Sent",
        "Email Sent",
    ]
    clicked = next(props for name, props in events if name == "Email Clicked")
    assert clicked["url"] == "https://shop.example.com/p/CS-0" and clicked["bot"] is False
    assert (clicked["journey"], clicked["step"], clicked["template"]) == (
        "abandoned_cart",
        "steps.0",
        "cart_reminder",
    )
    assert clicked["version"] == 1 and clicked["channel"] == "email"
    bot = next(props for name, props in events if name == "Email Opened by Bot")
    assert bot["bot"] is True and "Apple" in bot["bot_reason"]


def test_one_click_unsubscribe_and_the_preference_page(
    workspace: Workspace, tmp_path: Path
) -> None:
    with smtp_server() as (port, server):
        strategy = write_strategy(tmp_path, port)
        queue_cart_emails(workspace, strategy, ["ann", "bob"])
        deliver(workspace, strategy, tmp_path)
        links = {r.rcpt_tos[0]: r.message["List-Unsubscribe"].strip("<>") for r in server.messages}
    tracking = Tracking(secret=SECRET)
    ann = links["ann@example.org"].rsplit("/", 1)[1]
    bob = links["bob@example.org"].rsplit("/", 1)[1]
    at = T0 + timedelta(hours=1)
    assert not unsubscribe(
        workspace=workspace, strategy=strategy, tracking=tracking, token=ann + "0", at=at
    )
    assert unsubscribe(
        workspace=workspace,
        strategy=strategy,
        tracking=tracking,
        token=ann,
        at=at,
    )
    with workspace.state.connect() as connection:
        rows = [
            tuple(r)
            for r in connection.execute(
                select(consents.c.channel, consents.c.topic, consents.c.granted)
            )
        ]
    assert rows == [("email", "marketing", False)]
    # The preference page shows Ann's topics, with her address masked.
    page = preferences(workspace=workspace, strategy=strategy, tracking=tracking, token=ann)
    assert page is not None
    assert page.address == "a***@example.org" and page.channel == "email"
    assert [(t.name, t.subscribed) for t in page.topics] == [("marketing", False)]
    # Bob drops everything on email from the page; then takes marketing back.
    saved = save_preferences(
        workspace=workspace, tracking=tracking, token=bob, subscribed=[], unsubscribe_all=True,
        at=at, strategy=strategy,
    )  # fmt: skip
    assert saved is not None and saved.unsubscribed_from_all
    back = save_preferences(
        workspace=workspace, tracking=tracking, token=bob, subscribed=["marketing"],
        unsubscribe_all=False, at=at + timedelta(minutes=1), strategy=strategy,
    )  # fmt: skip
    assert back is not None and not back.unsubscribed_from_all
    assert [(t.name, t.subscribed) for t in back.topics] == [("marketing", True)]

    # The sender respects it: Ann's next cart email is skipped, Bob's is sent.
    with smtp_server() as (port2, server2):
        strategy = write_strategy(tmp_path, port2)
        queue_cart_emails(workspace, strategy, ["ann", "bob"], at=at, tag="-2")
        report = deliver(workspace, strategy, tmp_path, now=at + timedelta(minutes=2))
        assert [r.rcpt_tos for r in server2.messages] == [["bob@example.org"]]
    assert (report.sent, report.skipped) == (1, 1)
    unsubscribed = _events(workspace, "Unsubscribed")
    assert sorted((p["scope_channel"], p["topic"], p["via"]) for _, p in unsubscribed) == [
        ("email", "*", "preference page"),
        ("email", "marketing", "one-click"),
    ]
