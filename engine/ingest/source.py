"""The batch-source contract: where a fold loop gets its records from.

Three sources implement it: a Kafka consumer-group member (`changefold run`,
engine.ingest.kafka_group), Kafka partitions read between two bounds (`changefold
replay`, engine.ingest.kafka_ranges) and an in-memory log (tests,
engine.ingest.memory). The loop (engine.ingest.loop) and the fold step
(engine.ingest.step) know only this contract.

The position rule, the same everywhere: a position is the offset *after* the
last record handed out, i.e. the next offset to read. `PartitionProgress.next_offset`
is such a position; it is what the fold stores with the state and what
`checkpoint` acknowledges. A source never moves a partition past a record it
has not handed out, and after `seek` it hands out records from exactly the
positions given.

Threads: every method of a source is called from one thread, the loop's poller
(kafka-python's consumer is not thread-safe). Folding happens on another thread
between `poll` and `checkpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine.core.positions import PartitionProgress
from engine.decode.records import RecordLike

#: A partition: (topic, partition number).
Key = tuple[str, int]


@dataclass(frozen=True)
class Polled:
    """What one `poll` handed out."""

    #: Records in offset order per partition (partitions may interleave).
    records: Sequence[RecordLike]
    #: The high watermark (end offset) of each partition the records came from, as the
    #: source knew it when polling (None: not known yet). For lag figures only.
    ends: Mapping[Key, int | None] = field(default_factory=dict)


class Rebalance(Protocol):
    """What a source calls when the partitions it reads change (inside `poll`)."""

    def revoking(self, partitions: Sequence[Key]) -> None:
        """These partitions are about to be taken away. Returns once no batch is being
        folded: nothing is in flight while partitions move. May be called on a client's
        own thread (kafka-python's IO thread): it must not call back into the source."""

    def assigned(self, partitions: Sequence[Key]) -> Mapping[Key, int]:
        """These partitions are now this source's (all of them, not only new ones).
        Returns the stored position of each partition that has one; the source starts
        the others at its default start (earliest, or a replay's first offset)."""


class BatchSource(Protocol):
    """A source of record batches for one fold loop."""

    #: Names the source in logs, metrics and the assignments table (a group member).
    name: str

    def poll(self, rebalance: Rebalance) -> Polled | None:
        """The next batch, bounded by the source's record/byte limits; empty when nothing
        arrived within its wait; None when the input has ended (a bounded source read
        everything it was asked to). Rebalance callbacks run inside this call."""

    def checkpoint(self, progress: Sequence[PartitionProgress]) -> float:
        """A batch's effects are committed in the state: acknowledge its positions (a
        Kafka offset commit). Returns milliseconds spent. Failing to acknowledge loses
        nothing: the state holds the positions, and they win at the next assignment."""

    def seek(self, positions: Mapping[Key, int]) -> None:
        """Hand out records from these positions next (partitions not assigned are
        ignored): after a batch refused because the state moved past it."""

    def finish(self, partitions: Sequence[Key]) -> None:
        """No more records of these partitions are wanted (a replay's time bound was
        passed); records of them already handed out are the caller's to drop."""

    def caught_up(self) -> bool:
        """Every assigned partition was handed out up to its end offset."""

    def close(self) -> None:
        """Leave (the group) and release connections; safe to call twice."""


def describe(partitions: Sequence[Key]) -> str:
    """`topic[0,1], other[2]`: how logs and the status line name a set of partitions."""
    grouped: dict[str, list[int]] = {}
    for topic, partition in sorted(partitions):
        grouped.setdefault(topic, []).append(partition)
    return ", ".join(f"{t}[{','.join(map(str, ps))}]" for t, ps in grouped.items()) or "(none)"
