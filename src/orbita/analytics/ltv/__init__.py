"""Customer lifetime value: BG/NBD and Pareto/NBD purchase models, Gamma-Gamma spend,
discounted CLV (pure numpy/scipy), and their inputs built from a workspace's events."""

from orbita.analytics.ltv.bgnbd import BGNBD, BGNBDFit, fit_bgnbd
from orbita.analytics.ltv.clv import (
    PURCHASE_MODELS,
    CustomerValues,
    PurchaseFit,
    PurchaseModel,
    customer_values,
    fit_purchases,
)
from orbita.analytics.ltv.fitting import Estimate, FitError, fold
from orbita.analytics.ltv.gammagamma import GammaGamma, GammaGammaFit, fit_gamma_gamma
from orbita.analytics.ltv.paretonbd import ParetoNBD, ParetoNBDFit, fit_paretonbd

__all__ = [
    "BGNBD",
    "PURCHASE_MODELS",
    "BGNBDFit",
    "CustomerValues",
    "Estimate",
    "FitError",
    "GammaGamma",
    "GammaGammaFit",
    "ParetoNBD",
    "ParetoNBDFit",
    "PurchaseFit",
    "PurchaseModel",
    "customer_values",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "fit_paretonbd",
    "fit_purchases",
    "fold",
]
