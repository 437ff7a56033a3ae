"""Buy-till-you-die: the BG/NBD purchase process and Gamma-Gamma order values.

BG/NBD (Fader, Hardie & Lee, 2005): while alive a customer buys as a Poisson process with
rate λ ~ Gamma(r, α); after each repeat purchase they drop out with probability
p ~ Beta(a, b). Time starts at the first purchase, so fits of BG/NBD to the generated
orders should recover (r, α, a, b). Gamma-Gamma (Fader, Hardie & Lee, 2005b): order values
z ~ Gamma(p, ν) around a customer's own mean, with ν ~ Gamma(q, γ) across customers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orbita.simulation.records import Bools, Floats, Int64s


@dataclass(frozen=True, slots=True)
class BGNBD:
    """Parameters with time in (operational) days."""

    r: float
    alpha: float
    a: float
    b: float

    def sample(self, rng: np.random.Generator, n: int) -> tuple[Floats, Floats]:
        """Per customer: purchase rate λ (per day) and drop-out probability p."""
        rate = rng.gamma(self.r, 1.0 / self.alpha, size=n)
        dropout = rng.beta(self.a, self.b, size=n)
        return rate, dropout

    def expected_repeats(self, t: float) -> float:
        """E[X(t)]: expected repeat purchases in t days after the first (needs a > 1)."""
        if self.a <= 1:
            raise ValueError("E[X(t)] has this closed form only for a > 1")
        z = t / (self.alpha + t)
        head = (self.a + self.b - 1) / (self.a - 1)
        hyp = hyp2f1(self.r, self.b, self.a + self.b - 1, z)
        return float(head * (1 - (self.alpha / (self.alpha + t)) ** self.r * hyp))

    def p_no_repeat(self, t: float) -> float:
        """P(X(t) = 0): no one drops out before their first repeat purchase."""
        return float((self.alpha / (self.alpha + t)) ** self.r)


@dataclass(frozen=True, slots=True)
class GammaGamma:
    """Order values: shape p per order, ν ~ Gamma(shape q, rate γ) per customer."""

    p: float
    q: float
    gamma: float

    def sample_rate(self, rng: np.random.Generator, n: int) -> Floats:
        return rng.gamma(self.q, 1.0 / self.gamma, size=n)

    def sample_values(self, rng: np.random.Generator, rate: Floats) -> Floats:
        return rng.gamma(self.p, 1.0 / rate)

    @property
    def mean_value(self) -> float:
        """E[z] over customers: p γ / (q - 1)."""
        return self.p * self.gamma / (self.q - 1)


def hyp2f1(a: float, b: float, c: float, z: float) -> float:
    """Gauss's hypergeometric function by its series (|z| < 1, as BG/NBD needs)."""
    if not abs(z) < 1:
        raise ValueError("the series needs |z| < 1")
    total = term = 1.0
    k = 0
    while abs(term) > 1e-14 * abs(total) and k < 100_000:
        term *= (a + k) * (b + k) / ((c + k) * (k + 1)) * z
        total += term
        k += 1
    return total


@dataclass(frozen=True, slots=True)
class Purchases:
    """Repeat purchases as flat arrays, plus when each customer dropped out (inf: never)."""

    customer: Int64s
    time: Floats
    dropped_at: Floats


def simulate_repeats(
    rng: np.random.Generator,
    *,
    rate: Floats,
    dropout: Floats,
    first: Floats,
    horizon: float,
    active: Bools,
    limit: int = 999,
) -> Purchases:
    """Repeat purchases after `first` (operational days) up to `horizon`, vectorised.

    Each round draws the next purchase for every customer still alive and inside the
    horizon, then flips each one's drop-out coin.
    """
    n = len(rate)
    dropped_at = np.full(n, np.inf)
    clock = first.copy()
    alive = np.flatnonzero(active & (first < horizon))
    owners: list[Int64s] = []
    times: list[Floats] = []
    for _ in range(limit):
        if alive.size == 0:
            break
        clock[alive] += rng.exponential(1.0, size=alive.size) / rate[alive]
        alive = alive[clock[alive] < horizon]
        owners.append(alive)
        times.append(clock[alive].copy())
        gone = rng.random(alive.size) < dropout[alive]
        dropped_at[alive[gone]] = clock[alive[gone]]
        alive = alive[~gone]
    if not owners:
        return Purchases(np.zeros(0, np.int64), np.zeros(0), dropped_at)
    return Purchases(np.concatenate(owners).astype(np.int64), np.concatenate(times), dropped_at)
