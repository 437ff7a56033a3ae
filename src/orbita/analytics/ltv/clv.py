"""Customer lifetime value: expected purchases from a purchase model times expected order
value from Gamma-Gamma, discounted month by month over a horizon."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from orbita.analytics.ltv.fitting import Floats, fold
from orbita.analytics.ltv.gammagamma import GammaGamma


class PurchaseModel(Protocol):
    def p_alive(self, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> Floats: ...

    def conditional_expected_purchases(
        self, t: float, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
    ) -> Floats: ...


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

    The purchase model depends only on (x, t_x, T), so it is evaluated once per distinct
    history and spread back to the customers.
    """
    if months < 1:
        raise ValueError("months must be >= 1")
    if monthly_discount <= -1:
        raise ValueError("monthly_discount must be > -1")
    data = fold(x, t_x, T)
    previous = np.zeros(data.x.size)
    discounted = np.zeros(data.x.size)
    for month in range(1, months + 1):
        cumulative = purchases.conditional_expected_purchases(
            month * time_units_per_month, data.x, data.t_x, data.T
        )
        discounted += (cumulative - previous) / (1 + monthly_discount) ** month
        previous = cumulative
    order_value = spend.expected_value(x, monetary)
    return CustomerValues(
        p_alive=purchases.p_alive(data.x, data.t_x, data.T)[data.inverse],
        expected_purchases=previous[data.inverse],
        expected_order_value=order_value,
        clv=discounted[data.inverse] * order_value,
    )
