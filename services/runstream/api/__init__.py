"""The HTTP API of a query node (FastAPI)."""
