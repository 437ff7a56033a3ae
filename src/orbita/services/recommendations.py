"""Recommendations for templates: "customers who bought this also bought" and "best sellers
in your favourite category", computed from the orders in the event store.

One computation reads the order lines once (`products` of each `Order Completed`, unnested
where the events are, into a temporary table) and derives everything from them in a few
grouped queries, written once in Ibis for DuckDB and PostgreSQL and printed to SQL once per
engine and settings (the order event and the time bounds bound as parameters; building and
printing the expressions cost far more than running them on a shop's orders):

- also bought: pairs of products bought by the same customer (or in the same order), kept
  when at least `min_support` baskets hold both and the lift — how much likelier the pair
  is than chance, support x baskets / (buyers of a x buyers of b) — is above `min_lift`,
  so that a best seller, which goes with everything, does not go with everything;
- best sellers: per category (and overall), by orders in the last `recent` days;
- per customer: the favourite category (most units bought, the latest on a tie) and the
  products of the last order.

The result is a frozen snapshot; a `RecommendationCache` keeps one per workspace and
computes a new one when it is older than `max_age` on the workspace clock, never per
message. Templates read it through `recommendations` (see `message_recommendations`).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import ibis
import numpy as np
import sqlglot.expressions as sge
from ibis.backends.sql.compilers.duckdb import DuckDBCompiler
from ibis.backends.sql.compilers.postgres import PostgresCompiler

from orbita.engine.segments.tables import Dialect, segment_tables
from orbita.services.workspace import Workspace

Basket = Literal["customer", "order"]
# Per list in a snapshot: more than a template shows, so that products a customer has just
# bought can be left out and the list still filled.
CANDIDATES = 20


@dataclass(frozen=True, slots=True)
class RecommendationSettings:
    """How recommendations are computed (defaults suit a shop with weekly buyers)."""

    event: str = "Order Completed"
    # Orders the pairs, favourite categories and last orders are read from.
    history: timedelta = timedelta(days=365)
    # Orders the best sellers are counted in.
    recent: timedelta = timedelta(days=30)
    basket: Basket = "customer"
    min_support: int = 2
    min_lift: float = 1.0
    # Products per list a template gets.
    limit: int = 4


@dataclass(frozen=True, slots=True)
class Product:
    """A product as the latest order line that held it described it."""

    product_id: str
    name: str | None
    category: str | None
    price: float | None
    # The order's currency, for `{{ p.price | money: p.currency }}`.
    currency: str | None
    image_url: str | None
    url: str | None

    def for_template(self) -> dict[str, Any]:
        # Every key present (None when unknown): strict templates may test `{% if p.url %}`.
        return {
            "product_id": self.product_id,
            "name": self.name,
            "category": self.category,
            "price": self.price,
            "currency": self.currency,
            "image_url": self.image_url,
            "url": self.url,
        }


@dataclass(frozen=True, slots=True)
class _PerCustomer:
    """Sorted customer ids and, per customer, a favourite category and last-order products
    (numpy arrays: a million buyers cost tens of megabytes, not a dict of tuples)."""

    favourite_ids: np.ndarray[Any, np.dtype[np.int64]]
    favourite: tuple[str, ...]
    last_ids: np.ndarray[Any, np.dtype[np.int64]]
    last_starts: np.ndarray[Any, np.dtype[np.int64]]
    last_products: tuple[str, ...]

    def favourite_of(self, customer_id: int) -> str | None:
        at = int(np.searchsorted(self.favourite_ids, customer_id))
        if at < len(self.favourite_ids) and self.favourite_ids[at] == customer_id:
            return self.favourite[at]
        return None

    def last_order_of(self, customer_id: int) -> tuple[str, ...]:
        at = int(np.searchsorted(self.last_ids, customer_id))
        if at >= len(self.last_ids) or self.last_ids[at] != customer_id:
            return ()
        return self.last_products[self.last_starts[at] : self.last_starts[at + 1]]


@dataclass(frozen=True, slots=True)
class Recommendations:
    """One computation's answers, as of `as_of`."""

    as_of: datetime
    settings: RecommendationSettings
    products: Mapping[str, Product]
    # Product -> (other product, lift), the likeliest first.
    also_bought: Mapping[str, tuple[tuple[str, float], ...]]
    # Category -> products, the most ordered first; `top_sellers` over every category.
    best_sellers: Mapping[str, tuple[str, ...]]
    top_sellers: tuple[str, ...]
    _customers: _PerCustomer = field(repr=False)

    def favourite_category(self, *, customer_id: int) -> str | None:
        return self._customers.favourite_of(customer_id)

    def last_order(self, *, customer_id: int) -> tuple[str, ...]:
        return self._customers.last_order_of(customer_id)

    def also_bought_with(
        self, *, product_ids: Sequence[str], limit: int | None = None
    ) -> list[Product]:
        """Products bought with any of these, by their best lift with one of them."""
        best: dict[str, float] = {}
        for product_id in product_ids:
            for other, lift in self.also_bought.get(product_id, ()):
                if other not in product_ids and lift > best.get(other, 0.0):
                    best[other] = lift
        ranked = sorted(best, key=lambda other: (-best[other], other))
        return self._known(ranked, limit)

    def best_sellers_in(
        self, *, category: str | None, exclude: Sequence[str] = (), limit: int | None = None
    ) -> list[Product]:
        """The category's best sellers (every category's when None or unknown)."""
        ranked = self.best_sellers.get(category or "", ()) or self.top_sellers
        return self._known([p for p in ranked if p not in exclude], limit)

    def _known(self, product_ids: Sequence[str], limit: int | None) -> list[Product]:
        shown = self.settings.limit if limit is None else limit
        return [self.products[p] for p in product_ids if p in self.products][:shown]


# --- computing -----------------------------------------------------------------------------


def compute_recommendations(
    *,
    workspace: Workspace,
    as_of: datetime,
    settings: RecommendationSettings | None = None,
) -> Recommendations:
    """Every recommendation of the workspace as of `as_of`, from one read of its orders."""
    settings = settings or RecommendationSettings()
    compiled = _compiled(_dialect(workspace), settings)
    values: dict[str, Any] = {
        "event": settings.event,
        "start": as_of - settings.history,
        "end": as_of,
        "since": as_of - settings.recent,
    }
    tables = workspace.events.read_with_setup(
        setup=[compiled.lines.bind(values)],
        queries=[query.bind(values) for query in compiled.queries],
    )
    catalogue, pairs, sellers, top, favourites, last_orders = (t.to_pylist() for t in tables)
    return Recommendations(
        as_of=as_of,
        settings=settings,
        products={row["product_id"]: Product(**row) for row in catalogue},
        also_bought=_grouped(pairs, key="product_id", value=("other", "lift")),
        best_sellers={
            category: tuple(item for (item,) in rows)
            for category, rows in _grouped(sellers, key="category", value=("product_id",)).items()
        },
        top_sellers=tuple(row["product_id"] for row in top),
        _customers=_per_customer(favourites, last_orders),
    )


_LINES_SCHEMA: dict[str, str] = {
    "customer_id": "int64",
    "order_id": "string",
    "timestamp": "timestamp('UTC')",
    "product_id": "string",
    "name": "string",
    "category": "string",
    "price": "float64",
    "currency": "string",
    "quantity": "int64",
    "image_url": "string",
    "url": "string",
}
# A temporary table: each engine's session has its own, and the store drops it with the
# transaction it reads in.
_LINES = "_recommendation_lines"
_STAMP = "timestamp('UTC')"
# The values a computation binds, each compiled as a stand-in literal that the printer below
# writes as a named placeholder (Ibis prints parameters as literals of their values).
_STAND_INS: dict[str, tuple[str, Any]] = {
    "event": ("string", "orbita:recommendations:event"),
    "start": (_STAMP, datetime(1901, 1, 1, 0, 0, 1, tzinfo=UTC)),
    "end": (_STAMP, datetime(1901, 1, 1, 0, 0, 2, tzinfo=UTC)),
    "since": (_STAMP, datetime(1901, 1, 1, 0, 0, 3, tzinfo=UTC)),
}


def _parameter(name: str) -> Any:
    kind, stand_in = _STAND_INS[name]
    return ibis.literal(stand_in, type=kind)


@dataclass(frozen=True, slots=True)
class _Query:
    sql: str
    parameters: tuple[str, ...]

    def bind(self, values: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        return self.sql, {name: values[name] for name in self.parameters}


@dataclass(frozen=True, slots=True)
class _Compiled:
    lines: _Query
    # catalogue, pairs, best sellers by category, top sellers, favourites, last orders
    queries: tuple[_Query, ...]


@functools.lru_cache(maxsize=32)
def _compiled(dialect: Dialect, settings: RecommendationSettings) -> _Compiled:
    """The SQL of a computation, printed once per engine and settings: building and
    printing the Ibis expressions took most of a computation's time."""
    lines = ibis.table(_LINES_SCHEMA, name=_LINES)
    since = _parameter("since")
    fill = _print(_order_lines(dialect, settings=settings), dialect=dialect)
    return _Compiled(
        lines=_Query(f"CREATE TEMPORARY TABLE {_LINES} AS {fill.sql}", fill.parameters),
        queries=tuple(
            _print(expr, dialect=dialect)
            for expr in (
                _catalogue(lines),
                _pairs(lines, settings=settings),
                _best_sellers(lines, since=since, by_category=True),
                _best_sellers(lines, since=since, by_category=False),
                _favourites(lines),
                _last_orders(lines),
            )
        ),
    )


_PSYCOPG_PLACEHOLDER = re.compile(r"%\(\w+\)s")


def _print(expr: Any, *, dialect: Dialect) -> _Query:
    printer = _printer(dialect)()
    tree = printer.to_sqlglot(expr)
    sql = tree.sql(dialect=printer.dialect)
    if dialect == "postgres" and "%" in _PSYCOPG_PLACEHOLDER.sub("", sql):
        raise ValueError("a % in the recommendation SQL would be read as a placeholder")
    return _Query(sql, tuple(name for name in _STAND_INS if name in printer.used))


@functools.cache
def _printer(dialect: Dialect) -> type[Any]:
    """Ibis' printer of the engine, writing the stand-ins as placeholders (`$start` on
    DuckDB, `%(start)s` on PostgreSQL) cast to their type as the literal would be."""
    base = DuckDBCompiler if dialect == "duckdb" else PostgresCompiler
    names = {stand_in: name for name, (_, stand_in) in _STAND_INS.items()}

    class Printer(base):  # type: ignore[misc, valid-type]  # Ibis is untyped
        def __init__(self) -> None:
            super().__init__()
            self.used: set[str] = set()

        def visit_Literal(self, op: Any, *, value: Any, dtype: Any) -> Any:
            name = names.get(value) if isinstance(value, str | datetime) else None
            if name is None:
                return super().visit_Literal(op, value=value, dtype=dtype)
            self.used.add(name)
            return self.cast(sge.Placeholder(this=name), dtype)

    return Printer


def _dialect(workspace: Workspace) -> Dialect:
    backend = workspace.events.backend
    if backend not in ("duckdb", "postgres"):
        raise ValueError(f"recommendations cannot run on the {backend} event store yet")
    return cast(Dialect, backend)


def _order_lines(dialect: Dialect, *, settings: RecommendationSettings) -> Any:
    events = segment_tables(dialect).events
    orders = events.filter(
        events.name == _parameter("event"),
        events.type == "track",
        events.timestamp > _parameter("start"),
        events.timestamp <= _parameter("end"),
    )
    unnested = orders.select(
        "customer_id",
        "timestamp",
        order_id=orders.message_id,
        currency=orders.properties["currency"].str,
        line=orders.properties["products"].array.unnest(),
    )
    line = unnested.line

    def text(key: str) -> Any:
        return line[key].str

    product_id = ibis.coalesce(text("product_id"), line["product_id"].int.cast("string"))
    return unnested.select(
        "customer_id",
        "order_id",
        "timestamp",
        product_id=product_id,
        name=text("name"),
        category=text("category"),
        price=line["price"].float,
        currency=unnested.currency,
        quantity=ibis.coalesce(line["quantity"].int, ibis.literal(1, "int64")),
        image_url=ibis.coalesce(text("image_url"), text("image")),
        url=text("url"),
    ).filter(product_id.notnull())


def _catalogue(lines: Any) -> Any:
    """Each product as its latest line describes it."""
    newest = ibis.row_number().over(
        group_by=lines.product_id, order_by=[lines.timestamp.desc(), lines.order_id.desc()]
    )
    ranked = lines.mutate(position=newest)
    return ranked.filter(ranked.position == 0).select(
        "product_id", "name", "category", "price", "currency", "image_url", "url"
    )


def _pairs(lines: Any, *, settings: RecommendationSettings) -> Any:
    key = "customer_id" if settings.basket == "customer" else "order_id"
    baskets = lines.select(basket=lines[key].cast("string"), product_id=lines.product_id)
    baskets = baskets.distinct()
    total = baskets.basket.nunique().as_scalar()
    buyers = baskets.group_by("product_id").aggregate(buyers=baskets.count())
    other = baskets.view()
    pairs = (
        baskets.join(
            other,
            [baskets.basket == other.basket, baskets.product_id != other.product_id],
        )
        .select(product_id=baskets.product_id, other=other.product_id)
        .group_by("product_id", "other")
        .aggregate(support=lambda t: t.count())
        .filter(lambda t: t.support >= settings.min_support)
    )
    first = buyers.view()
    second = buyers.view()
    scored = pairs.join(first, pairs.product_id == first.product_id).join(
        second, pairs.other == second.product_id
    )
    scored = scored.select(
        product_id=pairs.product_id,
        other=pairs.other,
        support=pairs.support,
        lift=(pairs.support.cast("float64") * total.cast("float64"))
        / (first.buyers.cast("float64") * second.buyers.cast("float64")),
    ).filter(lambda t: t.lift > settings.min_lift)
    rank = ibis.row_number().over(
        group_by=scored.product_id,
        order_by=[scored.lift.desc(), scored.support.desc(), scored.other],
    )
    ranked = scored.mutate(position=rank)
    return (
        ranked.filter(ranked.position < CANDIDATES)
        .order_by("product_id", "position")
        .select("product_id", "other", "lift")
    )


def _best_sellers(lines: Any, *, since: Any, by_category: bool) -> Any:
    recent = lines.filter(lines.timestamp > since)
    groups = ["category", "product_id"] if by_category else ["product_id"]
    if by_category:
        recent = recent.filter(recent.category.notnull())
    counted = recent.group_by(groups).aggregate(
        orders=recent.order_id.nunique(), units=recent.quantity.sum()
    )
    rank = ibis.row_number().over(
        group_by=[counted.category] if by_category else None,
        order_by=[counted.orders.desc(), counted.units.desc(), counted.product_id],
    )
    ranked = counted.mutate(position=rank)
    return (
        ranked.filter(ranked.position < CANDIDATES)
        .order_by([*groups[:-1], "position"])
        .select(*groups)
    )


def _favourites(lines: Any) -> Any:
    bought = lines.filter(lines.category.notnull())
    counted = bought.group_by("customer_id", "category").aggregate(
        units=bought.quantity.sum(), last=bought.timestamp.max()
    )
    rank = ibis.row_number().over(
        group_by=counted.customer_id,
        order_by=[counted.units.desc(), counted.last.desc(), counted.category],
    )
    ranked = counted.mutate(position=rank)
    return (
        ranked.filter(ranked.position == 0)
        .order_by("customer_id")
        .select("customer_id", "category")
    )


def _last_orders(lines: Any) -> Any:
    orders = lines.group_by("customer_id", "order_id").aggregate(at=lines.timestamp.max())
    rank = ibis.row_number().over(
        group_by=orders.customer_id, order_by=[orders.at.desc(), orders.order_id.desc()]
    )
    ranked = orders.mutate(position=rank)
    last = ranked.filter(ranked.position == 0).select("order_id")
    held = lines.join(last, lines.order_id == last.order_id).select(
        lines.customer_id, lines.product_id
    )
    return held.distinct().order_by("customer_id", "product_id")


def _grouped(
    rows: Sequence[Mapping[str, Any]], *, key: str, value: tuple[str, ...]
) -> dict[str, tuple[Any, ...]]:
    """Rows (sorted by `key`) as key -> tuple of value tuples, in row order."""
    grouped: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        grouped.setdefault(row[key], []).append(tuple(row[name] for name in value))
    return {name: tuple(items) for name, items in grouped.items()}


def _per_customer(
    favourites: Sequence[Mapping[str, Any]], last_orders: Sequence[Mapping[str, Any]]
) -> _PerCustomer:
    favourite_ids = np.array([row["customer_id"] for row in favourites], dtype=np.int64)
    owners = np.array([row["customer_id"] for row in last_orders], dtype=np.int64)
    last_ids, starts = np.unique(owners, return_index=True)
    return _PerCustomer(
        favourite_ids=favourite_ids,
        favourite=tuple(row["category"] for row in favourites),
        last_ids=last_ids,
        last_starts=np.append(starts, len(owners)).astype(np.int64),
        last_products=tuple(row["product_id"] for row in last_orders),
    )


# --- the cache -----------------------------------------------------------------------------


class RecommendationCache:
    """A workspace's latest snapshot, computed again when older than `max_age` on the
    workspace clock (or when the clock went back before it, as a backtest's does)."""

    def __init__(
        self,
        *,
        workspace: Workspace,
        settings: RecommendationSettings | None = None,
        max_age: timedelta = timedelta(days=1),
    ) -> None:
        self._workspace = workspace
        self._settings = settings or RecommendationSettings()
        self._max_age = max_age
        self._snapshot: Recommendations | None = None
        self._lock = threading.Lock()

    def current(self) -> Recommendations:
        now = self._workspace.clock.now()
        with self._lock:
            snapshot = self._snapshot
            if snapshot is None or not snapshot.as_of <= now < snapshot.as_of + self._max_age:
                snapshot = self._snapshot = compute_recommendations(
                    workspace=self._workspace, as_of=now, settings=self._settings
                )
            return snapshot

    def refresh(self) -> Recommendations:
        """A new snapshot now (after an import, say)."""
        with self._lock:
            self._snapshot = None
        return self.current()


# --- what templates see --------------------------------------------------------------------


class MessageRecommendations(Mapping[str, Any]):
    """`recommendations` in a template: computed on first use, so a message whose template
    reads none costs nothing (the snapshot is shared; only the picking is per message).

    - `also_bought`: bought with the trigger's products (an order's `products`, or a
      `product_id`), else with the customer's last order;
    - `best_sellers`: the best sellers of the customer's favourite category (the trait
      `favourite_category` when they have bought nothing), less what they just bought;
    - `favourite_category`.
    """

    _KEYS = ("also_bought", "best_sellers", "favourite_category")

    def __init__(
        self,
        *,
        cache: RecommendationCache | None,
        customer_id: int | None,
        properties: Mapping[str, Any],
        traits: Mapping[str, Any],
    ) -> None:
        self._cache = cache
        self._customer_id = customer_id
        self._properties = properties
        self._traits = traits
        self._values: dict[str, Any] | None = None

    def __getitem__(self, key: str) -> Any:
        if key not in self._KEYS:
            raise KeyError(key)
        if self._values is None:
            self._values = self._pick()
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._KEYS)

    def __len__(self) -> int:
        return len(self._KEYS)

    def _pick(self) -> dict[str, Any]:
        if self._cache is None or self._customer_id is None:
            return {"also_bought": [], "best_sellers": [], "favourite_category": None}
        snapshot = self._cache.current()
        bought = snapshot.last_order(customer_id=self._customer_id)
        seeds = trigger_products(self._properties) or bought
        favourite = snapshot.favourite_category(customer_id=self._customer_id)
        if favourite is None and isinstance(self._traits.get("favourite_category"), str):
            favourite = self._traits["favourite_category"]
        also = snapshot.also_bought_with(product_ids=seeds)
        sellers = snapshot.best_sellers_in(category=favourite, exclude=(*seeds, *bought))
        return {
            "also_bought": [product.for_template() for product in also],
            "best_sellers": [product.for_template() for product in sellers],
            "favourite_category": favourite,
        }


def trigger_products(properties: Mapping[str, Any]) -> tuple[str, ...]:
    """The product ids of a trigger event: an order's or cart's `products`, or `product_id`."""
    found: list[str] = []
    lines = properties.get("products")
    if isinstance(lines, list):
        found = [str(line["product_id"]) for line in lines if _has_id(line)]
    elif _has_id(properties):
        found = [str(properties["product_id"])]
    return tuple(dict.fromkeys(found))


def _has_id(line: object) -> bool:
    return isinstance(line, Mapping) and isinstance(line.get("product_id"), str | int)


def message_recommendations(
    *,
    cache: RecommendationCache | None,
    customer_id: int | None,
    properties: Mapping[str, Any],
    traits: Mapping[str, Any],
) -> MessageRecommendations:
    """The `recommendations` variable of one message (see MessageRecommendations)."""
    return MessageRecommendations(
        cache=cache, customer_id=customer_id, properties=properties, traits=traits
    )
