"""Reading partitions with confluent-kafka (librdkafka) behind the calls a replay makes.

`changefold replay` reads its ranges (engine/ingest/kafka_ranges.py) through a small
consumer surface: assign, seek, pause, resume, position, poll. kafka-python parses
every record in Python, which is most of a replay's CPU on large envelopes;
librdkafka fetches and parses them in C. `ConfluentReader` offers that surface over a
`confluent_kafka.Consumer` (manual assignment, no group membership, no commits), so
`KafkaRanges` reads through either client unchanged (CHANGEFOLD_KAFKA_CLIENT).

Positions are the reader's own: the offset after the last record handed out, or the
one sought, exactly as kafka-python's `position` gives them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaError, KafkaException
from confluent_kafka import TopicPartition as CkPartition
from kafka import TopicPartition

from engine.core.config import Settings
from engine.core.errors import KafkaUnavailableError
from engine.ingest.source import Key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One consumed message: what the engine reads of a kafka-python ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: Kafka timestamp (ms; CreateTime as the producer set it), 0 when there is none.
    timestamp: int


def reader_config(settings: Settings, client_id: str) -> dict[str, Any]:
    """librdkafka settings matching kafka_group.kafka_config for a reader of ranges."""
    engine = settings.engine
    return {
        "bootstrap.servers": settings.stack.bootstrap_servers,
        "client.id": client_id,
        # Required by the client; no group is joined (assign only) and nothing committed.
        "group.id": f"{client_id}-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "allow.auto.create.topics": False,
        "fetch.max.bytes": max(engine.batch_max_bytes, 1024 * 1024),
        "max.partition.fetch.bytes": engine.partition_fetch_bytes,
        "fetch.wait.max.ms": min(engine.batch_max_wait_ms, 500),
        # What librdkafka prefetches per partition: bounded like a batch.
        "queued.max.messages.kbytes": max(engine.batch_max_bytes // 1024, 1024),
        "socket.timeout.ms": 10_000,
    }


class ConfluentReader:
    """The consumer surface of KafkaRanges over confluent-kafka (see the module).

    A pause is the reader's own first: records of a paused partition that librdkafka
    delivers are parked, in order, and handed out after the resume. Only a partition
    with more than `park_bytes` parked is paused in librdkafka too (a librdkafka pause
    drops what it prefetched and fetches it again after the resume, which the
    source-time alignment, pausing partitions that run ahead many times a replay,
    would otherwise pay each time).
    """

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._consumer = Consumer(reader_config(settings, client_id), logger=log)
        self._servers = settings.stack.bootstrap_servers
        self._park_bytes = settings.engine.partition_fetch_bytes
        self._assigned: list[Key] = []
        #: Next offset to hand out per assigned partition.
        self._positions: dict[Key, int] = {}
        #: Next offset librdkafka is to deliver per partition (after the parked ones).
        self._received: dict[Key, int] = {}
        self._paused: set[Key] = set()
        #: Paused in librdkafka too.
        self._held_back: set[Key] = set()
        self._parked: dict[Key, list[KafkaRecord]] = {}
        self._parked_size: dict[Key, int] = {}
        #: Not handed to librdkafka yet: assigned at the next poll, at the positions sought.
        self._pending = True

    # -- the surface KafkaRanges calls --------------------------------------------------

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        self._assigned = [(tp.topic, tp.partition) for tp in partitions]
        self._positions, self._received = {}, {}
        self._paused, self._held_back = set(), set()
        self._parked, self._parked_size = {}, {}
        self._pending = True

    def seek(self, partition: TopicPartition, offset: int) -> None:
        key = (partition.topic, partition.partition)
        self._positions[key] = self._received[key] = offset
        self._parked.pop(key, None)
        self._parked_size.pop(key, None)
        if not self._pending:
            self._call(self._consumer.seek, CkPartition(key[0], key[1], offset))

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        self._paused.difference_update(keys)
        # librdkafka goes on after the last record it delivered: the reader's `received`.
        back = [k for k in keys if k in self._held_back]
        if back and not self._pending:
            self._held_back.difference_update(back)
            self._call(self._consumer.resume, [CkPartition(*k) for k in back])

    def position(self, partition: TopicPartition) -> int:
        return self._positions[(partition.topic, partition.partition)]

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[KafkaRecord]]:
        if self._pending:
            self._start()
        out: dict[TopicPartition, list[KafkaRecord]] = {}
        for key in [k for k in self._parked if k not in self._paused]:
            records = self._parked.pop(key)
            self._parked_size.pop(key, None)
            self._positions[key] = records[-1].offset + 1
            out[TopicPartition(*key)] = records
        messages = self._call(
            self._consumer.consume,
            num_messages=max_records,
            # Parked records are ready: take what librdkafka has, without waiting.
            timeout=0 if out else timeout_ms / 1000,
        )
        positions, received, paused = self._positions, self._received, self._paused
        for m in messages:
            error = m.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaUnavailableError(
                    f"reading {m.topic()}[{m.partition()}] from {self._servers}: {error.str()}"
                )
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            key = (topic, partition)
            # A record fetched before a seek took effect, or one delivered before, is
            # not taken (again).
            if offset != received.get(key):
                continue
            received[key] = offset + 1
            kind, ts = m.timestamp()
            if kind == TIMESTAMP_NOT_AVAILABLE:
                ts = 0
            record = KafkaRecord(topic, partition, offset, m.key(), m.value(), ts)
            if key in paused:
                self._park(key, record)
                continue
            positions[key] = offset + 1
            tp = TopicPartition(topic, partition)
            batch = out.get(tp)
            if batch is None:
                out[tp] = [record]
            else:
                batch.append(record)
        return out

    def close(self) -> None:
        self._consumer.close()

    # -- helpers ------------------------------------------------------------------------

    def _start(self) -> None:
        """Assign every partition at its position (librdkafka starts fetching there); the
        partitions paused before are paused in librdkafka too."""
        for key in self._assigned:
            self._positions.setdefault(key, 0)
            self._received.setdefault(key, self._positions[key])
        self._call(
            self._consumer.assign,
            [CkPartition(t, p, self._positions[(t, p)]) for t, p in self._assigned],
        )
        self._pending = False
        if self._paused:
            self._held_back |= self._paused
            self._call(self._consumer.pause, [CkPartition(*k) for k in sorted(self._paused)])

    def _park(self, key: Key, record: KafkaRecord) -> None:
        self._parked.setdefault(key, []).append(record)
        size = self._parked_size.get(key, 0) + len(record.value or b"") + len(record.key or b"")
        self._parked_size[key] = size
        if size > self._park_bytes and key not in self._held_back:
            self._held_back.add(key)
            self._call(self._consumer.pause, [CkPartition(*key)])

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KafkaException as exc:
            raise KafkaUnavailableError(
                f"the Kafka client (confluent-kafka) failed against {self._servers}: {exc}"
            ) from exc
