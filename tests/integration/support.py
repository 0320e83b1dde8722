"""Helpers shared by the integration tests: unique names, free ports, reading topics."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from engine.core.config import Settings
from engine.decode import avro


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def unique(prefix: str) -> str:
    """A name no other test (or earlier run) uses: topics, groups, slots, files."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@dataclass(frozen=True)
class Event:
    """One Kafka record of a Debezium topic, key and value parsed (value None = tombstone)."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any

    @property
    def payload(self) -> Any:
        return None if self.value is None else self.value.get("payload", self.value)


def message_reader(settings: Settings) -> Callable[[bytes | None], Any]:
    """Parses a Debezium topic's key or value in the stack's format (None: a tombstone
    or no key) into the JsonConverter's shape, {"schema": ..., "payload": ...}: with
    format=avro the payload is the Avro value read with the registry's schema and the
    schema is the Connect schema rebuilt from it (as the engine's decoder does)."""
    if not settings.stack.avro:
        return lambda data: json.loads(data) if data else None
    registry = avro.SchemaRegistry(settings.stack.registry_url)

    def parse(data: bytes | None) -> Any:
        if not data:
            return None
        schema = registry.schema(avro.schema_id(data))
        return {"schema": json.loads(schema.connect_json), "payload": schema.read(data)}

    return parse


def read_until(
    settings: Settings,
    topic: str,
    done: Callable[[list[Event]], bool],
    *,
    timeout_s: float = 60.0,
) -> list[Event]:
    """Read `topic` from the beginning (all partitions, no group) until `done(events)`.

    Returns every event read; fails the test with what was read if the deadline passes.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=settings.stack.bootstrap_servers,
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    parse = message_reader(settings)
    events: list[Event] = []
    try:
        deadline = time.monotonic() + timeout_s
        assigned = False
        while time.monotonic() < deadline:
            if not assigned:
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    time.sleep(0.5)
                    continue
                tps = [TopicPartition(topic, p) for p in sorted(parts)]
                consumer.assign(tps)
                consumer.seek_to_beginning(*tps)
                assigned = True
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    events.append(
                        Event(
                            topic=r.topic,
                            partition=r.partition,
                            offset=r.offset,
                            key=parse(r.key),
                            value=parse(r.value),
                        )
                    )
            if done(events):
                return events
        raise AssertionError(
            f"condition not met on {topic} within {timeout_s:.0f} s; read {len(events)} events: "
            + "; ".join(f"{e.partition}@{e.offset} {e.payload}" for e in events[-5:])
        )
    finally:
        consumer.close()
