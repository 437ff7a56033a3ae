"""The online clothing store: visits, product views, carts, orders and refunds.

Each customer signs up once (often after anonymous visits), then buys by the BG/NBD
process: a first order some days after signing up (or never), repeat orders at their own
Poisson rate, and after each repeat order a chance to drop out for good. Order values are
Gamma-Gamma around the customer's own mean. Around the orders customers browse: visits at
a rate that grows with their purchase rate, mostly just looking, often adding to a cart they
abandon, and some abandoned carts come back as the order a few hours or days later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from orbita.simulation.btyd import BGNBD, GammaGamma, simulate_repeats
from orbita.simulation.calendar import (
    at_local_hour,
    black_friday,
    choose_rows,
    numbered,
    pick,
    repeat_ranges,
)
from orbita.simulation.catalogue import CATEGORIES, Catalogue, build_catalogue
from orbita.simulation.people import GENDERS, People, sample_people
from orbita.simulation.records import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    Bools,
    Chunk,
    Column,
    CustomerBatch,
    Floats,
    Int64s,
    Kind,
    LatentStates,
    ObjectList,
    Property,
    const_text,
    text,
)
from orbita.simulation.response import campaign_truth
from orbita.simulation.stores import (
    CATALOGUE,
    CHUNK,
    USER_PREFIX,
    USER_WIDTH,
    Store,
    stream,
)
from orbita.simulation.timeline import RowSet, Sessions

EVENTS = (
    "Session Started",
    "Signed Up",
    "Signed In",
    "Products Searched",
    "Product Viewed",
    "Product Added",
    "Product Removed",
    "Cart Viewed",
    "Checkout Started",
    "Order Completed",
    "Order Refunded",
)
PROPERTY_ORDER = (
    "source",
    "method",
    "query",
    "order_id",
    "cart_id",
    "product_id",
    "sku",
    "category",
    "name",
    "size",
    "price",
    "quantity",
    "value",
    "subtotal",
    "discount",
    "coupon",
    "shipping",
    "revenue",
    "total",
    "currency",
    "products",
    "reason",
)
CURRENCY = "EUR"
SOURCES = ("direct", "organic_search", "paid_search", "social", "referral")
SOURCE_WEIGHTS = (0.38, 0.25, 0.15, 0.14, 0.08)
# Signing up and signing in share one vocabulary: one property, one set of values.
METHODS = ("email", "google", "apple", "password", "magic_link")
CHANNELS = ("web", "mobile")
ACQUISITION = (
    ("organic_search", 0.3),
    ("paid_search", 0.18),
    ("paid_social", 0.2),
    ("referral", 0.08),
    ("influencer", 0.07),
    ("direct", 0.17),
)
COUPONS = ("WELCOME10", "BLACKFRIDAY25", "XMAS15", "SALE20", "FRIENDS15")
COUPON_RATES = np.array([0.10, 0.25, 0.15, 0.20, 0.15])
REFUND_REASONS = ("wrong_size", "changed_mind", "damaged", "not_as_described", "late_delivery")
REFUND_REASON_WEIGHTS = (0.45, 0.25, 0.08, 0.14, 0.08)
FREE_SHIPPING_FROM = 5000  # cents
SHIPPING = 499

# Session kinds.
SIGNUP, ANONYMOUS, BROWSE, CART, RECOVER, PURCHASE, PURCHASE_RECOVERED = range(7)

# Size position (within a category's sizes) around which (female, male) customers fall.
_SIZE_CENTRE = {
    "shoes": (3.0, 7.0),
    "dresses": (1.6, 2.6),
    "jeans": (1.5, 3.5),
    "t-shirts": (1.6, 2.8),
    "outerwear": (1.6, 2.8),
    "accessories": (0.0, 0.0),
}


@dataclass(frozen=True, slots=True)
class ClothingParams:
    """The generating parameters: written to truth.json as they are."""

    purchases: BGNBD = field(default_factory=lambda: BGNBD(r=0.6, alpha=90.0, a=1.6, b=5.0))
    order_value: GammaGamma = field(default_factory=lambda: GammaGamma(p=4.5, q=3.5, gamma=45.0))
    first_purchase_share: float = 0.55  # of sign-ups ever buy
    quick_first_purchase_share: float = 0.35  # of those, within a day of signing up
    first_purchase_mean_days: float = 9.0  # the others: exponential delay
    browse_rate_base: float = 0.025  # visits per day while active ...
    browse_rate_per_purchase: float = 6.0  # ... plus this many per expected purchase
    dormant_browse_factor: float = 0.12  # visits after dropping out, relative to before
    non_buyer_active_days: float = 35.0  # mean active life of someone who never buys
    cart_propensity: tuple[float, float] = (1.6, 3.4)  # Beta: share of visits with a cart
    recovered_cart_share: float = 0.22  # orders whose cart was abandoned first
    cart_viewed_share: float = 0.6  # abandoned carts looked at again
    checkout_abandon_share: float = 0.3  # abandoned carts that reached checkout
    refund_share: float = 0.07
    welcome_coupon_share: float = 0.3  # first orders using WELCOME10
    promo_coupon_share: float = 0.5  # orders in Black Friday week using BLACKFRIDAY25
    coupon_share: float = 0.12  # other orders with some coupon
    anonymous_visits_mean: float = 0.7  # visits before signing up
    yearly_growth: float = 0.6  # sign-ups grow this much a year
    female_share: float = 0.62
    mobile_share: tuple[float, float] = (2.0, 1.6)  # Beta: share of a customer's visits
    engagement_shape: float = 4.0  # Gamma(shape, 1/shape): campaign response multiplier


@dataclass(frozen=True, slots=True)
class ClothingLatent:
    """One chunk's customers before anything happens to them."""

    customer: Int64s
    signed_up: Int64s
    people: People
    preference: Floats  # customers x categories, cumulative
    size: Int64s  # customers x categories: position within the category's sizes
    purchase_rate: Floats
    dropout: Floats
    value_rate: Floats  # Gamma-Gamma ν
    buyer: Bools
    first_delay: Floats  # operational days from sign-up to the first order
    browse_rate: Floats
    cart_propensity: Floats
    mobile_share: Floats
    engagement: Floats
    active_days: Floats  # non-buyers only
    email_opt_in: Bools
    sms_opt_in: Bools


class ClothingStore(Store):
    name = "clothing-store"
    code = 1

    def __init__(
        self,
        *,
        seed: int,
        customers: int,
        start: datetime,
        days: int,
        chunk_size: int = CHUNK,
        params: ClothingParams | None = None,
    ) -> None:
        self.params = params or ClothingParams()
        super().__init__(
            seed=seed,
            customers=customers,
            start=start,
            days=days,
            chunk_size=chunk_size,
            yearly_growth=self.params.yearly_growth,
        )
        self.catalogue: Catalogue = build_catalogue(stream(seed, self.code, CATALOGUE))
        self._sizes = np.full((len(CATEGORIES), 16), -1, dtype=np.int64)
        for c, codes in enumerate(self.catalogue.size_codes):
            self._sizes[c, : len(codes)] = codes
        self._promo = self._promotions(start, days)

    # --- customers ----------------------------------------------------------------------

    def _latent(self, index: int) -> ClothingLatent:
        rng, customer, signed_up = self.chunk_customers(index)
        p = self.params
        n = len(customer)
        people = sample_people(
            rng,
            customers=customer,
            signed_up=signed_up,
            female_share=p.female_share,
            email_share=0.97,
            phone_share=0.55,
            telegram_share=0.22,
            channels=ACQUISITION,
        )
        interest = np.array([c.interest for c in CATEGORIES])  # categories x (female, male)
        gender = np.minimum(people.gender, 1)
        alpha = interest[:, gender].T * 0.9  # customers x categories
        other = people.gender == 2
        alpha[other] = interest.mean(axis=1) * 0.9
        taste = rng.gamma(alpha)
        taste /= taste.sum(axis=1, keepdims=True)
        centre = np.array([_SIZE_CENTRE[c.name] for c in CATEGORIES])[:, gender].T
        top = np.array([len(c.sizes) - 1 for c in CATEGORIES])
        size = np.clip(np.round(centre + rng.normal(0, 1.1, size=(n, len(CATEGORIES)))), 0, top)
        rate, dropout = p.purchases.sample(rng, n)
        value_rate = p.order_value.sample_rate(rng, n)
        buyer = rng.random(n) < p.first_purchase_share
        quick = rng.random(n) < p.quick_first_purchase_share
        delay = np.where(
            quick,
            rng.uniform(0.03, 1.0, n),
            rng.exponential(p.first_purchase_mean_days, n),
        )
        return ClothingLatent(
            customer=customer,
            signed_up=signed_up,
            people=people,
            preference=np.cumsum(taste, axis=1),
            size=size.astype(np.int64),
            purchase_rate=rate,
            dropout=dropout,
            value_rate=value_rate,
            buyer=buyer,
            first_delay=delay,
            browse_rate=p.browse_rate_base + p.browse_rate_per_purchase * rate,
            cart_propensity=rng.beta(*p.cart_propensity, size=n),
            mobile_share=rng.beta(*p.mobile_share, size=n),
            engagement=rng.gamma(p.engagement_shape, 1 / p.engagement_shape, size=n),
            active_days=rng.exponential(p.non_buyer_active_days, n),
            email_opt_in=rng.random(n) < 0.72,
            sms_opt_in=rng.random(n) < 0.35,
        )

    # --- one chunk ----------------------------------------------------------------------

    def chunk(self, index: int) -> Chunk:
        lat = self._latent(index)
        rng = self.behaviour(index)
        cal, p, cat = self.calendar, self.params, self.catalogue
        n = len(lat.customer)
        offset = lat.people.utc_offset
        op_end = cal.operational_days
        op_signup = cal.to_operational(lat.signed_up)

        # Orders: the first, then BG/NBD repeats (operational days).
        op_first = op_signup + lat.first_delay
        has_first = lat.buyer & (op_first < op_end)
        repeats = simulate_repeats(
            rng,
            rate=lat.purchase_rate,
            dropout=lat.dropout,
            first=op_first,
            horizon=op_end,
            active=has_first,
        )
        order_customer = np.concatenate([np.flatnonzero(has_first), repeats.customer])
        order_ms = self._placed(
            rng,
            cal.to_calendar(np.concatenate([op_first[has_first], repeats.time])),
            lat.signed_up[order_customer],
            offset[order_customer],
        )

        # Visits while active, and a few after dropping out.
        until = np.where(
            lat.buyer,
            np.minimum(repeats.dropped_at, op_end),
            np.minimum(op_signup + lat.active_days, op_end),
        )
        active = np.maximum(until - op_signup, 0.0)
        dormant = np.maximum(op_end - until, 0.0)
        n_active = rng.poisson(lat.browse_rate * active)
        n_dormant = rng.poisson(lat.browse_rate * p.dormant_browse_factor * dormant)
        a_owner, _ = repeat_ranges(n_active)
        d_owner, _ = repeat_ranges(n_dormant)
        visit_customer = np.concatenate([a_owner, d_owner])
        visit_op = np.concatenate(
            [
                op_signup[a_owner] + rng.random(len(a_owner)) * active[a_owner],
                until[d_owner] + rng.random(len(d_owner)) * dormant[d_owner],
            ]
        )
        visit_ms = self._placed(
            rng,
            cal.to_calendar(visit_op),
            lat.signed_up[visit_customer],
            offset[visit_customer],
        )
        cart_chance = lat.cart_propensity[visit_customer] * np.where(
            np.arange(len(visit_customer)) < len(a_owner), 1.0, 0.5
        )
        visit_cart = rng.random(len(visit_customer)) < cart_chance

        # Anonymous visits before signing up.
        n_anonymous = rng.poisson(p.anonymous_visits_mean, n)
        anon_customer, _ = repeat_ranges(n_anonymous)
        anon_ms = lat.signed_up[anon_customer] - (
            HOUR_MS + (rng.random(len(anon_customer)) * 14 * DAY_MS).astype(np.int64)
        )

        # Orders whose cart was abandoned a few hours or days before.
        recovered_ms = order_ms - (
            HOUR_MS + (rng.random(len(order_customer)) * 3 * DAY_MS).astype(np.int64)
        )
        recovered = (rng.random(len(order_customer)) < p.recovered_cart_share) & (
            recovered_ms > lat.signed_up[order_customer] + 2 * HOUR_MS
        )

        # --- sessions -------------------------------------------------------------------
        n_orders = len(order_customer)
        n_visits = len(visit_customer)
        rec_orders = np.flatnonzero(recovered)
        session_customer = np.concatenate(
            [
                np.arange(n, dtype=np.int64),
                anon_customer,
                visit_customer,
                order_customer[rec_orders],
                order_customer,
            ]
        )
        session_start = np.concatenate(
            [lat.signed_up, anon_ms, visit_ms, recovered_ms[rec_orders], order_ms]
        )
        kind = np.concatenate(
            [
                np.full(n, SIGNUP),
                np.full(len(anon_customer), ANONYMOUS),
                np.where(visit_cart, CART, BROWSE),
                np.full(len(rec_orders), RECOVER),
                np.where(recovered, PURCHASE_RECOVERED, PURCHASE),
            ]
        ).astype(np.int64)
        s_count = len(session_customer)
        mobile = rng.random(s_count) < lat.mobile_share[session_customer]
        sessions = Sessions(
            customer=session_customer,
            start=session_start,
            identified=kind != ANONYMOUS,
            context={"channel": text(mobile.astype(np.int64), CHANNELS)},
        )

        # Carts: abandoned visits first, then one per order (shared with its recovery visit).
        abandoned_visit = np.flatnonzero(visit_cart)
        cart_customer = np.concatenate([visit_customer[abandoned_visit], order_customer])
        n_carts = len(cart_customer)
        first_visit = n + len(anon_customer)
        first_recover = first_visit + n_visits
        first_order = first_recover + len(rec_orders)
        session_cart = np.full(s_count, -1, dtype=np.int64)
        session_cart[first_visit + abandoned_visit] = np.arange(len(abandoned_visit))
        order_cart = len(abandoned_visit) + np.arange(n_orders)
        session_cart[first_recover + np.arange(len(rec_orders))] = order_cart[rec_orders]
        session_cart[first_order + np.arange(n_orders)] = order_cart
        cart_ms = np.concatenate(
            [visit_ms[abandoned_visit], np.where(recovered, recovered_ms, order_ms)]
        )
        base = lat.customer[0] if n else 0
        cart_number = numbered(cart_customer, cart_ms)
        # Ids embed the userId's number: unique without any counter shared between chunks.
        cart_id = Column(
            Kind.ID,
            (base + cart_customer + 1) * 100_000 + np.minimum(cart_number, 99_999),
            prefix="cart",
            width=12,
        )
        order_number = numbered(order_customer, order_ms)
        order_id = Column(
            Kind.ID, (base + order_customer + 1) * 1000 + order_number, prefix="o", width=10
        )

        items = self._baskets(rng, lat, cart_customer)
        item_cart = items.cart
        per_cart = np.bincount(item_cart, minlength=n_carts).astype(np.int64)
        item_start = np.concatenate([[0], np.cumsum(per_cart)[:-1]]).astype(np.int64)
        value = np.bincount(
            item_cart, weights=items.price * items.quantity, minlength=n_carts
        ).astype(np.int64)
        line_items = {
            "product_id": text(items.product, cat.product_ids),
            "sku": text(items.sku, cat.skus),
            "name": text(items.product, cat.names),
            "category": text(items.category, cat.category_names),
            "size": text(items.size, cat.sizes),
            "price": Column(Kind.MONEY, items.price),
            "quantity": Column(Kind.INT, items.quantity),
        }

        rows = RowSet(events=EVENTS, property_order=PROPERTY_ORDER)
        self._visit_rows(rng, rows, lat, kind, session_customer)
        signup_position = 10 + rng.random(n) * 100
        rows.in_sessions(
            "Signed Up",
            session=np.arange(n, dtype=np.int64),
            position=signup_position,
            gap_seconds=rng.lognormal(np.log(70), 0.5, n),
            properties={"method": text(pick(rng, (0.7, 0.2, 0.1), n), METHODS)},
        )
        self._browsing_rows(rng, rows, lat, kind, session_customer, signup_position)
        self._cart_rows(
            rng,
            rows,
            lat,
            kind=kind,
            session_cart=session_cart,
            cart_id=cart_id,
            cart_customer=cart_customer,
            item_start=item_start,
            per_cart=per_cart,
            items=items,
            line_items=line_items,
            value=value,
            first_order=first_order,
            order_id=order_id,
        )
        orders = self._order_rows(
            rng,
            rows,
            session_cart=session_cart,
            first_order=first_order,
            order_cart=order_cart,
            order_customer=order_customer,
            order_number=order_number,
            order_ms=order_ms,
            order_id=order_id,
            cart_id=cart_id,
            item_start=item_start,
            per_cart=per_cart,
            line_items=line_items,
            value=value,
        )

        anonymous_ids = _anonymous_ids(rng, lat.customer)
        batch, _ = rows.finish(
            sessions=sessions,
            first_customer=int(base),
            anonymous_ids=anonymous_ids,
            start_ms=cal.start_ms,
            end_ms=cal.end_ms,
            min_session_gap_ms=20 * MINUTE_MS,
            user_prefix=USER_PREFIX,
            user_width=USER_WIDTH,
            context_keys=("channel",),
        )
        # The identify's timestamp is the moment of signing up, as the events tell it.
        signed_up_rows = np.flatnonzero(batch.event.values == EVENTS.index("Signed Up"))
        signed_up = lat.signed_up.copy()
        signed_up[batch.customer[signed_up_rows] - base] = batch.timestamp[signed_up_rows]

        customers = self._customers(lat, signed_up)
        in_period = order_ms < cal.end_ms
        counters = {
            "customers": float(n),
            "buyers": float(np.unique(order_customer[in_period]).size),
            "repeat_buyers": float(
                np.sum(np.bincount(order_customer[in_period], minlength=n) >= 2)
            ),
            "orders": float(in_period.sum()),
            "carts": float(n_carts),
            "abandoned_carts": float(len(abandoned_visit) + len(rec_orders)),
            "recovered_carts": float(len(rec_orders)),
            "revenue": float(orders.revenue[in_period].sum()) / 100,
            "refunds": float(orders.refunds),
            "dropped_out": float(np.isfinite(repeats.dropped_at).sum()),
        }
        active_until = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        finite = until < op_end
        active_until[finite] = cal.to_calendar(until[finite])
        latent = LatentStates(
            customer=lat.customer,
            user_id=customers.user_id,
            active_until=active_until,
            engagement=lat.engagement,
            order_value=p.order_value.p / lat.value_rate,
            goal_rates={
                # Before a buyer's first order its hazard is the first-order delay's.
                "Order Completed": np.where(
                    has_first,
                    lat.purchase_rate,
                    np.where(lat.buyer, 1 / p.first_purchase_mean_days, 0.0),
                ),
            },
        )
        return Chunk(
            index=index, customers=customers, events=batch, latent=latent, counters=counters
        )

    # --- pieces -------------------------------------------------------------------------

    def _placed(
        self, rng: np.random.Generator, ms: Int64s, signed_up: Int64s, offset: Int64s
    ) -> Int64s:
        """At a likely local hour of the same day, and not before the customer signed up."""
        placed = at_local_hour(rng, ms, utc_offset_hours=offset)
        early = placed < signed_up + 30 * MINUTE_MS
        later = signed_up + 30 * MINUTE_MS + (rng.random(len(ms)) * 8 * HOUR_MS).astype(np.int64)
        return np.where(early, later, placed)

    def _visit_rows(
        self,
        rng: np.random.Generator,
        rows: RowSet,
        lat: ClothingLatent,
        kind: Int64s,
        customer: Int64s,
    ) -> None:
        """Every visit starts; identified return visits sometimes sign in; some search."""
        s = len(kind)
        every = np.arange(s, dtype=np.int64)
        rows.in_sessions(
            "Session Started",
            session=every,
            position=np.zeros(s),
            gap_seconds=np.zeros(s),
            properties={"source": text(pick(rng, SOURCE_WEIGHTS, s), SOURCES)},
            anonymous=kind == SIGNUP,
        )
        returning = (kind != SIGNUP) & (kind != ANONYMOUS)
        signs_in = np.flatnonzero(returning & (rng.random(s) < 0.3))
        rows.in_sessions(
            "Signed In",
            session=signs_in,
            position=np.ones(len(signs_in)),
            gap_seconds=rng.lognormal(np.log(15), 0.6, len(signs_in)),
            properties={
                "method": text(pick(rng, (0, 0.25, 0.12, 0.55, 0.08), len(signs_in)), METHODS)
            },
        )
        searches = np.flatnonzero(rng.random(s) < 0.35)
        category = choose_rows(rng, lat.preference[customer[searches]])
        lo, hi = self.catalogue.search_first[category], self.catalogue.search_first[category + 1]
        term = lo + (rng.random(len(searches)) * (hi - lo)).astype(np.int64)
        rows.in_sessions(
            "Products Searched",
            session=searches,
            position=np.full(len(searches), 5.0),
            gap_seconds=rng.lognormal(np.log(12), 0.6, len(searches)),
            properties={"query": text(term, self.catalogue.search_terms)},
            anonymous=kind[searches] == SIGNUP,
        )

    def _browsing_rows(
        self,
        rng: np.random.Generator,
        rows: RowSet,
        lat: ClothingLatent,
        kind: Int64s,
        customer: Int64s,
        signup_position: Floats,
    ) -> None:
        """Product views that lead nowhere in particular: most of any shop's traffic."""
        # Geometric numbers of views; visits with a cart also view the cart's products.
        mean_extra = np.select(
            [kind <= BROWSE, kind == CART, kind == RECOVER, kind == PURCHASE],
            [2.6, 1.2, 0.8, 1.0],
            0.4,
        )
        count = rng.geometric(1 / (1 + mean_extra)) - 1
        count[kind <= BROWSE] += 1  # a plain visit views at least one product
        session, _ = repeat_ranges(count)
        category = choose_rows(rng, lat.preference[customer[session]])
        # One view in eight strays outside the customer's favourite categories.
        stray = rng.random(len(session)) < 0.125
        category[stray] = rng.integers(0, len(CATEGORIES), int(stray.sum()))
        product = self.catalogue.random_product(rng, category)
        position = 10 + rng.random(len(session)) * 100
        cat = self.catalogue
        rows.in_sessions(
            "Product Viewed",
            session=session,
            position=position,
            gap_seconds=rng.lognormal(np.log(35), 0.9, len(session)),
            properties={
                "product_id": text(product, cat.product_ids),
                "category": text(category, cat.category_names),
                "name": text(product, cat.names),
                "price": Column(Kind.MONEY, cat.price[product]),
                "currency": const_text(CURRENCY, len(session)),
            },
            anonymous=(kind[session] == ANONYMOUS)
            | _before_signing_up(session, position, signup_position),
        )

    def _cart_rows(
        self,
        rng: np.random.Generator,
        rows: RowSet,
        lat: ClothingLatent,
        *,
        kind: Int64s,
        session_cart: Int64s,
        cart_id: Column,
        cart_customer: Int64s,
        item_start: Int64s,
        per_cart: Int64s,
        items: _Items,
        line_items: dict[str, Column],
        value: Int64s,
        first_order: int,
        order_id: Column,
    ) -> None:
        """Views and adds of each cart's products; removals; looking at the cart; checkout."""
        cat = self.catalogue
        adds = np.flatnonzero((kind == CART) | (kind == RECOVER) | (kind == PURCHASE))
        cart = session_cart[adds]
        add_session, nth = repeat_ranges(per_cart[cart])
        item = item_start[cart[add_session]] + nth
        session = adds[add_session]
        position = 10 + rng.random(len(session)) * 100
        product_props = {
            "product_id": text(items.product[item], cat.product_ids),
            "category": text(items.category[item], cat.category_names),
            "name": text(items.product[item], cat.names),
            "price": Column(Kind.MONEY, items.price[item]),
            "currency": const_text(CURRENCY, len(item)),
        }
        rows.in_sessions(
            "Product Viewed",
            session=session,
            position=position,
            gap_seconds=rng.lognormal(np.log(40), 0.8, len(session)),
            properties=product_props,
        )
        rows.in_sessions(
            "Product Added",
            session=session,
            position=position + 1e-6,
            gap_seconds=rng.lognormal(np.log(18), 0.6, len(session)),
            properties={
                "cart_id": cart_id.take(cart[add_session]),
                **{k: c.take(item) for k, c in line_items.items() if k != "price"},
                "price": Column(Kind.MONEY, items.price[item]),
                "currency": const_text(CURRENCY, len(item)),
            },
        )

        # Some put one more thing in the cart and take it out again when they look at it.
        removes = adds[rng.random(len(adds)) < 0.12]
        r_cart = session_cart[removes]
        r_customer = cart_customer[r_cart]
        r_category = choose_rows(rng, lat.preference[r_customer])
        r_product = cat.random_product(rng, r_category)
        r_size = lat.size[r_customer, r_category]
        r_props: dict[str, Property] = {
            "cart_id": cart_id.take(r_cart),
            "product_id": text(r_product, cat.product_ids),
            "sku": text(cat.sku(r_product, r_size), cat.skus),
            "category": text(r_category, cat.category_names),
            "name": text(r_product, cat.names),
            "size": text(self._sizes[r_category, r_size], cat.sizes),
            "price": Column(Kind.MONEY, cat.price[r_product]),
            "quantity": Column(Kind.INT, np.ones(len(removes), dtype=np.int64)),
            "currency": const_text(CURRENCY, len(removes)),
        }
        r_position = 10 + rng.random(len(removes)) * 100
        view_props = {k: v for k, v in r_props.items() if k in product_props}
        rows.in_sessions(
            "Product Viewed",
            session=removes,
            position=r_position,
            gap_seconds=rng.lognormal(np.log(40), 0.8, len(removes)),
            properties=view_props,
        )
        rows.in_sessions(
            "Product Added",
            session=removes,
            position=r_position + 1e-6,
            gap_seconds=rng.lognormal(np.log(18), 0.6, len(removes)),
            properties=r_props,
        )
        rows.in_sessions(
            "Product Removed",
            session=removes,
            position=np.full(len(removes), 301.0),
            gap_seconds=rng.lognormal(np.log(25), 0.6, len(removes)),
            properties=r_props,
        )

        # Looking at the cart and starting checkout.
        has_cart = np.flatnonzero(session_cart >= 0)
        k = kind[has_cart]
        u = rng.random(len(has_cart))
        p = self.params
        views_cart = has_cart[
            np.where(
                k >= PURCHASE,
                u < np.where(k == PURCHASE_RECOVERED, 1.0, 0.85),
                u < p.cart_viewed_share,
            )
            | np.isin(has_cart, removes)
        ]
        checks_out = has_cart[
            (k >= PURCHASE) | (rng.random(len(has_cart)) < p.checkout_abandon_share)
        ]
        # A checkout that ends in an order carries the order's id (funnels join on it).
        buys = checks_out >= first_order
        for event, chosen, position_value, order in (
            ("Cart Viewed", views_cart, 300.0, None),
            ("Checkout Started", checks_out[~buys], 400.0, None),
            (
                "Checkout Started",
                checks_out[buys],
                400.0,
                order_id.take(checks_out[buys] - first_order),
            ),
        ):
            c = session_cart[chosen]
            properties: dict[str, Property] = {} if order is None else {"order_id": order}
            rows.in_sessions(
                event,
                session=chosen,
                position=np.full(len(chosen), position_value),
                gap_seconds=rng.lognormal(np.log(30), 0.7, len(chosen)),
                properties={
                    **properties,
                    "cart_id": cart_id.take(c),
                    "value": Column(Kind.MONEY, value[c]),
                    "currency": const_text(CURRENCY, len(c)),
                    "products": ObjectList(line_items, item_start[c], per_cart[c]),
                },
            )

    def _order_rows(
        self,
        rng: np.random.Generator,
        rows: RowSet,
        *,
        session_cart: Int64s,
        first_order: int,
        order_cart: Int64s,
        order_customer: Int64s,
        order_number: Int64s,
        order_ms: Int64s,
        order_id: Column,
        cart_id: Column,
        item_start: Int64s,
        per_cart: Int64s,
        line_items: dict[str, Column],
        value: Int64s,
    ) -> _Orders:
        """Orders with coupons, shipping and totals; a few refunded some days later."""
        p = self.params
        n_orders = len(order_cart)
        subtotal = value[order_cart]
        day = np.clip((order_ms - self.calendar.start_ms) // DAY_MS, 0, self.calendar.days - 1)
        promo = self._promo[day]
        u = rng.random(n_orders)
        coupon = np.full(n_orders, -1, dtype=np.int64)
        coupon = np.where((promo >= 0) & (u < p.promo_coupon_share), promo, coupon)
        welcome = (order_number == 0) & (rng.random(n_orders) < p.welcome_coupon_share)
        coupon = np.where((coupon < 0) & welcome, 0, coupon)
        other = (coupon < 0) & (rng.random(n_orders) < p.coupon_share)
        coupon = np.where(other, 3 + rng.integers(0, 2, n_orders), coupon)
        has_coupon = coupon >= 0
        discount = np.where(
            has_coupon, np.round(subtotal * COUPON_RATES[np.maximum(coupon, 0)]), 0
        ).astype(np.int64)
        shipping = np.where(subtotal - discount >= FREE_SHIPPING_FROM, 0, SHIPPING).astype(np.int64)
        revenue = subtotal - discount
        total = revenue + shipping
        session = first_order + np.arange(n_orders, dtype=np.int64)
        carts = session_cart[session]
        rows.in_sessions(
            "Order Completed",
            session=session,
            position=np.full(n_orders, 500.0),
            gap_seconds=rng.lognormal(np.log(80), 0.6, n_orders),
            properties={
                "order_id": order_id,
                "cart_id": cart_id.take(carts),
                "subtotal": Column(Kind.MONEY, subtotal),
                "discount": Column(Kind.MONEY, discount, has_coupon),
                "coupon": text(np.maximum(coupon, 0), COUPONS, has_coupon),
                "shipping": Column(Kind.MONEY, shipping),
                "revenue": Column(Kind.MONEY, revenue),
                "total": Column(Kind.MONEY, total),
                "currency": const_text(CURRENCY, n_orders),
                "products": ObjectList(line_items, item_start[carts], per_cart[carts]),
            },
        )
        refunded = np.flatnonzero(rng.random(n_orders) < p.refund_share)
        wait = ((3 + rng.random(len(refunded)) * 22) * DAY_MS).astype(np.int64)
        rows.at(
            "Order Refunded",
            customer=order_customer[refunded],
            time=order_ms[refunded] + wait,
            properties={
                "order_id": order_id.take(refunded),
                "revenue": Column(Kind.MONEY, revenue[refunded]),
                "total": Column(Kind.MONEY, total[refunded]),
                "currency": const_text(CURRENCY, len(refunded)),
                "reason": text(pick(rng, REFUND_REASON_WEIGHTS, len(refunded)), REFUND_REASONS),
            },
            context={"channel": const_text("server", len(refunded))},
        )
        in_period = order_ms[refunded] + wait < self.calendar.end_ms
        return _Orders(revenue=revenue, refunds=int(in_period.sum()))

    def _baskets(
        self, rng: np.random.Generator, lat: ClothingLatent, cart_customer: Int64s
    ) -> _Items:
        """Line items whose total is near a Gamma-Gamma draw around the customer's mean."""
        cat = self.catalogue
        target = self.params.order_value.sample_values(rng, lat.value_rate[cart_customer])
        count = np.clip(1 + rng.poisson(np.clip(target / 70 - 0.6, 0.05, 4.0)), 1, 8)
        cart, _ = repeat_ranges(count)
        customer = cart_customer[cart]
        share = rng.gamma(2.0, size=len(cart))
        share /= np.bincount(cart, weights=share, minlength=len(count))[cart]
        quantity = 1 + (rng.random(len(cart)) < 0.06).astype(np.int64)
        wanted = target[cart] * share * 100 / quantity  # cents per unit
        # Favourite categories, but ones that sell something near the wanted price: orders
        # then add up to their Gamma-Gamma draw instead of the catalogue's price limits.
        low = cat.price[cat.first[:-1]] * 0.8
        high = cat.price[cat.first[1:] - 1] * 1.1
        fits = (wanted[:, None] >= low) & (wanted[:, None] <= high)
        taste = np.diff(lat.preference[customer], axis=1, prepend=0.0)
        weights = np.cumsum(taste * np.where(fits, 1.0, 0.02), axis=1)
        category = choose_rows(rng, weights / weights[:, -1:])
        product = cat.nearest_priced(category, wanted)
        size = lat.size[customer, category]
        return _Items(
            cart=cart,
            product=product,
            category=category,
            sku=cat.sku(product, size),
            size=self._sizes[category, size],
            price=cat.price[product],
            quantity=quantity,
        )

    def _customers(self, lat: ClothingLatent, signed_up: Int64s) -> CustomerBatch:
        traits = dict(lat.people.traits)
        traits["createdAt"] = Column(Kind.TIME, signed_up)
        traits["email_opt_in"] = Column(Kind.BOOL, lat.email_opt_in)
        traits["sms_opt_in"] = Column(Kind.BOOL, lat.sms_opt_in)
        order = (
            "email", "phone", "telegram_chat_id", "timezone", "locale", "createdAt",
            "first_name", "last_name", "gender", "birthday", "country", "city",
            "acquisition_channel", "email_opt_in", "sms_opt_in",
        )  # fmt: skip
        return CustomerBatch(
            customer=lat.customer,
            user_id=Column(Kind.ID, lat.customer + 1, prefix=USER_PREFIX, width=USER_WIDTH),
            signed_up=signed_up,
            traits={key: traits[key] for key in order},
        )

    def _promotions(self, start: datetime, days: int) -> Int64s:
        """Per day: the coupon of a running promotion (index into COUPONS), or -1."""
        promo = np.full(days, -1, dtype=np.int64)
        first = start.date()
        for i in range(days):
            day = first + timedelta(days=i)
            bf = black_friday(day.year)
            if bf - timedelta(days=7) <= day <= bf + timedelta(days=3):
                promo[i] = 1
            elif day.month == 12 and day.day <= 22:
                promo[i] = 2
        return promo

    # --- truth --------------------------------------------------------------------------

    def truth(self) -> dict[str, Any]:
        p = self.params
        params = asdict(p)
        return {
            "store": self.name,
            "currency": CURRENCY,
            "time_unit": "day",
            "note": (
                "Purchases follow BG/NBD in operational days (calendar days stretched by the "
                "seasonal multiplier, mean 1 over a year); time 0 is each customer's first "
                "order. Order subtotals (EUR) follow Gamma-Gamma closely: baskets are filled "
                "from catalogue prices towards each draw (9 in 10 within 10%); revenue is the "
                "subtotal less any coupon."
            ),
            "btyd": {
                "model": "BG/NBD",
                "r": p.purchases.r,
                "alpha": p.purchases.alpha,
                "a": p.purchases.a,
                "b": p.purchases.b,
                "mean_purchase_rate_per_day": p.purchases.r / p.purchases.alpha,
                "mean_dropout": p.purchases.a / (p.purchases.a + p.purchases.b),
            },
            "gamma_gamma": {
                "p": p.order_value.p,
                "q": p.order_value.q,
                "gamma": p.order_value.gamma,
                "mean_order_value": p.order_value.mean_value,
            },
            "parameters": params,
            "catalogue": {
                "categories": [c.name for c in CATEGORIES],
                "products": len(self.catalogue.product_ids),
                "genders": list(GENDERS),
            },
            "campaigns": campaign_truth(self.name),
        }


@dataclass(frozen=True, slots=True)
class _Items:
    cart: Int64s
    product: Int64s
    category: Int64s
    sku: Int64s
    size: Int64s
    price: Int64s
    quantity: Int64s


@dataclass(frozen=True, slots=True)
class _Orders:
    revenue: Int64s
    refunds: int


def _before_signing_up(session: Int64s, position: Floats, signup_position: Floats) -> Bools:
    """Rows of sign-up visits (sessions 0..n-1) that come before the Signed Up event."""
    in_signup = session < len(signup_position)
    return in_signup & (position < signup_position[np.where(in_signup, session, 0)])


def _anonymous_ids(rng: np.random.Generator, customers: Int64s) -> list[str]:
    """A browser's anonymousId: a random-looking UUID, fixed by the seed and the chunk."""
    raw = rng.integers(0, 2**63, size=(len(customers), 2), dtype=np.int64)
    ids = []
    for hi, lo in raw.tolist():
        h = f"{hi:016x}{lo:016x}"
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}")
    return ids
