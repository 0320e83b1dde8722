"""The change pipeline: consume Debezium envelopes, decode them in bulk, fold them into state."""
