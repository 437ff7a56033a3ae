"""The HTTP API (FastAPI): Segment-compatible ingestion, customers, health. An edge: thin."""
