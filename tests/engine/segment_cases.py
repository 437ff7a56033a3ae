"""Segment definitions that exercise every construct of the language, as a marketer writes
them (YAML), with the computed traits and named segments they refer to."""

from __future__ import annotations

from typing import Any

import yaml

from orbita.model.segments import ComputedTrait, Segment, parse_segment

STRATEGY = yaml.safe_load(
    """
computed_traits:
  orders_count:          {event: "Order Completed", aggregate: count}
  total_revenue:         {event: "Order Completed", aggregate: sum, property: revenue}
  avg_order_value:       {event: "Order Completed", aggregate: avg, property: revenue}
  last_order_at:         {event: "Order Completed", aggregate: last_at}
  first_order_at:        {event: "Order Completed", aggregate: first_at}
  days_since_last_order: {event: "Order Completed", aggregate: days_since_last}
  favourite_category:    {event: "Product Viewed", aggregate: mode, property: category,
                          within: 180d}
  last_category:         {event: "Order Completed", aggregate: last, property: category}
  cheapest_view_30d:     {event: "Product Viewed", aggregate: min, property: price, within: 30d}

segments:
  lapsed_30d:
    all:
      - {event: "Order Completed", count: ">= 1"}
      - {event: "Order Completed", within: 30d, count: "== 0"}
  shoe_browsers:
    all:
      - {event: "Product Viewed", where: {category: shoes}, within: 30d, count: ">= 2"}
      - {trait: country, in: [UA, PL]}
      - not: {segment: lapsed_30d}
  big_spenders:
    {event: "Order Completed", sum: {revenue: ">= 600"}}
  lapsed_big_spenders:
    all: [{segment: lapsed_30d}, {segment: big_spenders}]
  abandoned_cart:
    {did: {event: "Product Added", within: 3d}, then_not: {event: "Order Completed"}, within: 4h}

cases:
  # events: windows and counts
  did_order: {event: "Order Completed"}
  orders_2_in_90d: {event: "Order Completed", within: 90d, count: ">= 2"}
  no_order_30d: {event: "Order Completed", within: 30d, count: "== 0"}
  fewer_than_3_views: {event: "Product Viewed", count: "< 3"}
  views_not_2: {event: "Product Viewed", count: "!= 2"}
  ordered_90_to_30_days_ago: {event: "Order Completed", between: [90d, 30d]}
  ordered_twice_before_60d: {event: "Order Completed", before: 60d, count: ">= 2"}
  viewed_pricing_page: {event: Pricing, message_type: page}
  # events: property filters
  viewed_shoes_60d: {event: "Product Viewed", where: {category: shoes}, within: 60d}
  viewed_shoes_or_bags: {event: "Product Viewed", where: {category: [shoes, bags]}}
  viewed_expensive: {event: "Product Viewed", where: {price: {gte: 150}}}
  viewed_price_range: {event: "Product Viewed", where: {price: {between: [20, 30]}}}
  ordered_not_shoes: {event: "Order Completed", where: {category: {ne: shoes}}}
  ordered_no_category: {event: "Order Completed", where: {category: {exists: false}}}
  viewed_hoe: {event: "Product Viewed", where: {category: {contains: hoe}}}
  ordered_with_coupon: {event: "Order Completed", where: {coupon: true}}
  small_orders_twice:
    {event: "Order Completed", where: {revenue: {lt: 60}, category: {in: [shoes, hats]}},
     count: ">= 2"}
  # events: aggregates
  revenue_over_500: {event: "Order Completed", sum: {revenue: ">= 500"}}
  revenue_60d_under_100: {event: "Order Completed", within: 60d, sum: {revenue: "< 100"}}
  avg_order_over_200: {event: "Order Completed", avg: {revenue: "> 200"}}
  cheap_view: {event: "Product Viewed", min: {price: "<= 10"}}
  expensive_view_30d: {event: "Product Viewed", within: 30d, max: {price: ">= 190"}}
  first_order_shoes: {event: "Order Completed", first: {category: "== shoes"}}
  last_view_not_bags: {event: "Product Viewed", last: {category: "!= bags"}}
  last_order_big: {event: "Order Completed", last: {revenue: "> 200"}}
  # traits
  country_ua: {trait: country, eq: UA}
  country_ua_pl: {trait: country, in: [UA, PL]}
  country_not_ua: {trait: country, ne: UA}
  has_vip: {trait: vip, exists: true}
  no_vip: {trait: vip, exists: false}
  vip_true: {trait: vip, eq: true}
  older_than_40: {trait: age, gt: 40}
  age_18_30: {trait: age, range: [18, 30]}
  plan_pro: {trait: plan, contains: pro}
  no_email: {trait: email, exists: false}
  locale_uk_pl: {trait: locale, in: [uk, pl]}
  signed_up_over_14d_ago: {trait: created_at, before: 14d}
  signed_up_last_30d: {trait: created_at, within: 30d}
  signed_up_in_h2_2025: {trait: created_at, between: [2025-06-01, 2025-12-31]}
  trial_ends_within_7d: {trait: trial_ends_at, within_next: 7d}
  trial_ended_10d_ago: {trait: trial_ends_at, older_than: 10d}
  birthday_in_3d: {trait: birthday, anniversary_within: 3d}
  born_1990_or_later: {trait: birthday, gte: 1990-01-01}
  # combinations and references
  all_of:
    all:
      - {event: "Product Viewed", within: 60d}
      - {trait: country, in: [UA, PL]}
      - {not: {event: "Order Completed", within: 60d}}
  any_of:
    any: [{trait: vip, eq: true}, {event: "Order Completed", within: 14d}]
  not_ordered: {not: {event: "Order Completed"}}
  only_negatives:
    all: [{not: {trait: country, eq: UA}}, {not: {event: "Product Viewed", within: 30d}}]
  nested:
    any:
      - all: [{trait: plan, eq: premium}, {not: {segment: lapsed_30d}}]
      - {not: {any: [{event: "Product Viewed"}, {trait: age, lt: 50}]}}
  ref_lapsed: {segment: lapsed_30d}
  ref_shoe_browsers: {segment: shoe_browsers}
  ref_of_refs: {segment: lapsed_big_spenders}
  # sequences
  abandoned_cart_4h: {segment: abandoned_cart}
  added_then_ordered_2h:
    {did: {event: "Product Added"}, then: {event: "Order Completed"}, within: 2h}
  # the follow-up scan is bounded by the first step's window (and, without one, not below)
  added_never_ordered_1d:
    {did: {event: "Product Added"}, then_not: {event: "Order Completed"}, within: 1d}
  viewed_then_added_3d:
    did: {event: "Product Viewed", between: [10d, 2d], where: {category: shoes}}
    then: {event: "Product Added"}
    within: 3d
  # computed traits
  three_orders: {computed: orders_count, gte: 3}
  zero_orders: {computed: orders_count, eq: 0}
  revenue_over_600: {computed: total_revenue, gt: 600}
  aov_100_200: {computed: avg_order_value, between: [100, 200]}
  ordered_last_30d: {computed: last_order_at, within: 30d}
  first_order_half_year_ago: {computed: first_order_at, before: 180d}
  lapsed_over_30_days: {computed: days_since_last_order, gt: 30}
  loves_shoes: {computed: favourite_category, eq: shoes}
  favourite_not_shoes: {computed: favourite_category, ne: shoes}
  last_category_known: {computed: last_category, exists: true}
  cheap_viewer: {computed: cheapest_view_30d, lt: 20}
  # seams filled by analytics
  champions: {rfm: champions}
  likely_to_churn: {predicted: churn_probability, gte: 0.7}
  ltv_500_1500: {predicted: ltv, between: [500, 1500]}
"""
)

COMPUTED_TRAITS: dict[str, ComputedTrait] = {
    name: ComputedTrait.model_validate(spec) for name, spec in STRATEGY["computed_traits"].items()
}
NAMED_SEGMENTS: dict[str, Segment] = {
    name: parse_segment(spec, name=name) for name, spec in STRATEGY["segments"].items()
}
CASES: dict[str, Segment] = {
    name: parse_segment(spec, name=name) for name, spec in STRATEGY["cases"].items()
}


def case_specs() -> dict[str, Any]:
    return dict(STRATEGY["cases"])
