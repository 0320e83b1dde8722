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
                            key=json.loads(r.key) if r.key else None,
                            value=json.loads(r.value) if r.value else None,
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
