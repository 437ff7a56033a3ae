"""Tracking against a real server: `orbita serve`'s app under uvicorn with its own sender
(ORBITA_DELIVER_INTERVAL) mailing a real aiosmtpd server; the pixel and click URLs are
parsed out of the received mail and requested like a mail client would, and a journey's
`wait_for: Email Opened` / "opened but did not click" branches react to them."""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from live_api import SERVER_NOW
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).parents[1] / "channels"))
from loopback import SmtpRecorder, smtp_server

from orbita.api.app import create_app
from orbita.api.server import bind, server_config, url_of
from orbita.core.clock import SimulatedClock
from orbita.core.settings import Settings
from orbita.model.strategy import parse_strategy
from orbita.services.apply import apply_strategy
from orbita.services.workspace import Keys, Workspace, init_workspace, open_workspace
from orbita.store.state import consents

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Version/17.5"

STRATEGY = """workspace: shop
timezone: UTC
channels:
  email: {{type: smtp, host: 127.0.0.1, port: {port}, from: "Shop <shop@example.com>"}}
templates:
  cart_reminder:
    channel: email
    subject: "Your cart"
    html: >-
      <html><body><p>Hi {{{{ customer.first_name }}}},</p>
      <a href="https://shop.example.com/cart?c={{{{ customer.user_id }}}}&amp;from=mail">Cart</a>
      <a href="https://shop.example.com/sale">Sale</a>
      <a href="mailto:help@shop.example.com">Help</a>
      <a href="{{{{ message.unsubscribe_url }}}}">Unsubscribe</a></body></html>
  opened_not_clicked:
    channel: email
    subject: "Still thinking?"
    text: "Your cart is still there."
  unopened:
    channel: email
    subject: "Did you miss this?"
    text: "We kept your cart."
  weekly:
    channel: email
    topic: "news <b>&amp; offers</b>"
    subject: "This week"
    text: "News"
journeys:
  cart:
    trigger: {{event: "Product Added"}}
    steps:
      - send: cart_reminder
      - wait_for: {{event: "Email Opened", timeout: 1d, on_timeout: not_opened}}
      - wait_for: {{event: "Email Clicked", timeout: 1d, on_timeout: opened_only}}
      - exit: clicked
      - {{id: opened_only, send: opened_not_clicked}}
      - exit: opened only
      - {{id: not_opened, send: unopened}}
"""


@dataclass
class Shop:
    url: str
    keys: Keys
    workspace: Workspace
    clock: SimulatedClock
    mail: SmtpRecorder

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)

    def wait_for_mail(self, count: int) -> dict[str, list[Any]]:
        """The mail received so far by recipient, once there is `count` of it."""
        deadline = time.monotonic() + 90
        while len(self.mail.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.mail.messages) == count, [m.message["Subject"] for m in self.mail.messages]
        by_to: dict[str, list[Any]] = {}
        for received in list(self.mail.messages):
            by_to.setdefault(received.rcpt_tos[0], []).append(received.message)
        return by_to


@contextmanager
def shop_server(tmp_path: Path) -> Iterator[Shop]:
    """A workspace with the strategy applied, served with the server's own sender on; its
    public URL is the server's own address, so the links in the mail lead back to it."""
    with smtp_server() as (port, mail):
        sock = bind(host="127.0.0.1", port=0)
        url = url_of(sock)
        settings = Settings(
            workspace=tmp_path / "ws",
            parse_workers=0,
            refresh_interval=0,
            work_interval=0.05,
            deliver_interval=0.05,
            public_url=url,
        )
        keys = init_workspace(settings=settings)
        clock = SimulatedClock(SERVER_NOW)
        text = STRATEGY.format(port=port)
        source = tmp_path / "strategy.yaml"
        source.write_text(text)
        with open_workspace(settings=settings, clock=clock) as workspace:
            strategy = parse_strategy(text, source=str(source))
            apply_strategy(workspace=workspace, strategy=strategy, content=text, source=str(source))
            app = create_app(settings=settings, workspace=workspace)
            server = uvicorn.Server(server_config(app, configure_logging=False))
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
            thread.start()
            try:
                while not server.started and thread.is_alive():
                    time.sleep(0.01)
                yield Shop(url=url, keys=keys, workspace=workspace, clock=clock, mail=mail)
            finally:
                server.should_exit = True
                thread.join(timeout=60)
                sock.close()


def _carts(shop: Shop, users: list[str]) -> None:
    batch = [
        {
            "type": "identify",
            "userId": user,
            "messageId": f"id-{user}",
            "timestamp": SERVER_NOW.isoformat(),
            "traits": {"email": f"{user}@example.org", "first_name": user.title()},
        }
        for user in users
    ] + [
        {
            "type": "track",
            "event": "Product Added",
            "userId": user,
            "messageId": f"add-{user}",
            "timestamp": SERVER_NOW.isoformat(),
            "properties": {"sku": "LS-1"},
        }
        for user in users
    ]
    with shop.client(auth=(shop.keys.write_key, "")) as http:
        assert http.post("/v1/batch", json={"batch": batch}).status_code == 200


def _links(mail: Any, shop: Shop) -> tuple[str, list[str]]:
    """(pixel path, click paths) of a received message, as a mail client sees them."""
    html = mail.get_body(("html",)).get_content()
    base = re.escape(shop.url)
    pixels = re.findall(rf'src="{base}(/t/o/[^"]+\.gif)"', html)
    clicks = re.findall(rf'href="{base}(/t/c/[^"]+)"', html)
    assert len(pixels) == 1, html
    return pixels[0], clicks


def _events(workspace: Workspace, name: str) -> list[dict[str, Any]]:
    table = workspace.events.events_of(
        customer_ids=list(range(1, 20)),
        name=name,
        kind="track",
        start=None,
        end=SERVER_NOW + timedelta(days=30),
    )
    return [orjson.loads(p) for p in table.column("properties").to_pylist()]


def _tampered(path: str) -> str:
    return path[:-1] + ("0" if path[-1] != "0" else "1")


def test_opens_and_clicks_steer_a_journey(tmp_path: Path) -> None:
    with shop_server(tmp_path) as shop:
        _carts(shop, ["ann", "bob", "cyd"])
        first = shop.wait_for_mail(3)
        links = {to.split("@")[0]: _links(mails[0], shop) for to, mails in first.items()}
        assert all(len(clicks) == 2 for _, clicks in links.values())  # mailto: stays
        shop.clock.advance(timedelta(minutes=10))
        browser = {"User-Agent": BROWSER}
        with shop.client(headers=browser) as http:
            # Ann opens and clicks; the redirect goes to the link her message had.
            pixel = http.get(links["ann"][0])
            assert pixel.status_code == 200 and pixel.headers["content-type"] == "image/gif"
            assert pixel.content.startswith(b"GIF89a")
            assert "no-store" in pixel.headers["cache-control"]
            click = http.get(links["ann"][1][0])
            assert click.status_code == 302
            assert click.headers["location"] == "https://shop.example.com/cart?c=ann&from=mail"
            # Bob opens twice and never clicks.
            assert http.get(links["bob"][0]).status_code == 200
            assert http.get(links["bob"][0]).status_code == 200
            # Cyd's mail is only fetched by Apple's privacy proxy, and a link checker.
            proxy = {"User-Agent": "Mozilla/5.0"}
            assert http.get(links["cyd"][0], headers=proxy).status_code == 200
            assert http.head(links["cyd"][1][1]).status_code == 302
            # Tokens not made by the server redirect nowhere.
            for bad in (_tampered(links["ann"][1][0]), "/t/c/" + "a" * 32 + "-0." + "b" * 32):
                refused = http.get(bad)
                assert refused.status_code == 404 and "location" not in refused.headers
            assert http.get(_tampered(links["ann"][0][:-4]) + ".gif").status_code == 404
        # A day and a half later the journeys' timeouts have run.
        shop.clock.advance(timedelta(days=2))
        later = shop.wait_for_mail(5)
        subjects = {to.split("@")[0]: [m["Subject"] for m in mails] for to, mails in later.items()}
        assert subjects == {
            "ann": ["Your cart"],
            "bob": ["Your cart", "Still thinking?"],
            "cyd": ["Your cart", "Did you miss this?"],
        }
        opened = _events(shop.workspace, "Email Opened")
        assert sorted(e["message_key"] for e in opened) == sorted(
            {e["message_key"] for e in opened}
        )  # Bob's second open counts once
        assert len(opened) == 2
        (clicked,) = _events(shop.workspace, "Email Clicked")
        assert clicked["url"] == "https://shop.example.com/cart?c=ann&from=mail"
        assert clicked["journey"] == "cart" and clicked["template"] == "cart_reminder"
        bots = _events(shop.workspace, "Email Opened by Bot") + _events(
            shop.workspace, "Email Clicked by Bot"
        )
        assert sorted(e["bot_reason"].split(" ")[0] for e in bots) == ["Apple", "a"]
        assert len(_events(shop.workspace, "Email Sent")) == 5


def test_unsubscribe_needs_no_key_and_shows_only_the_customers_own(tmp_path: Path) -> None:
    with shop_server(tmp_path) as shop:
        _carts(shop, ["ann", "bob"])
        mails = shop.wait_for_mail(2)
        header = {to: m[0]["List-Unsubscribe"].strip("<>") for to, m in mails.items()}
        assert mails["ann@example.org"][0]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        ann = header["ann@example.org"].removeprefix(shop.url)
        bob = header["bob@example.org"].removeprefix(shop.url)
        assert ann.startswith("/t/u/")
        with shop.client() as http:  # no API key: the signed link is the authority
            page = http.get(ann)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert "a***@example.org" in page.text and "ann@example.org" not in page.text
            assert "bob" not in page.text
            # A topic named with markup is shown as text.
            assert "news &lt;b&gt;&amp;amp; offers&lt;/b&gt;" in page.text
            assert "<b>" not in page.text
            # RFC 8058 one-click, as a mailbox provider sends it.
            done = http.post(
                ann,
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert done.status_code == 200
            assert (
                http.post(_tampered(ann), content=b"List-Unsubscribe=One-Click").status_code == 404
            )
            assert http.get(_tampered(bob)).status_code == 404
            # Bob keeps the newsletter but drops marketing, from the page's form.
            saved = http.post(
                bob,
                data={"form": "preferences", "topic": "news <b>&amp; offers</b>", "action": "save"},
            )
            assert saved.status_code == 200 and "Saved" in saved.text
        with shop.workspace.state.connect() as connection:
            rows = sorted(
                (row.customer_id, row.channel, row.topic, row.granted)
                for row in connection.execute(select(consents))
            )
        assert rows == [
            (1, "email", "marketing", False),
            (2, "email", "marketing", False),
            (2, "email", "news <b>&amp; offers</b>", True),
        ]
        unsubscribed = _events(shop.workspace, "Unsubscribed")
        assert sorted((e["topic"], e["via"]) for e in unsubscribed) == [
            ("marketing", "one-click"),
            ("marketing", "preference page"),
        ]
