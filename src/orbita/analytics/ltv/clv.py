"""Customer lifetime value: expected purchases from a purchase model times expected order
value from Gamma-Gamma, discounted month by month over a horizon."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from orbita.analytics.ltv.bgnbd import BGNBDFit, fit_bgnbd
from orbita.analytics.ltv.fitting import Floats, fold
from orbita.analytics.ltv.gammagamma import GammaGamma
from orbita.analytics.ltv.paretonbd import ParetoNBDFit, fit_paretonbd

PurchaseFit = BGNBDFit | ParetoNBDFit
PURCHASE_MODELS = {"bg_nbd": "BG/NBD", "pareto_nbd": "Pareto/NBD"}


class PurchaseModel(Protocol):
    def p_alive(self, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> Floats: ...

    def expected_purchases_if_alive(
        self, t: float, x: npt.ArrayLike, T: npt.ArrayLike
    ) -> Floats: ...


def fit_purchases(
    model: str, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
) -> PurchaseFit:
    """Fit the purchase model named `bg_nbd` or `pareto_nbd`."""
    if model == "bg_nbd":
        return fit_bgnbd(x, t_x, T)
    if model == "pareto_nbd":
        return fit_paretonbd(x, t_x, T)
    raise ValueError(f"unknown purchase model {model!r} (use {', '.join(PURCHASE_MODELS)})")


@dataclass(frozen=True, slots=True)
class CustomerValues:
    """Per customer, in the order given."""

    p_alive: Floats
    expected_purchases: Floats  # repeat purchases over the horizon
    expected_order_value: Floats
    clv: Floats  # discounted value of the expected purchases over the horizon


def customer_values(
    purchases: PurchaseModel,
    spend: GammaGamma,
    *,
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    monetary: npt.ArrayLike,
    months: int = 12,
    monthly_discount: float = 0.01,
    time_units_per_month: float = 30.0,
) -> CustomerValues:
    """CLV = Σ_{i=1..months} E[z | x, m] (E[Y(i)] - E[Y(i-1)]) / (1 + d)^i, the convention of
    `lifetimes` (months of `time_units_per_month` time units, here days by default).

    E[Y(t) | x, t_x, T] = P(alive | x, t_x, T) E[Y(t) | alive, x, T]: the sum over months is
    taken once per distinct (x, T) and P(alive) once per distinct (x, t_x, T).
    """
    if months < 1:
        raise ValueError("months must be >= 1")
    if monthly_discount <= -1:
        raise ValueError("monthly_discount must be > -1")
    data = fold(x, t_x, T)
    ages = fold(data.x, np.zeros(data.x.size), data.T)
    previous = np.zeros(ages.x.size)
    discounted = np.zeros(ages.x.size)
    for month in range(1, months + 1):
        cumulative = purchases.expected_purchases_if_alive(
            month * time_units_per_month, ages.x, ages.T
        )
        discounted += (cumulative - previous) / (1 + monthly_discount) ** month
        previous = cumulative
    alive = purchases.p_alive(data.x, data.t_x, data.T)
    order_value = spend.expected_value(x, monetary)
    return CustomerValues(
        p_alive=alive[data.inverse],
        expected_purchases=(previous[ages.inverse] * alive)[data.inverse],
        expected_order_value=order_value,
        clv=(discounted[ages.inverse] * alive)[data.inverse] * order_value,
    )
