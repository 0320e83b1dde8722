"""Positions in the change topics: what a batch consumed from each partition.

The one rule every source, the fold and the offsets table share: a stored or
committed position is the offset *after* the last record handed out (the next
offset to read), never the last offset read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PartitionProgress:
    """What a batch consumed from one partition.

    `next_offset` is the position *after* the last record of the batch: the
    offset to resume from, stored with the state and committed to Kafka.
    """

    topic: str
    partition: int
    first_offset: int
    next_offset: int
    records: int
    #: The partition's high watermark when the batch was polled (None: unknown yet).
    end_offset: int | None = None

    @property
    def lag(self) -> int | None:
        if self.end_offset is None:
            return None
        return max(self.end_offset - self.next_offset, 0)


class RecordLike(Protocol):
    """A consumed message as the engine reads it (kafka-python's ConsumerRecord fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def consumed(records: Iterable[RecordLike]) -> tuple[tuple[PartitionProgress, ...], int]:
    """What a batch consumed: its progress per partition, and its value bytes."""
    seen: dict[tuple[str, int], list[int]] = {}
    nbytes = 0
    for r in records:
        span = seen.get((r.topic, r.partition))
        if span is None:
            seen[(r.topic, r.partition)] = [r.offset, r.offset, 1]
        else:
            span[0] = min(span[0], r.offset)
            span[1] = max(span[1], r.offset)
            span[2] += 1
        nbytes += len(r.value) if r.value is not None else 0
    progress = tuple(
        PartitionProgress(topic, partition, first, last + 1, count)
        for (topic, partition), (first, last, count) in seen.items()
    )
    return progress, nbytes
