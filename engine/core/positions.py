"""Positions in the change topics: what a batch consumed from each partition.

The one rule every source, the fold and the offsets table share: a stored or
committed position is the offset *after* the last record handed out (the next
offset to read), never the last offset read.
"""

from __future__ import annotations

from dataclasses import dataclass


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
