"""The retail bank: applications, approvals and refusals, activation, usage, support.

A customer registers in the app and (mostly) applies for a first product. Approval depends
on the credit score against the product's threshold (a logistic curve) and, for loans and
mortgages, on income; refused customers sometimes apply again later. An approved product
is opened; cards must then be activated, which many customers put off (the activation nudge's
target). Active customers pay by card at their own rate, sign in to the app, call support
now and then, and apply for further products (the cross-sell), until they drift away.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from orbita.simulation.calendar import (
    DAYTIME,
    DIURNAL,
    at_local_hour,
    numbered,
    pick,
    repeat_ranges,
)
from orbita.simulation.people import sample_people
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
    const_text,
    text,
)
from orbita.simulation.response import campaign_truth
from orbita.simulation.stores import (
    CHUNK,
    USER_PREFIX,
    USER_WIDTH,
    Store,
)
from orbita.simulation.timeline import RowSet, Sessions

EVENTS = (
    "Signed Up",
    "Signed In",
    "Application Submitted",
    "Application Approved",
    "Application Refused",
    "Product Opened",
    "Card Activated",
    "Product Activated",
    "Transaction Completed",
    "Support Call",
)
PROPERTY_ORDER = (
    "method",
    "application_id",
    "account_id",
    "product",
    "requested_amount",
    "credit_limit",
    "credit_score",
    "reason",
    "amount",
    "currency",
    "merchant_category",
    "channel",
    "topic",
    "duration",
    "resolved",
)
CURRENCY = "EUR"
PRODUCTS = ("card", "loan", "deposit", "mortgage")
CARD, LOAN, DEPOSIT, MORTGAGE = range(4)
CHANNELS = ("mobile", "web", "branch")
INCOME_BANDS = ("<20k", "20-40k", "40-70k", "70-120k", ">120k")
EMPLOYMENT = ("employed", "self_employed", "student", "retired", "unemployed")
REASONS = (
    "low_credit_score",
    "insufficient_income",
    "high_debt_to_income",
    "incomplete_documents",
    "fraud_check",
)
# Signing up (where) and signing in (how) share one `method` vocabulary.
METHODS = ("app", "web", "biometric", "password", "sms_code")
MERCHANTS = (
    "groceries", "restaurants", "transport", "fuel", "travel", "electronics", "clothing",
    "utilities", "entertainment", "health", "online_services", "cash_withdrawal",
)  # fmt: skip
MERCHANT_WEIGHTS = (0.27, 0.12, 0.1, 0.07, 0.02, 0.02, 0.05, 0.04, 0.06, 0.04, 0.13, 0.08)
MERCHANT_MEDIAN = (24, 28, 6, 48, 280, 190, 65, 75, 18, 32, 11, 100)  # euros
PAYMENT_CHANNELS = ("contactless", "chip", "online", "atm")
SUPPORT_TOPICS = (
    "card_blocked", "transaction_dispute", "application_status", "loan_question",
    "app_login_issue", "fees", "fraud_report", "refusal_explanation",
)  # fmt: skip
ACQUISITION = (
    ("organic", 0.22),
    ("app_store", 0.2),
    ("paid_search", 0.18),
    ("paid_social", 0.15),
    ("referral", 0.15),
    ("partner", 0.1),
)


@dataclass(frozen=True, slots=True)
class Approval:
    """P(approve) = logistic((score - threshold) / scale), times 0.15 below the income band."""

    threshold: float
    scale: float
    min_income_band: int  # index into INCOME_BANDS


@dataclass(frozen=True, slots=True)
class BankParams:
    yearly_growth: float = 0.4
    female_share: float = 0.5
    apply_share: float = 0.88  # of sign-ups apply for a first product
    first_product: tuple[float, float, float, float] = (0.68, 0.17, 0.12, 0.03)
    approval: dict[str, Approval] = field(
        default_factory=lambda: {
            "card": Approval(600, 35, 0),
            "loan": Approval(650, 30, 1),
            "deposit": Approval(380, 30, 0),
            "mortgage": Approval(700, 25, 2),
        }
    )
    credit_score_mean: float = 665.0
    credit_score_sd: float = 80.0
    reapply_share: float = 0.25  # refused customers who apply again 30-120 days later
    refusal_call_share: float = 0.3  # refused customers who call support about it
    card_activation_share: float = 0.78  # for typical engagement
    activation_median_days: float = 2.0
    deposit_funded_share: float = 0.8
    # Card payments: rate ~ Gamma(shape, mean) per day while active (Pareto/NBD-like).
    transaction_rate_shape: float = 1.8
    transaction_rate_mean: float = 0.7
    # Drifting away: dropout hazard ~ Gamma(shape, rate) per day after the first product.
    dropout_shape: float = 0.8
    dropout_rate: float = 320.0
    login_rate_base: float = 0.06  # app sign-ins per day while active, plus ...
    login_rate_per_transaction: float = 0.3  # ... this many per card payment
    support_rate: float = 0.006  # calls per day while a customer
    cross_sell_rate: float = 0.0025  # further applications per day while active
    engagement_shape: float = 4.0


@dataclass(frozen=True, slots=True)
class BankLatent:
    customer: Int64s
    signed_up: Int64s
    utc_offset: Int64s
    traits: dict[str, Column]
    credit_score: Int64s
    income_band: Int64s
    applies: Bools
    first_product: Int64s
    apply_delay_hours: Floats
    transaction_rate: Floats
    dropout_rate: Floats
    mobile_share: Floats
    engagement: Floats
    merchant_scale: Floats  # spend level
    activation: Bools  # activates a card when they get one


class Bank(Store):
    name = "bank"
    code = 2

    def __init__(
        self,
        *,
        seed: int,
        customers: int,
        start: datetime,
        days: int,
        chunk_size: int = CHUNK,
        params: BankParams | None = None,
    ) -> None:
        self.params = params or BankParams()
        super().__init__(
            seed=seed,
            customers=customers,
            start=start,
            days=days,
            chunk_size=chunk_size,
            yearly_growth=self.params.yearly_growth,
        )

    def _latent(self, index: int) -> BankLatent:
        rng, customer, signed_up = self.chunk_customers(index)
        p = self.params
        n = len(customer)
        people = sample_people(
            rng,
            customers=customer,
            signed_up=signed_up,
            female_share=p.female_share,
            email_share=0.99,
            phone_share=0.97,
            telegram_share=0.3,
            channels=ACQUISITION,
        )
        age = people.age
        # Scores rise with age; income with age and score.
        raw_score = rng.normal(p.credit_score_mean + 1.6 * (age - 38), p.credit_score_sd)
        score = np.clip(np.round(raw_score), 300, 850).astype(np.int64)
        wealth = (
            0.9 * (score - 650) / 80 + 0.5 * np.minimum(age - 22, 25) / 10 + rng.normal(0, 1, n)
        )
        income = np.digitize(wealth, [-0.6, 0.4, 1.3, 2.3]).astype(np.int64)
        employment = np.where(
            age < 24,
            pick(rng, (0.45, 0.05, 0.45, 0, 0.05), n),
            np.where(
                age >= 65,
                pick(rng, (0.12, 0.05, 0, 0.8, 0.03), n),
                pick(rng, (0.78, 0.12, 0.02, 0, 0.08), n),
            ),
        )
        engagement = rng.gamma(p.engagement_shape, 1 / p.engagement_shape, size=n)
        activation_p = np.clip(p.card_activation_share * engagement**0.5, 0.05, 0.98)
        traits = dict(people.traits)
        traits["credit_score"] = Column(Kind.INT, score)
        traits["income_band"] = text(income, INCOME_BANDS)
        traits["employment_status"] = text(employment, EMPLOYMENT)
        traits["marketing_opt_in"] = Column(Kind.BOOL, rng.random(n) < 0.6)
        return BankLatent(
            customer=customer,
            signed_up=signed_up,
            utc_offset=people.utc_offset,
            traits=traits,
            credit_score=score,
            income_band=income,
            applies=rng.random(n) < p.apply_share,
            first_product=pick(rng, p.first_product, n),
            apply_delay_hours=rng.lognormal(np.log(0.3), 1.6, n),
            transaction_rate=rng.gamma(
                p.transaction_rate_shape, p.transaction_rate_mean / p.transaction_rate_shape, n
            ),
            dropout_rate=rng.gamma(p.dropout_shape, 1 / p.dropout_rate, n),
            mobile_share=rng.beta(5, 1.5, n),
            engagement=engagement,
            merchant_scale=np.exp(0.25 * (income - 2) + rng.normal(0, 0.35, n)),
            activation=rng.random(n) < activation_p,
        )

    def approval_probability(self, product: Int64s, score: Int64s, income: Int64s) -> Floats:
        rules = [self.params.approval[name] for name in PRODUCTS]
        threshold = np.array([r.threshold for r in rules])[product]
        scale = np.array([r.scale for r in rules])[product]
        min_income = np.array([r.min_income_band for r in rules])[product]
        p = 1 / (1 + np.exp(-(score - threshold) / scale))
        return np.asarray(np.where(income >= min_income, p, 0.15 * p) * 0.97, dtype=np.float64)

    def chunk(self, index: int) -> Chunk:
        lat = self._latent(index)
        rng = self.behaviour(index)
        cal, p = self.calendar, self.params
        n = len(lat.customer)
        base = int(lat.customer[0]) if n else 0
        end = cal.end_ms
        rows = RowSet(events=EVENTS, property_order=PROPERTY_ORDER)
        mobile = rng.random(n) < lat.mobile_share

        def channel_of(customer: Int64s) -> dict[str, Column]:
            on_mobile = rng.random(len(customer)) < lat.mobile_share[customer]
            return {"channel": text(np.where(on_mobile, 0, 1), CHANNELS)}

        everyone = np.arange(n, dtype=np.int64)
        rows.at(
            "Signed Up",
            customer=everyone,
            time=lat.signed_up,
            properties={"method": text(np.where(mobile, 0, 1), METHODS)},
            context={"channel": text(np.where(mobile, 0, 1), CHANNELS)},
        )

        # --- applications, in three rounds: first, again after a refusal, cross-sell -------
        first = np.flatnonzero(lat.applies)
        a_customer = [first]
        a_product = [lat.first_product[first]]
        a_time = [lat.signed_up[first] + (lat.apply_delay_hours[first] * HOUR_MS).astype(np.int64)]
        r0 = self._decide(rng, lat, a_customer[0], a_product[0], a_time[0])
        again = np.flatnonzero(~r0.approved & (rng.random(len(first)) < p.reapply_share))
        a_customer.append(a_customer[0][again])
        # Refused once: half try the same product again, half a deposit.
        a_product.append(np.where(rng.random(len(again)) < 0.5, a_product[0][again], DEPOSIT))
        a_time.append(
            r0.decided[again] + (rng.uniform(30, 120, len(again)) * DAY_MS).astype(np.int64)
        )
        r1 = self._decide(rng, lat, a_customer[1], a_product[1], a_time[1])

        # Customers become active with their first opened product and drift away later.
        opened_at = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        for customers_, decision in ((a_customer[0], r0), (a_customer[1], r1)):
            got = decision.approved
            np.minimum.at(opened_at, customers_[got], decision.decided[got] + 5 * MINUTE_MS)
        is_client = opened_at < np.iinfo(np.int64).max
        op_open = cal.to_operational(np.where(is_client, opened_at, end))
        lifetime = rng.exponential(1.0, n) / lat.dropout_rate
        op_until = np.minimum(op_open + lifetime, cal.operational_days)
        active_until = np.where(
            is_client & (op_open + lifetime < cal.operational_days),
            cal.to_calendar(op_open + lifetime),
            np.iinfo(np.int64).max,
        )
        active_days = np.where(is_client, np.maximum(op_until - op_open, 0.0), 0.0)

        n_cross = rng.poisson(p.cross_sell_rate * active_days)
        x_owner, _ = repeat_ranges(n_cross)
        x_time = cal.to_calendar(op_open[x_owner] + rng.random(len(x_owner)) * active_days[x_owner])
        x_time = at_local_hour(
            rng, x_time, utc_offset_hours=lat.utc_offset[x_owner], profile=DAYTIME
        )
        x_time = np.maximum(x_time, opened_at[x_owner] + HOUR_MS)
        # Cross-sell goes to what they do not have yet: never a second first product.
        offset = 1 + pick(rng, (0.45, 0.4, 0.15), len(x_owner))
        x_product = (lat.first_product[x_owner] + offset) % len(PRODUCTS)
        a_customer.append(x_owner)
        a_product.append(x_product)
        a_time.append(x_time)
        r2 = self._decide(rng, lat, x_owner, x_product, x_time)

        app_customer = np.concatenate(a_customer)
        app_product = np.concatenate(a_product)
        app_time = np.concatenate(a_time)
        approved = np.concatenate([r0.approved, r1.approved, r2.approved])
        decided = np.concatenate([r0.decided, r1.decided, r2.decided])
        reason = np.concatenate([r0.reason, r1.reason, r2.reason])
        app_number = numbered(app_customer, app_time)
        app_id = Column(
            Kind.ID,
            (base + app_customer + 1) * 100 + np.minimum(app_number, 99),
            prefix="app",
            width=9,
        )
        account_id = Column(Kind.ID, app_id.values, prefix="acc", width=9)
        amount = self._requested(rng, app_product, lat.income_band[app_customer])
        score = lat.credit_score[app_customer]
        product = text(app_product, PRODUCTS)
        has_amount = app_product != CARD
        rows.at(
            "Application Submitted",
            customer=app_customer,
            time=app_time,
            properties={
                "application_id": app_id,
                "product": product,
                "requested_amount": Column(Kind.MONEY, amount, has_amount),
                "currency": const_text(CURRENCY, len(app_customer)),
            },
            context=channel_of(app_customer),
        )
        ok = np.flatnonzero(approved)
        limit = (np.round(np.clip((score[ok] - 500) * 12, 500, 5000) / 100) * 10000).astype(
            np.int64
        )
        rows.at(
            "Application Approved",
            customer=app_customer[ok],
            time=decided[ok],
            properties={
                "application_id": app_id.take(ok),
                "product": product.take(ok),
                "credit_score": Column(Kind.INT, score[ok]),
                "credit_limit": Column(Kind.MONEY, limit, app_product[ok] == CARD),
                "requested_amount": Column(Kind.MONEY, amount[ok], has_amount[ok]),
                "currency": const_text(CURRENCY, len(ok)),
            },
            context={"channel": const_text("server", len(ok))},
        )
        no = np.flatnonzero(~approved)
        rows.at(
            "Application Refused",
            customer=app_customer[no],
            time=decided[no],
            properties={
                "application_id": app_id.take(no),
                "product": product.take(no),
                "credit_score": Column(Kind.INT, score[no]),
                "reason": text(reason[no], REASONS),
            },
            context={"channel": const_text("server", len(no))},
        )
        opened = decided[ok] + (rng.uniform(1, 15, len(ok)) * MINUTE_MS).astype(np.int64)
        rows.at(
            "Product Opened",
            customer=app_customer[ok],
            time=opened,
            properties={
                "account_id": account_id.take(ok),
                "product": product.take(ok),
                "application_id": app_id.take(ok),
            },
            context={"channel": const_text("server", len(ok))},
        )

        # Cards wait for activation; other products start when funded or paid out.
        ok_card = ok[app_product[ok] == CARD]
        card_opened = opened[app_product[ok] == CARD]
        activates = lat.activation[app_customer[ok_card]]
        act_wait = rng.lognormal(np.log(p.activation_median_days), 1.1, len(ok_card)) * DAY_MS
        act_time = card_opened + act_wait.astype(np.int64)
        act = np.flatnonzero(activates)
        rows.at(
            "Card Activated",
            customer=app_customer[ok_card[act]],
            time=act_time[act],
            properties={"account_id": account_id.take(ok_card[act])},
            context=channel_of(app_customer[ok_card[act]]),
        )
        ok_other = ok[app_product[ok] != CARD]
        other_opened = opened[app_product[ok] != CARD]
        kind = app_product[ok_other]
        funded = (kind != DEPOSIT) | (rng.random(len(ok_other)) < p.deposit_funded_share)
        loan_wait, deposit_wait = rng.uniform(0, 2, len(kind)), rng.exponential(3, len(kind))
        wait_days = np.select(
            [kind == LOAN, kind == DEPOSIT],
            [loan_wait, deposit_wait],
            rng.uniform(7, 30, len(kind)),
        )
        fund = np.flatnonzero(funded)
        rows.at(
            "Product Activated",
            customer=app_customer[ok_other[fund]],
            time=other_opened[fund] + (wait_days[fund] * DAY_MS).astype(np.int64),
            properties={
                "account_id": account_id.take(ok_other[fund]),
                "product": product.take(ok_other[fund]),
            },
            context={"channel": const_text("server", len(fund))},
        )

        # --- card payments from activation until the customer drifts away ----------------
        # Each customer pays with the first card they activated.
        first_active = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        card_account = np.zeros(n, dtype=np.int64)
        by_time = act[np.lexsort((act_time[act], app_customer[ok_card[act]]))][::-1]
        card_account[app_customer[ok_card[by_time]]] = account_id.values[ok_card[by_time]]
        first_active[app_customer[ok_card[by_time]]] = act_time[by_time]
        has_card = first_active < np.iinfo(np.int64).max
        op_card = cal.to_operational(np.where(has_card, first_active, end))
        spend_days = np.where(has_card, np.maximum(op_until - op_card, 0.0), 0.0)
        n_tx = rng.poisson(lat.transaction_rate * spend_days)
        t_owner, _ = repeat_ranges(n_tx)
        t_time = cal.to_calendar(op_card[t_owner] + rng.random(len(t_owner)) * spend_days[t_owner])
        t_time = at_local_hour(
            rng, t_time, utc_offset_hours=lat.utc_offset[t_owner], profile=DAYTIME
        )
        t_time = np.maximum(t_time, first_active[t_owner] + MINUTE_MS)
        merchant = pick(rng, MERCHANT_WEIGHTS, len(t_owner))
        median = np.array(MERCHANT_MEDIAN, dtype=np.float64)[merchant] * lat.merchant_scale[t_owner]
        tx_amount = np.maximum(np.round(rng.lognormal(np.log(median), 0.7) * 100), 50).astype(
            np.int64
        )
        cash = merchant == MERCHANTS.index("cash_withdrawal")
        tx_amount = np.where(cash, np.maximum(np.round(tx_amount, -3), 1000), tx_amount)
        pay = np.where(
            cash,
            3,
            np.where(
                merchant == MERCHANTS.index("online_services"),
                2,
                pick(rng, (0.6, 0.15, 0.25), len(t_owner)),
            ),
        )
        rows.at(
            "Transaction Completed",
            customer=t_owner,
            time=t_time,
            properties={
                "account_id": Column(Kind.ID, card_account[t_owner], prefix="acc", width=9),
                "product": text(np.zeros(len(t_owner), np.int64), PRODUCTS),
                "amount": Column(Kind.MONEY, tx_amount),
                "currency": const_text(CURRENCY, len(t_owner)),
                "merchant_category": text(merchant, MERCHANTS),
                "channel": text(pay, PAYMENT_CHANNELS),
            },
        )

        # --- app sign-ins and support calls --------------------------------------------
        op_signup = cal.to_operational(lat.signed_up)
        # Before a first product the app is used for a few weeks at most.
        browse_until = np.where(
            is_client, op_until, np.minimum(op_signup + 21, cal.operational_days)
        )
        app_days = np.maximum(browse_until - op_signup, 0.0)
        login_rate = p.login_rate_base + p.login_rate_per_transaction * np.where(
            has_card, lat.transaction_rate, 0
        )
        n_login = rng.poisson(login_rate * app_days * lat.engagement)
        l_owner, _ = repeat_ranges(n_login)
        l_time = cal.to_calendar(op_signup[l_owner] + rng.random(len(l_owner)) * app_days[l_owner])
        l_time = at_local_hour(
            rng, l_time, utc_offset_hours=lat.utc_offset[l_owner], profile=DIURNAL
        )
        l_time = np.maximum(l_time, lat.signed_up[l_owner] + 10 * MINUTE_MS)
        on_mobile = rng.random(len(l_owner)) < lat.mobile_share[l_owner]
        mobile_method = pick(rng, (0.7, 0.1, 0.2), len(l_owner))
        web_method = pick(rng, (0, 0.7, 0.3), len(l_owner))
        rows.at(
            "Signed In",
            customer=l_owner,
            time=l_time,
            properties={
                "method": text(2 + np.where(on_mobile, mobile_method, web_method), METHODS)
            },
            context={"channel": text(np.where(on_mobile, 0, 1), CHANNELS)},
        )
        n_calls = rng.poisson(p.support_rate * app_days)
        c_owner, _ = repeat_ranges(n_calls)
        c_time = cal.to_calendar(op_signup[c_owner] + rng.random(len(c_owner)) * app_days[c_owner])
        c_time = at_local_hour(
            rng, c_time, utc_offset_hours=lat.utc_offset[c_owner], profile=DAYTIME
        )
        c_time = np.maximum(c_time, lat.signed_up[c_owner] + HOUR_MS)
        c_topic = pick(rng, (0.14, 0.16, 0.12, 0.1, 0.22, 0.14, 0.06, 0.06), len(c_owner))
        refused_calls = no[rng.random(len(no)) < p.refusal_call_share]
        c_owner = np.concatenate([c_owner, app_customer[refused_calls]])
        c_time = np.concatenate(
            [
                c_time,
                decided[refused_calls]
                + (rng.uniform(0.5, 72, len(refused_calls)) * HOUR_MS).astype(np.int64),
            ]
        )
        c_topic = np.concatenate(
            [c_topic, np.full(len(refused_calls), SUPPORT_TOPICS.index("refusal_explanation"))]
        )
        duration = np.round(rng.lognormal(np.log(300), 0.7, len(c_owner))).astype(np.int64)
        resolved = rng.random(len(c_owner)) < np.where(
            c_topic == SUPPORT_TOPICS.index("refusal_explanation"), 0.55, 0.82
        )
        rows.at(
            "Support Call",
            customer=c_owner,
            time=c_time,
            properties={
                "topic": text(c_topic, SUPPORT_TOPICS),
                "duration": Column(Kind.INT, duration),
                "resolved": Column(Kind.BOOL, resolved),
            },
            context={"channel": const_text("phone", len(c_owner))},
        )

        batch, _ = rows.finish(
            sessions=_no_sessions(),
            first_customer=base,
            anonymous_ids=(),
            start_ms=cal.start_ms,
            end_ms=end,
            min_session_gap_ms=0,
            user_prefix=USER_PREFIX,
            user_width=USER_WIDTH,
            context_keys=("channel",),
        )
        # Profile at the end of the period: what they hold and when they were last refused.
        held = np.zeros(n, dtype=np.int64)
        in_period = approved & (decided < end)
        np.bitwise_or.at(held, app_customer[in_period], 1 << app_product[in_period])
        refused = ~approved & (decided < end)
        last_refusal = np.full(n, -1, dtype=np.int64)
        np.maximum.at(last_refusal, app_customer[refused], decided[refused])
        customers = self._customers(lat, held, last_refusal)
        tx_in = t_time < end
        counters = {
            "customers": float(n),
            "applications": float((app_time < end).sum()),
            "approvals": float(in_period.sum()),
            "refusals": float(refused.sum()),
            "cards_activated": float((act_time[act] < end).sum()),
            "transactions": float(tx_in.sum()),
            "revenue": float(tx_amount[tx_in].sum()) / 100,
            "support_calls": float((c_time < end).sum()),
        }
        applies_rate = np.where(is_client, p.cross_sell_rate, 0.0)
        latent = LatentStates(
            customer=lat.customer,
            user_id=customers.user_id,
            active_until=active_until.astype(np.int64),
            engagement=lat.engagement,
            order_value=np.array(MERCHANT_MEDIAN, dtype=np.float64).mean() * lat.merchant_scale,
            goal_rates={
                "Transaction Completed": np.where(has_card, lat.transaction_rate, 0.0),
                "Application Submitted": np.where(is_client | ~lat.applies, applies_rate, 1.0),
                # An approved card waiting for activation: the activation delay's hazard.
                "Card Activated": np.where(
                    has_card,
                    0.0,
                    np.where(lat.activation, np.log(2) / p.activation_median_days, 0.02),
                ),
            },
        )
        return Chunk(
            index=index, customers=customers, events=batch, latent=latent, counters=counters
        )

    def _decide(
        self,
        rng: np.random.Generator,
        lat: BankLatent,
        customer: Int64s,
        product: Int64s,
        submitted: Int64s,
    ) -> _Decisions:
        score = lat.credit_score[customer]
        income = lat.income_band[customer]
        approved = rng.random(len(customer)) < self.approval_probability(product, score, income)
        k = len(product)
        hours = np.select(
            [product == CARD, product == LOAN, product == DEPOSIT],
            [rng.uniform(0.02, 2, k), rng.uniform(1, 30, k), np.full(k, 0.01)],
            rng.uniform(72, 400, k),  # mortgages take days to weeks
        )
        decided = submitted + np.maximum(hours * HOUR_MS, MINUTE_MS).astype(np.int64)
        rules = [self.params.approval[name] for name in PRODUCTS]
        threshold = np.array([r.threshold for r in rules])[product]
        min_income = np.array([r.min_income_band for r in rules])[product]
        other = 2 + pick(rng, (0.5, 0.35, 0.15), len(customer))
        reason = np.where(
            income < min_income, 1, np.where(score < threshold + 25, 0, other)
        ).astype(np.int64)
        return _Decisions(approved=approved, decided=decided, reason=reason)

    def _requested(self, rng: np.random.Generator, product: Int64s, income: Int64s) -> Int64s:
        """Requested amounts in cents: loans, deposits and mortgages grow with income."""
        median = np.array([0, 6000, 5000, 150000], dtype=np.float64)[product] * (1.4**income)
        euros = rng.lognormal(np.log(np.maximum(median, 1)), 0.5)
        step = np.where(product == MORTGAGE, 1000, 100)
        return (np.round(euros / step) * step * 100).astype(np.int64)

    def _customers(self, lat: BankLatent, held: Int64s, last_refusal: Int64s) -> CustomerBatch:
        combos = tuple(
            ",".join(name for bit, name in enumerate(PRODUCTS) if mask >> bit & 1)
            for mask in range(1 << len(PRODUCTS))
        )
        traits = dict(lat.traits)
        traits["createdAt"] = Column(Kind.TIME, lat.signed_up)
        traits["products_held"] = text(held, combos, held > 0)
        traits["products_count"] = Column(
            Kind.INT, np.array([bin(h).count("1") for h in held.tolist()], dtype=np.int64)
        )
        traits["last_refusal_at"] = Column(
            Kind.TIME, np.maximum(last_refusal, 0), last_refusal >= 0
        )
        order = (
            "email", "phone", "telegram_chat_id", "timezone", "locale", "createdAt",
            "first_name", "last_name", "gender", "birthday", "country", "city",
            "acquisition_channel", "credit_score", "income_band", "employment_status",
            "products_held", "products_count", "last_refusal_at", "marketing_opt_in",
        )  # fmt: skip
        return CustomerBatch(
            customer=lat.customer,
            user_id=Column(Kind.ID, lat.customer + 1, prefix=USER_PREFIX, width=USER_WIDTH),
            signed_up=lat.signed_up,
            traits={key: traits[key] for key in order},
        )

    def truth(self) -> dict[str, Any]:
        p = self.params
        return {
            "store": self.name,
            "currency": CURRENCY,
            "time_unit": "day",
            "note": (
                "Approval: P = logistic((credit_score - threshold) / scale) x 0.97, times 0.15 "
                "when income_band is below the product's minimum. Card payments: Poisson at a "
                "per-customer rate ~ Gamma while active; activity ends after an exponential "
                "lifetime with a per-customer hazard ~ Gamma (Pareto/NBD-like), in operational "
                "days. 'revenue' in the realised counts is card payment volume."
            ),
            "approval": {k: asdict(v) for k, v in p.approval.items()},
            "income_bands": list(INCOME_BANDS),
            "parameters": {k: v for k, v in asdict(p).items() if k != "approval"},
            "campaigns": campaign_truth(self.name),
        }


@dataclass(frozen=True, slots=True)
class _Decisions:
    approved: Bools
    decided: Int64s
    reason: Int64s


def _no_sessions() -> Sessions:
    empty = np.zeros(0, dtype=np.int64)
    return Sessions(customer=empty, start=empty, identified=np.zeros(0, np.bool_), context={})
