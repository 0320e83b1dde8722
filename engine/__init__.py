"""changefold: CDC real-time analytics, Postgres -> Debezium -> Kafka -> DuckDB."""

__version__ = "0.1.0"
