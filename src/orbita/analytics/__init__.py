"""Measurement, below the services and above the stores: it reads the event and state
stores and returns plain values; services and the edges (CLI, API) use it.

- `kpis`, `goals`, `periods`: named metrics by day, week and month, and strategy goals;
- `funnels`, `cohorts`: ordered steps with a conversion window; retention by acquisition;
- `experiments/`: A/B variants, splits and holdouts with their statistics and uplift;
- `ltv/`: BG/NBD, Pareto/NBD and Gamma-Gamma fits (pure numpy/scipy), discounted CLV, and
  the purchase histories and calibration check built from a workspace's orders.
"""
