"""Records of the pipeline: raw messages in, decoded batches out (RecordLike, the
shape of a consumed message, lives in engine.core.positions)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from engine.core.positions import PartitionProgress, RecordLike
from engine.decode.model import DeadLetter, TableChanges

__all__ = ["DecodedBatch", "RawLookup", "RawRecord", "RecordLike", "raw_lookup"]

#: (topic, partition, offset) -> (key bytes, value bytes) of a consumed record.
RawLookup = Callable[[str, int, int], tuple[bytes | None, bytes | None]]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One Kafka message as bytes, as captured in tests/fixtures/*.jsonl."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class DecodedBatch:
    """A polled batch after decoding: per-table change frames and what could not be read."""

    tables: tuple[TableChanges, ...]
    dead_letters: tuple[DeadLetter, ...]
    progress: tuple[PartitionProgress, ...]
    records: int
    bytes: int
    #: Null values (Debezium's tombstones after a delete): nothing to fold.
    tombstones: int
    #: Messages of topics that are not tables (transaction metadata, heartbeats).
    skipped: int
    newest_source_ts_ms: int | None
    #: The key and value bytes of a record of the batch, for dead-lettering a row
    #: DuckDB refuses.
    raw: RawLookup = field(repr=False, compare=False)

    @property
    def changes(self) -> int:
        return sum(t.frame.height for t in self.tables)


def raw_lookup(
    records: Sequence[RecordLike],
) -> RawLookup:
    """(topic, partition, offset) -> the message's key and value bytes, for the writer
    to dead-letter a row DuckDB refuses. The index is built on the first call only:
    most batches never need it."""
    index: dict[tuple[str, int, int], RecordLike] = {}

    def raw(topic: str, partition: int, offset: int) -> tuple[bytes | None, bytes | None]:
        if not index:
            index.update({(r.topic, r.partition, r.offset): r for r in records})
        rec = index[(topic, partition, offset)]
        return rec.key, rec.value

    return raw
