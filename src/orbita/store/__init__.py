"""Persistence behind small interfaces: operational state (SQLAlchemy) and events (analytic)."""
