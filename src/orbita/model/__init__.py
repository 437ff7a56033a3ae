"""Pydantic models: Segment-compatible messages, customers and events; later the strategy."""
