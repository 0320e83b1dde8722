"""The local stack of real servers: PostgreSQL, a KRaft Kafka broker, a Kafka Connect
worker running Debezium. Started as plain background processes under the stack home."""
