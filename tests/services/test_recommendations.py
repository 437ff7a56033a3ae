"""Recommendations from a small store whose answers are worked out by hand below, on DuckDB
and PostgreSQL, and rendered through a template as a customer would get them.

Twelve customers, all of whom bought the basic tee (so its lift with anything is exactly 1
and it is recommended with nothing, though it sells most). Orders (day: products, x units):

    a  10: runner, wool socks      40: tee
    b  45: runner x2, wool socks, shoe cream, tee
    c  50: runner x2, shoe cream   52: tee
    d  35: summer dress, tee       e  20: summer dress, tee
    f  55: trail, wool socks, tee  g  58: tee x3
    h  59: evening dress, tee      i  57: evening dress, tee
    j  56: loafer x2, tee          k  15: summer dress, tee     l  12: summer dress, tee

As of day 60. Buyers: runner 3, socks 3, cream 2, summer dress 4, evening dress 2, trail 1,
loafer 1, tee 12. With customers as baskets (12):
    runner + cream: 2 customers (b, c), lift 2*12/(3*2) = 4.0
    runner + socks: 2 customers (a, b), lift 2*12/(3*3) = 2.667
    runner + tee:   3 customers,        lift 3*12/(3*12) = 1 (not above 1: left out)
    socks + cream, socks + trail, dresses together: 1 customer (below the support of 2)
Best sellers of the last 30 days by orders, then units, then id:
    shoes: runner (2 orders), loafer (1 order, 2 units), trail (1 order, 1 unit)
    dresses: evening (2 orders), summer (1: its three other orders are older than 30 days)
Favourite categories: c shoes (2 units), a tees (a tie, the latest wins), f shoes (a tie on
one day: the first name).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from segment_helpers import day, identify, record
from sqlalchemy import select

from orbita.core.clock import SimulatedClock
from orbita.model.events import EventRecord
from orbita.model.strategy import parse_strategy
from orbita.services.delivery import preview_message
from orbita.services.ingest import store_records
from orbita.services.recommendations import (
    RecommendationCache,
    Recommendations,
    RecommendationSettings,
    compute_recommendations,
    message_recommendations,
    trigger_products,
)
from orbita.services.templates import MessageContext, compile_templates, render_message
from orbita.services.workspace import Workspace
from orbita.store.state import customers

CATALOGUE = {
    "shoe-runner": ("Runner", "shoes", 80.0),
    "shoe-trail": ("Trail", "shoes", 95.0),
    "shoe-loafer": ("Loafer", "shoes", 70.0),
    "socks-wool": ("Wool socks", "socks", 10.0),
    "care-cream": ("Shoe cream", "care", 8.0),
    "dress-summer": ("Summer dress", "dresses", 60.0),
    "dress-evening": ("Evening dress", "dresses", 120.0),
    "tee-basic": ("Basic tee", "tees", 15.0),
}
ORDERS: list[tuple[str, float, list[tuple[str, int]]]] = [
    ("a", 10, [("shoe-runner", 1), ("socks-wool", 1)]),
    ("a", 40, [("tee-basic", 1)]),
    ("b", 45, [("shoe-runner", 2), ("socks-wool", 1), ("care-cream", 1), ("tee-basic", 1)]),
    ("c", 50, [("shoe-runner", 2), ("care-cream", 1)]),
    ("c", 52, [("tee-basic", 1)]),
    ("d", 35, [("dress-summer", 1), ("tee-basic", 1)]),
    ("e", 20, [("dress-summer", 1), ("tee-basic", 1)]),
    ("f", 55, [("shoe-trail", 1), ("socks-wool", 1), ("tee-basic", 1)]),
    ("g", 58, [("tee-basic", 3)]),
    ("h", 59, [("dress-evening", 1), ("tee-basic", 1)]),
    ("i", 57, [("dress-evening", 1), ("tee-basic", 1)]),
    ("j", 56, [("shoe-loafer", 2), ("tee-basic", 1)]),
    ("k", 15, [("dress-summer", 1), ("tee-basic", 1)]),
    ("l", 12, [("dress-summer", 1), ("tee-basic", 1)]),
]
AS_OF = day(60)


def line(product_id: str, quantity: int) -> dict[str, Any]:
    name, category, price = CATALOGUE[product_id]
    return {
        "product_id": product_id,
        "name": name,
        "category": category,
        "price": price,
        "quantity": quantity,
        "url": f"https://shop.example.com/p/{product_id}",
    }


def order_event(user: str, at: float, lines: list[tuple[str, int]], name: str) -> EventRecord:
    products = [line(product, quantity) for product, quantity in lines]
    properties = {"order_id": f"{user}{at}", "currency": "EUR", "products": products}
    return record(user, name, day(at), properties=properties)


@pytest.fixture
def shop(workspace: Workspace) -> Workspace:
    customers = sorted({user for user, _, _ in ORDERS})
    records = [identify(user, first_name=user.upper()) for user in customers]
    records += [order_event(user, at, lines, "Order Completed") for user, at, lines in ORDERS]
    # Not orders, or not yet: none of these may count.
    records += [
        order_event("g", 59, [("dress-summer", 5), ("shoe-trail", 5)], "Checkout Started"),
        order_event("g", 70, [("dress-summer", 5), ("shoe-trail", 5)], "Order Completed"),
    ]
    store_records(workspace=workspace, records=records)
    workspace.clock = SimulatedClock(AS_OF)
    return workspace


def customer_id(workspace: Workspace, user: str) -> int:
    with workspace.state.connect() as connection:
        found = connection.execute(
            select(customers.c.customer_id).where(customers.c.user_id == user)
        ).scalar_one()
    return int(found)


def ids(products: list[Any]) -> list[str]:
    return [p.product_id for p in products]


def test_also_bought_keeps_pairs_likelier_than_chance(shop: Workspace) -> None:
    found = compute_recommendations(workspace=shop, as_of=AS_OF)
    assert [(other, round(lift, 3)) for other, lift in found.also_bought["shoe-runner"]] == [
        ("care-cream", 4.0),
        ("socks-wool", 2.667),
    ]
    assert [other for other, _ in found.also_bought["socks-wool"]] == ["shoe-runner"]
    assert [other for other, _ in found.also_bought["care-cream"]] == ["shoe-runner"]
    # The tee sells most but goes with everything alike; the dresses share one customer.
    assert "tee-basic" not in found.also_bought
    assert "dress-summer" not in found.also_bought
    assert ids(found.also_bought_with(product_ids=["shoe-runner"])) == ["care-cream", "socks-wool"]
    # Several products: each candidate by its best lift, the products themselves left out.
    assert ids(found.also_bought_with(product_ids=["socks-wool", "shoe-runner"])) == ["care-cream"]


def test_best_sellers_count_recent_orders_per_category(shop: Workspace) -> None:
    found = compute_recommendations(workspace=shop, as_of=AS_OF)
    assert found.best_sellers["shoes"] == ("shoe-runner", "shoe-loafer", "shoe-trail")
    assert found.best_sellers["dresses"] == ("dress-evening", "dress-summer")
    assert found.top_sellers == (
        "tee-basic",
        "shoe-runner",
        "care-cream",
        "dress-evening",
        "socks-wool",
        "shoe-loafer",
        "dress-summer",
        "shoe-trail",
    )
    loafer = found.products["shoe-loafer"]
    assert (loafer.name, loafer.category, loafer.price) == ("Loafer", "shoes", 70.0)
    assert loafer.currency == "EUR"
    assert loafer.url == "https://shop.example.com/p/shoe-loafer"
    assert loafer.image_url is None
    shown = found.best_sellers_in(category="shoes", exclude=["shoe-runner"], limit=1)
    assert ids(shown) == ["shoe-loafer"]
    assert ids(found.best_sellers_in(category=None, limit=2)) == ["tee-basic", "shoe-runner"]
    assert ids(found.best_sellers_in(category="hats", limit=1)) == ["tee-basic"]


def test_each_customer_has_a_favourite_category_and_a_last_order(shop: Workspace) -> None:
    found = compute_recommendations(workspace=shop, as_of=AS_OF)
    favourites = {
        user: found.favourite_category(customer_id=customer_id(shop, user))
        for user in ("a", "c", "f", "h")
    }
    assert favourites == {"a": "tees", "c": "shoes", "f": "shoes", "h": "dresses"}
    assert found.last_order(customer_id=customer_id(shop, "a")) == ("tee-basic",)
    assert found.last_order(customer_id=customer_id(shop, "f")) == (
        "shoe-trail",
        "socks-wool",
        "tee-basic",
    )
    assert found.favourite_category(customer_id=10**9) is None
    assert found.last_order(customer_id=10**9) == ()


def test_the_window_moves_with_as_of(shop: Workspace) -> None:
    """As of day 30 the summer dress (orders on days 12, 15, 20) is the best-selling dress
    and nothing after day 30 is known yet."""
    found = compute_recommendations(workspace=shop, as_of=day(30))
    assert found.best_sellers["dresses"] == ("dress-summer",)
    assert "shoe-loafer" not in found.products
    assert found.last_order(customer_id=customer_id(shop, "a")) == ("shoe-runner", "socks-wool")


def test_orders_as_baskets(shop: Workspace) -> None:
    """14 orders: runner in 3, socks in 3, cream in 2; runner and cream share 2 (b, c),
    runner and socks 2 (a's first, b): lifts 2*14/6 and 2*14/9."""
    settings = RecommendationSettings(basket="order")
    found = compute_recommendations(workspace=shop, as_of=AS_OF, settings=settings)
    assert [(other, round(lift, 3)) for other, lift in found.also_bought["shoe-runner"]] == [
        ("care-cream", 4.667),
        ("socks-wool", 3.111),
    ]


def test_trigger_products() -> None:
    assert trigger_products({"products": [{"product_id": "a"}, {"product_id": 7}, {}]}) == (
        "a",
        "7",
    )
    assert trigger_products({"product_id": "x"}) == ("x",)
    assert trigger_products({"products": "nonsense"}) == ()


def test_the_cache_computes_once_until_it_is_stale(shop: Workspace) -> None:
    clock = SimulatedClock(AS_OF)
    shop.clock = clock
    cache = RecommendationCache(workspace=shop, max_age=timedelta(days=1))
    first = cache.current()
    assert first.as_of == AS_OF
    clock.advance(timedelta(hours=23))
    assert cache.current() is first
    clock.advance(timedelta(hours=1))
    second = cache.current()
    assert second is not first and second.as_of == AS_OF + timedelta(days=1)
    assert cache.refresh() is not second


def answers(found: Recommendations, shop: Workspace) -> dict[str, Any]:
    """Everything a snapshot tells, as plain values (its per-customer arrays compared
    through what they answer for each of the shop's customers)."""
    users = sorted({user for user, _, _ in ORDERS})
    return {
        "as_of": found.as_of,
        "products": dict(found.products),
        "also_bought": dict(found.also_bought),
        "best_sellers": dict(found.best_sellers),
        "top_sellers": found.top_sellers,
        "favourites": {
            user: found.favourite_category(customer_id=customer_id(shop, user)) for user in users
        },
        "last_orders": {
            user: found.last_order(customer_id=customer_id(shop, user)) for user in users
        },
    }


def test_a_recomputed_snapshot_equals_a_fresh_caches(shop: Workspace) -> None:
    """The cache reuses what it compiled for its first snapshot: its later snapshot (other
    bounds, other answers) is the one a new cache computes then."""
    clock = SimulatedClock(day(30))
    shop.clock = clock
    cache = RecommendationCache(workspace=shop)
    earlier = answers(cache.current(), shop)
    clock.advance(timedelta(days=30))
    later = answers(cache.current(), shop)
    assert later != earlier
    assert later == answers(RecommendationCache(workspace=shop).current(), shop)
    assert later == answers(compute_recommendations(workspace=shop, as_of=AS_OF), shop)


@pytest.mark.parametrize(("dialect", "placeholder"), [("duckdb", "$"), ("postgres", "%(")])
def test_the_sql_binds_the_event_and_the_bounds(dialect: Any, placeholder: str) -> None:
    """Printed once per engine and settings: the values of a computation are parameters,
    never written into the text."""
    from orbita.services.recommendations import _compiled

    settings = RecommendationSettings(event="Order's Completed")
    compiled = _compiled(dialect, settings)
    assert compiled.lines.parameters == ("event", "start", "end")
    for name in compiled.lines.parameters:
        assert f"{placeholder}{name}" in compiled.lines.sql
    texts = [compiled.lines.sql, *(query.sql for query in compiled.queries)]
    assert not any("Order" in text or "1901" in text for text in texts)
    assert [query.parameters for query in compiled.queries] == [
        (),
        (),
        ("since",),
        ("since",),
        (),
        (),
    ]
    assert _compiled(dialect, settings) is compiled


STRATEGY = """workspace: shop
channels:
  email: {type: smtp, port: 2525, from: "Shop <shop@example.com>"}
templates:
  cross_sell:
    channel: email
    subject: "Goes with your order"
    text: |
      {% for p in recommendations.also_bought %}{{ p.name }} ({{ p.price | money: p.currency }})
      {% endfor %}Best in {{ recommendations.favourite_category }}:
      {% for p in recommendations.best_sellers %}{{ p.name }}
      {% endfor %}
"""


def test_a_template_lists_what_goes_with_the_order_and_the_favourite_best_sellers(
    shop: Workspace, tmp_path: Path
) -> None:
    strategy = parse_strategy(STRATEGY, source="strategy.yaml")
    preview = preview_message(
        workspace=shop,
        strategy=strategy,
        base_dir=tmp_path,
        template="cross_sell",
        customer="c",
        properties={"products": [line("shoe-runner", 1)]},
        event="Order Completed",
    )
    text = preview.message.text or ""
    assert "Shoe cream (€8.00)" in text
    names = [row.split(" (")[0].strip() for row in text.splitlines() if row.strip()]
    # Bought with the runner; then c's favourite (shoes) less the runner and c's last order.
    assert names == ["Shoe cream", "Wool socks", "Best in shoes:", "Loafer", "Trail"]


def test_without_a_trigger_product_the_last_order_is_the_seed(shop: Workspace) -> None:
    """f's last order (trail, socks, tee): socks go with the runner; best shoes less what f
    just bought: runner, loafer."""
    strategy = parse_strategy(STRATEGY, source="strategy.yaml")
    compiled = compile_templates(strategy=strategy, base_dir=Path("."))
    cache = RecommendationCache(workspace=shop)
    context = MessageContext(
        customer={"first_name": "F"},
        extra={
            "recommendations": message_recommendations(
                cache=cache, customer_id=customer_id(shop, "f"), properties={}, traits={}
            )
        },
    )
    text = render_message(compiled["cross_sell"], variant=None, context=context).text or ""
    assert "Runner" in text.split("Best in")[0]
    assert text.split("Best in shoes:")[1].split() == ["Runner", "Loafer"]


EXAMPLE = Path(__file__).parents[2] / "examples" / "clothing-store" / "strategy.yaml"


def test_the_clothing_examples_cross_sell_and_win_back_show_them(shop: Workspace) -> None:
    strategy = parse_strategy(EXAMPLE.read_text(encoding="utf-8"), source=str(EXAMPLE))

    def lines_of(template: str, user: str, properties: dict[str, Any]) -> list[str]:
        preview = preview_message(
            workspace=shop,
            strategy=strategy,
            base_dir=EXAMPLE.parent,
            template=template,
            customer=user,
            properties=properties,
        )
        return [row.strip() for row in (preview.message.text or "").splitlines() if row.strip()]

    cross_sell = lines_of("picked_for_you", "c", {"products": [line("shoe-runner", 1)]})
    shown = [row.split(" (")[0] for row in cross_sell]
    assert shown[-5:] == ["Shoe cream", "Wool socks", "Best sellers in shoes:", "Loafer", "Trail"]
    win_back = lines_of("winback_10", "f", {})
    assert win_back[0].endswith("Best sellers in shoes:")
    assert [row.split(",")[0] for row in win_back[1:]] == ["- Runner", "- Loafer"]
