"""Kafka partitions read between two positions: the batch source of `changefold replay`.

Manual assignment, no group, no Kafka commits: the live engine and its group
are untouched. Each partition is read from its stored position (a resumed
replay) or its first offset up to, not including, its end offset; a partition
whose end was reached, or that the fold step finished at a time bound, is
paused. `poll` returns None once every partition is done.

A batch is filled from several fetches, up to `max_records` records or `max_bytes`
bytes (a replay reads a backlog: full batches cost least; a poll that brings
nothing within `max_wait_ms` ends the batch), and partitions are handed out together in source time
(engine/ingest/aligned.py): a partition fetched ahead of the others waits, paused,
so that a batch holds the legs of the same source transactions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from kafka import KafkaConsumer, TopicPartition

from engine.core.positions import PartitionProgress
from engine.ingest import kafka_pause
from engine.ingest.aligned import SourceTimeAligner
from engine.ingest.source import Key, Polled, Rebalance


class RangeReader(Protocol):
    """What KafkaRanges calls on its consumer: a kafka-python KafkaConsumer, or
    engine.ingest.confluent_reader.ConfluentReader (CHANGEFOLD_KAFKA_CLIENT=confluent)."""

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def seek(self, partition: TopicPartition, offset: int) -> None: ...

    def pause(self, *partitions: TopicPartition) -> None: ...

    def resume(self, *partitions: TopicPartition) -> None: ...

    def position(self, partition: TopicPartition) -> int: ...

    def poll(self, timeout_ms: int, max_records: int) -> Any: ...


class KafkaRanges:
    """Reads [first, end) of each partition once."""

    def __init__(
        self,
        consumer: RangeReader,
        first: Mapping[Key, int],
        ends: Mapping[Key, int],
        *,
        name: str = "replay",
        max_wait_ms: int,
        max_records: int,
        max_bytes: int = 64 * 2**20,
    ) -> None:
        self.name = name
        self.consumer = consumer
        self.first = dict(first)
        self.ends = dict(ends)
        self.max_wait_ms = max_wait_ms
        self.max_records = max_records
        self.max_bytes = max_bytes
        #: Partitions still to hand out, with the offset to stop before (after assignment).
        self.remaining: dict[Key, int] = {}
        #: Of those, the ones fetched to their end (records may still wait in `aligner`).
        self._fetched: set[Key] = set()
        #: Partitions paused because they were fetched ahead of the others.
        self._ahead: set[Key] = set()
        self.aligner = SourceTimeAligner()
        self._assigned = False

    def _assign(self, rebalance: Rebalance) -> None:
        keys = sorted(self.ends)
        stored = rebalance.assigned(keys)
        tps = [TopicPartition(*k) for k in keys]
        self.consumer.assign(tps)
        for key, tp in zip(keys, tps, strict=True):
            position = stored.get(key, self.first.get(key, 0))
            self.consumer.seek(tp, position)
            if position < self.ends[key]:
                self.remaining[key] = self.ends[key]
        self.consumer.pause(
            *[tp for tp, key in zip(tps, keys, strict=True) if key not in self.remaining]
        )
        self._assigned = True

    def poll(self, rebalance: Rebalance) -> Polled | None:
        if not self._assigned:
            self._assign(rebalance)
        if not self.remaining:
            return None
        records: list[Any] = []
        size = 0
        while True:
            fetching = self._fetching()
            taken = self.aligner.take(fetching, self.max_records - len(records))
            records += taken
            size += sum(len(r.value or b"") + len(r.key or b"") for r in taken)
            if len(records) >= self.max_records or size >= self.max_bytes or not fetching:
                break
            self._pause_ahead(fetching)
            polled = kafka_pause.poll(self.consumer, self.max_wait_ms, self.max_records)
            if not polled:
                break
            self.aligner.add(
                r
                for batch in polled.values()
                for r in batch
                if (r.topic, r.partition) in self.remaining
                and r.offset < self.remaining[(r.topic, r.partition)]
            )
            self._note_fetched()
        if not records:
            # The watermark held everything back for a whole wait (a partition that
            # brought nothing): hand out the earliest records, reading never stops.
            records = self.aligner.take(self._fetching(), self.max_records, force=True)
        self.finish([k for k in self._fetched if not self.aligner.pending(k)])
        keys = {(r.topic, r.partition) for r in records}
        return Polled(records, {key: self.ends.get(key) for key in keys})

    def _fetching(self) -> list[Key]:
        return [k for k in self.remaining if k not in self._fetched]

    def _note_fetched(self) -> None:
        """Partitions fetched to their end: paused (their last records may still wait)."""
        reached = [
            key
            for key, end in self.remaining.items()
            if key not in self._fetched and self.consumer.position(TopicPartition(*key)) >= end
        ]
        if reached:
            self._fetched.update(reached)
            self.consumer.pause(*[TopicPartition(*k) for k in reached])
            self._ahead.difference_update(reached)

    def _pause_ahead(self, fetching: Sequence[Key]) -> None:
        """Pause the partitions whose records wait in the aligner; resume the others."""
        ahead = self.aligner.waiting() & set(fetching)
        if ahead - self._ahead:
            self.consumer.pause(*[TopicPartition(*k) for k in sorted(ahead - self._ahead)])
        behind = sorted(k for k in self._ahead - ahead if k in self.remaining)
        if behind:
            self.consumer.resume(*[TopicPartition(*k) for k in behind])
        self._ahead = ahead

    def checkpoint(self, progress: Sequence[PartitionProgress]) -> float:
        """Positions live in the replay's state file only: nothing to commit."""
        return 0.0

    def seek(self, positions: Mapping[Key, int]) -> None:
        moved = [key for key in positions if key in self.remaining]
        self.aligner.drop(moved)
        for key in moved:
            self.consumer.seek(TopicPartition(*key), positions[key])
            if key in self._fetched:
                self._fetched.discard(key)
                self.consumer.resume(TopicPartition(*key))

    def finish(self, partitions: Sequence[Key]) -> None:
        self.aligner.drop(partitions)
        for key in partitions:
            self._fetched.discard(key)
            self._ahead.discard(key)
            if self.remaining.pop(key, None) is not None:
                self.consumer.pause(TopicPartition(*key))

    def caught_up(self) -> bool:
        return self._assigned and not self.remaining

    def close(self) -> None:
        """The consumer belongs to the replay, which closes it."""


class _FromFirst:
    """A rebalance listener for reading ranges outside any state: no stored positions."""

    def revoking(self, partitions: Sequence[Key]) -> None:
        return None

    def assigned(self, partitions: Sequence[Key]) -> Mapping[Key, int]:
        return {}


def read_ranges(
    consumer: KafkaConsumer, ranges: Mapping[Key, tuple[int, int]], *, max_wait_ms: int = 200
) -> Iterator[Any]:
    """The records of [start, end) of each partition given, batch after batch (a
    partition whose records were deleted by retention starts at its first offset)."""
    source = KafkaRanges(
        consumer,
        {k: start for k, (start, _end) in ranges.items()},
        {k: end for k, (_start, end) in ranges.items()},
        name="ranges",
        max_wait_ms=max_wait_ms,
        max_records=10_000,
    )
    listener = _FromFirst()
    while (polled := source.poll(listener)) is not None:
        yield from polled.records
