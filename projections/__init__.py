"""The read model: DuckDB DDL and views, and the pure fold of events into them."""
