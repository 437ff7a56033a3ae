"""The clothing store's catalogue: categories, products, sizes and log-normal prices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orbita.simulation.records import Floats, Int64s


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    code: str
    products: int
    median_price: float  # euros
    price_sigma: float
    sizes: tuple[str, ...]
    # Dirichlet weights of interest for (female, male) customers.
    interest: tuple[float, float]
    nouns: tuple[str, ...]
    search_terms: tuple[str, ...]


_LETTERS = ("XS", "S", "M", "L", "XL", "XXL")
CATEGORIES: tuple[Category, ...] = (
    Category("shoes", "SHO", 220, 79.0, 0.45, tuple(str(s) for s in range(36, 47)), (1.0, 1.2),
             ("Sneakers", "Boots", "Loafers", "Sandals", "Chelsea Boots", "Trainers", "Heels"),
             ("sneakers", "boots", "white sneakers", "running shoes", "heels")),
    Category("dresses", "DRS", 180, 59.0, 0.5, _LETTERS, (1.3, 0.03),
             ("Midi Dress", "Maxi Dress", "Wrap Dress", "Slip Dress", "Shirt Dress", "Mini Dress"),
             ("dress", "black dress", "summer dress", "party dress", "midi dress")),
    Category("jeans", "JNS", 150, 55.0, 0.35, tuple(f"W{w}" for w in range(26, 39, 2)), (0.9, 1.2),
             ("Slim Jeans", "Straight Jeans", "Wide Leg Jeans", "Mom Jeans", "Bootcut Jeans"),
             ("jeans", "skinny jeans", "blue jeans", "wide leg jeans")),
    Category("t-shirts", "TSH", 260, 19.0, 0.4, _LETTERS, (0.8, 1.3),
             ("T-Shirt", "Polo", "Tank Top", "Long Sleeve Tee", "Oversized Tee"),
             ("t-shirt", "white t-shirt", "oversized tee", "polo")),
    Category("outerwear", "OUT", 140, 129.0, 0.5, _LETTERS, (0.7, 0.9),
             ("Parka", "Trench Coat", "Puffer Jacket", "Denim Jacket", "Wool Coat", "Bomber"),
             ("coat", "winter jacket", "puffer", "trench coat", "parka")),
    Category("accessories", "ACC", 200, 24.0, 0.65, ("one size",), (1.0, 0.6),
             ("Scarf", "Belt", "Beanie", "Tote Bag", "Sunglasses", "Wallet", "Cap", "Gloves"),
             ("bag", "scarf", "belt", "sunglasses", "hat")),
)  # fmt: skip

_ADJECTIVES = (
    "Classic", "Essential", "Relaxed", "Urban", "Soft", "Everyday", "Premium",
    "Vintage", "Modern", "Organic", "Studio", "Weekend", "Tailored", "Light",
)  # fmt: skip
_COLOURS = (
    "Black", "White", "Navy", "Beige", "Olive", "Grey", "Burgundy", "Blue", "Camel",
    "Cream", "Khaki", "Pink",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Products are numbered 0..n-1, sorted by category, then by price within a category."""

    product_ids: tuple[str, ...]
    names: tuple[str, ...]
    category: Int64s
    price: Int64s  # cents
    # Rows [first[c], first[c + 1]) of the product arrays are category c.
    first: Int64s
    # Per product, cumulative view popularity within its category (0..1).
    popularity: Floats
    sizes: tuple[str, ...]  # every size label
    size_codes: tuple[tuple[int, ...], ...]  # per category, codes into `sizes`
    skus: tuple[str, ...]  # product x size: f"{product_id}-{size}"
    sku_first: Int64s  # per product, its first sku code
    search_terms: tuple[str, ...]
    search_first: Int64s  # per category, its first search term (+1 end)

    @property
    def category_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in CATEGORIES)

    def random_product(self, rng: np.random.Generator, category: Int64s) -> Int64s:
        """A product of each row's category, popular ones more often."""
        lo, hi = self.first[category], self.first[category + 1]
        u = rng.random(len(category))
        # Popularity is cumulative within the category: search each row's slice.
        found = np.empty(len(category), dtype=np.int64)
        for c in range(len(CATEGORIES)):
            rows = np.flatnonzero(category == c)
            if rows.size:
                cdf = self.popularity[self.first[c] : self.first[c + 1]]
                found[rows] = np.searchsorted(cdf, u[rows], side="right")
        return np.asarray(np.minimum(lo + found, hi - 1), dtype=np.int64)

    def nearest_priced(self, category: Int64s, cents: Floats) -> Int64s:
        """The product of each row's category whose price is closest to `cents`."""
        found = np.empty(len(category), dtype=np.int64)
        for c in range(len(CATEGORIES)):
            rows = np.flatnonzero(category == c)
            if rows.size == 0:
                continue
            lo, hi = int(self.first[c]), int(self.first[c + 1])
            prices = self.price[lo:hi]
            at = np.clip(np.searchsorted(prices, cents[rows]), 1, hi - lo - 1)
            left_closer = np.abs(prices[at - 1] - cents[rows]) <= np.abs(prices[at] - cents[rows])
            found[rows] = lo + at - left_closer.astype(np.int64)
        return found

    def sku(self, product: Int64s, size_position: Int64s) -> Int64s:
        return self.sku_first[product] + size_position


def build_catalogue(rng: np.random.Generator) -> Catalogue:
    ids: list[str] = []
    names: list[str] = []
    category: list[int] = []
    price: list[int] = []
    popularity: list[Floats] = []
    first = [0]
    all_sizes: list[str] = []
    for c in CATEGORIES:
        for s in c.sizes:
            if s not in all_sizes:
                all_sizes.append(s)
    size_codes = tuple(tuple(all_sizes.index(s) for s in c.sizes) for c in CATEGORIES)
    for index, c in enumerate(CATEGORIES):
        euros = np.exp(np.log(c.median_price) + c.price_sigma * rng.standard_normal(c.products))
        # Shop prices: whole euros ending in .99 (or .00 for the dearest things).
        cents = np.where(
            euros < 150, np.maximum(np.floor(euros), 4) * 100 + 99, np.round(euros / 10) * 1000
        ).astype(np.int64)
        cents.sort()
        # Popularity does not follow price: a Zipf law over a random order of the products.
        ranks = rng.permutation(c.products) + 1
        weights = 1.0 / ranks**0.9
        popularity.append(np.cumsum(weights) / weights.sum())
        for k in range(c.products):
            adjective = _ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))]
            colour = _COLOURS[int(rng.integers(len(_COLOURS)))]
            noun = c.nouns[int(rng.integers(len(c.nouns)))]
            ids.append(f"{c.code}-{k + 1:04d}")
            names.append(f"{adjective} {colour} {noun}")
            category.append(index)
            price.append(int(cents[k]))
        first.append(first[-1] + c.products)
    skus: list[str] = []
    sku_first: list[int] = []
    for pid, cat in zip(ids, category, strict=True):
        sku_first.append(len(skus))
        skus.extend(f"{pid}-{s.replace(' ', '')}" for s in CATEGORIES[cat].sizes)
    terms: list[str] = []
    search_first = [0]
    for c in CATEGORIES:
        terms.extend(c.search_terms)
        search_first.append(len(terms))
    return Catalogue(
        product_ids=tuple(ids),
        names=tuple(names),
        category=np.array(category, dtype=np.int64),
        price=np.array(price, dtype=np.int64),
        first=np.array(first, dtype=np.int64),
        popularity=np.concatenate(popularity),
        sizes=tuple(all_sizes),
        size_codes=size_codes,
        skus=tuple(skus),
        sku_first=np.array(sku_first, dtype=np.int64),
        search_terms=tuple(terms),
        search_first=np.array(search_first, dtype=np.int64),
    )
