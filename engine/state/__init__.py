"""DuckDB state: the mirror tables, their offsets, dead letters and batch metrics."""
