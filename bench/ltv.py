"""LTV: BG/NBD + Gamma-Gamma fit with standard errors, then 12-month CLV, against `lifetimes`.

    .venv/bin/python bench/ltv.py [--customers 1000000] [--seed 6]

Draws `--customers` purchase histories from the generator's own BTYD process
(`orbita.simulation.btyd`, the clothing store's parameters: BG/NBD r 0.6, α 90 days, a 1.6,
b 5; Gamma-Gamma p 4.5, q 3.5, γ 45), first purchases spread over two years, summarised in
whole days as a CRM would (x = distinct later purchase days, t_x, T, mean repeat order
value). Then times, in the same run and on the same arrays, end to end:

- orbita: `fit_bgnbd` + `fit_gamma_gamma` (both with standard errors) + `customer_values`
  (12 months of 30 days, 1 % a month);
- lifetimes 0.11: `BetaGeoFitter.fit` + `GammaGammaFitter.fit` + `customer_lifetime_value`
  (same horizon and discount);

and the same on CDNOW. Prints times, the ratio, parameter differences and log-likelihoods
(lifetimes' converted to the total in the data's time unit). Goal (issue 6): ≥ 10x faster
end to end, parameters within 0.1 %, the same log-likelihood.
"""

from __future__ import annotations

import os

# threaded BLAS made timings on the shared machine vary tenfold
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse
import time
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from orbita.analytics.ltv import customer_values, fit_bgnbd, fit_gamma_gamma
from orbita.simulation.btyd import BGNBD, GammaGamma, simulate_repeats

warnings.filterwarnings("ignore")  # lifetimes' pandas deprecation noise

from lifetimes import BetaGeoFitter, GammaGammaFitter  # noqa: E402
from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value  # noqa: E402


@dataclass(frozen=True)
class Histories:
    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    monetary: np.ndarray
    units_per_month: float


def draw(customers: int, seed: int) -> Histories:
    rng = np.random.default_rng(seed)
    purchases = BGNBD(r=0.6, alpha=90.0, a=1.6, b=5.0)
    spend = GammaGamma(p=4.5, q=3.5, gamma=45.0)
    horizon = 730.0
    rate, dropout = purchases.sample(rng, customers)
    first = rng.random(customers) * horizon
    repeats = simulate_repeats(
        rng,
        rate=rate,
        dropout=dropout,
        first=first,
        horizon=horizon,
        active=np.ones(customers, dtype=bool),
    )
    first_day = np.floor(first)
    day = np.floor(repeats.time)
    later = day > first_day[repeats.customer]
    # distinct purchase days after the first, as lifetimes' summary_data_from_transaction_data
    key = np.unique(repeats.customer[later] * 1024 + day[later].astype(np.int64))
    owner, owner_day = key // 1024, (key % 1024).astype(np.float64)
    x = np.bincount(owner, minlength=customers).astype(np.float64)
    last = np.zeros(customers)
    np.maximum.at(last, owner, owner_day - first_day[owner])
    value = spend.sample_values(rng, spend.sample_rate(rng, customers)[repeats.customer])
    total = np.bincount(repeats.customer, weights=value, minlength=customers)
    orders = np.bincount(repeats.customer, minlength=customers)
    monetary = np.where(x > 0, total / np.maximum(orders, 1), 0.0)
    T = np.floor(horizon) - first_day
    return Histories(x, last, T, monetary, 30.0)


def cdnow() -> Histories:
    d = load_cdnow_summary_data_with_monetary_value()
    return Histories(
        d["frequency"].to_numpy(float),
        d["recency"].to_numpy(float),
        d["T"].to_numpy(float),
        d["monetary_value"].to_numpy(float),
        4.345,
    )


def run(name: str, h: Histories) -> float:
    distinct = len(np.unique(np.stack([h.x, h.t_x, h.T]), axis=1).T)
    print(
        f"\n== {name}: {h.x.size:,} customers, {distinct:,} distinct (x, t_x, T), "
        f"{int((h.x > 0).sum()):,} repeat buyers"
    )
    start = time.perf_counter()
    bg = fit_bgnbd(h.x, h.t_x, h.T)
    t_bg = time.perf_counter()
    gg = fit_gamma_gamma(h.x, h.monetary)
    t_gg = time.perf_counter()
    ours = customer_values(
        bg.model,
        gg.model,
        x=h.x,
        t_x=h.t_x,
        T=h.T,
        monetary=h.monetary,
        months=12,
        monthly_discount=0.01,
        time_units_per_month=h.units_per_month,
    )
    end = time.perf_counter()
    orbita_s = end - start
    print(
        f"orbita:    BG/NBD {t_bg - start:6.2f} s ({bg.iterations} it), Gamma-Gamma "
        f"{t_gg - t_bg:5.2f} s, CLV {end - t_gg:5.2f} s, total {orbita_s:6.2f} s"
    )

    frame = pd.DataFrame({"frequency": h.x, "recency": h.t_x, "T": h.T, "m": h.monetary})
    buyers = frame[frame["frequency"] > 0]
    freq = "W" if h.units_per_month != 30.0 else "D"
    l_start = time.perf_counter()
    lbg = BetaGeoFitter().fit(frame["frequency"], frame["recency"], frame["T"])
    l_bg = time.perf_counter()
    lgg = GammaGammaFitter().fit(buyers["frequency"], buyers["m"])
    l_gg = time.perf_counter()
    theirs = lgg.customer_lifetime_value(
        lbg,
        frame["frequency"],
        frame["recency"],
        frame["T"],
        frame["m"],
        time=12,
        discount_rate=0.01,
        freq=freq,
    ).to_numpy()
    lend = time.perf_counter()
    lifetimes_s = lend - l_start
    print(
        f"lifetimes: BG/NBD {l_bg - l_start:6.2f} s, Gamma-Gamma {l_gg - l_bg:5.2f} s, "
        f"CLV {lend - l_gg:5.2f} s, total {lifetimes_s:6.2f} s"
    )
    print(
        f"ratio lifetimes / orbita, end to end: {lifetimes_s / orbita_s:.1f}x "
        f"(BG/NBD fit alone {(l_bg - l_start) / (t_bg - start):.1f}x)"
    )

    print("parameter        orbita (SE)                 lifetimes       rel. diff")
    pairs = [(bg.params[n], lbg.params_[n], n) for n in ("r", "alpha", "a", "b")]
    pairs += [
        (gg.params[n], lgg.params_[m], n) for n, m in (("p", "p"), ("q", "q"), ("gamma", "v"))
    ]
    for ours_e, their_value, n in pairs:
        print(
            f"  {n:6s} {ours_e.value:12.6f} ({ours_e.standard_error:9.6f})  "
            f"{their_value:14.6f}   {ours_e.value / their_value - 1:+.2e}"
        )
    # lifetimes reports the mean negative LL in its rescaled time unit
    their_ll = -lbg._negative_log_likelihood_ * h.x.size + np.log(lbg._scale) * h.x.sum()
    their_gg = -lgg._negative_log_likelihood_ * len(buyers)
    print(f"log-likelihood BG/NBD:      orbita {bg.log_likelihood:,.3f}  lifetimes {their_ll:,.3f}")
    print(f"log-likelihood Gamma-Gamma: orbita {gg.log_likelihood:,.3f}  lifetimes {their_gg:,.3f}")
    rel = np.abs(ours.clv - theirs) / np.maximum(np.abs(theirs), 1e-9)
    print(
        f"12-month CLV: total orbita {ours.clv.sum():,.0f}  lifetimes {np.nansum(theirs):,.0f}; "
        f"per customer max rel. diff {np.nanmax(rel):.1e}, median {np.nanmedian(rel):.1e}, "
        f"lifetimes non-finite {int((~np.isfinite(theirs)).sum())}"
    )
    return lifetimes_s / orbita_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    print(
        f"load average at start: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, "
        f"cpus {os.cpu_count()}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    run("CDNOW (weeks)", cdnow())
    started = time.perf_counter()
    drawn = draw(args.customers, args.seed)
    print(f"\n(drew {args.customers:,} histories in {time.perf_counter() - started:.1f} s)")
    run("generated (days)", drawn)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")


if __name__ == "__main__":
    main()
