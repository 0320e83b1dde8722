"""Kafka partitions read between two positions: the batch source of `changefold replay`.

Manual assignment, no group, no Kafka commits: the live engine and its group
are untouched. Each partition is read from its stored position (a resumed
replay) or its first offset up to, not including, its end offset; a partition
whose end was reached, or that the fold step finished at a time bound, is
paused. `poll` returns None once every partition is done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kafka import KafkaConsumer, TopicPartition

from engine.core.positions import PartitionProgress
from engine.ingest.source import Key, Polled, Rebalance


class KafkaRanges:
    """Reads [first, end) of each partition once."""

    def __init__(
        self,
        consumer: KafkaConsumer,
        first: Mapping[Key, int],
        ends: Mapping[Key, int],
        *,
        name: str = "replay",
        max_wait_ms: int,
        max_records: int,
    ) -> None:
        self.name = name
        self.consumer = consumer
        self.first = dict(first)
        self.ends = dict(ends)
        self.max_wait_ms = max_wait_ms
        self.max_records = max_records
        #: Partitions still to read, with the offset to stop before (after assignment).
        self.remaining: dict[Key, int] = {}
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
        polled = self.consumer.poll(timeout_ms=self.max_wait_ms, max_records=self.max_records)
        records = [
            r
            for batch in polled.values()
            for r in batch
            if (r.topic, r.partition) in self.remaining
            and r.offset < self.remaining[(r.topic, r.partition)]
        ]
        reached = [
            key
            for key, end in self.remaining.items()
            if self.consumer.position(TopicPartition(*key)) >= end
        ]
        self.finish(reached)
        keys = {(r.topic, r.partition) for r in records}
        return Polled(records, {key: self.ends.get(key) for key in keys})

    def checkpoint(self, progress: Sequence[PartitionProgress]) -> float:
        """Positions live in the replay's state file only: nothing to commit."""
        return 0.0

    def seek(self, positions: Mapping[Key, int]) -> None:
        for key, offset in positions.items():
            if key in self.remaining:
                self.consumer.seek(TopicPartition(*key), offset)

    def finish(self, partitions: Sequence[Key]) -> None:
        for key in partitions:
            if self.remaining.pop(key, None) is not None:
                self.consumer.pause(TopicPartition(*key))

    def caught_up(self) -> bool:
        return self._assigned and not self.remaining

    def close(self) -> None:
        """The consumer belongs to the replay, which closes it."""
