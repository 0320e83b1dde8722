"""Records of the pipeline: raw messages in, decoded batches out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from engine.state.model import DeadLetter, PartitionProgress, TableChanges


class RecordLike(Protocol):
    """What the decoder reads from a consumed message (kafka-python's ConsumerRecord fits)."""

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

    @property
    def changes(self) -> int:
        return sum(t.frame.height for t in self.tables)
