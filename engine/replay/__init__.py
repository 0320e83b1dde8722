"""Replay CDC history from Kafka into a separate DuckDB state, and compare states."""
