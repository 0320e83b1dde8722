"""The checkpointed fold step: what `run`, `replay` and the tests do with every batch.

    decode -> fold into the mirrors -> views -> offsets and metrics   (ONE DuckDB transaction)
           -> checkpoint at the source                              (a Kafka offset commit)

`fold` (the first line) runs on the loop's folder thread; `checkpoint` (the
second) on its poller thread, which owns the source. The DuckDB transaction is
the truth: a crash before it loses nothing (the batch is read again from the
stored positions), a crash after it and before the checkpoint only makes Kafka's
committed offsets lag (the stored positions win at the next assignment, so the
redelivered records are refused as stale, never applied twice).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import polars as pl

from engine.core import positions
from engine.core.positions import PartitionProgress
from engine.decode.decoder import Decoder
from engine.decode.model import OFFSET, PARTITION, SOURCE_TS_MS
from engine.decode.records import DecodedBatch, RecordLike
from engine.ingest.source import BatchSource, Key, Polled
from engine.state.writer import StaleBatch, StateWriter, WriteResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Folded:
    """A batch committed to the state (to be checkpointed at the source)."""

    progress: tuple[PartitionProgress, ...]
    result: WriteResult
    records: int
    bytes: int
    decode_ms: float
    #: Partitions whose records passed the step's time bound (none were folded past it).
    finished: tuple[Key, ...] = ()


@dataclass(frozen=True)
class Refused:
    """A batch behind the stored positions (another member folded it): nothing was
    written; the source is to resume at `stored`."""

    progress: tuple[PartitionProgress, ...]
    stored: dict[Key, int]


@dataclass(frozen=True)
class Bounded:
    """Every record of the batch was past the time bound: nothing was written."""

    finished: tuple[Key, ...]


Outcome = Folded | Refused | Bounded


def rewind_positions(refused: Sequence[Refused], stored: Mapping[Key, int]) -> dict[Key, int]:
    """Where to read again after refused batches: per partition, the earliest of the
    stored position (a partition another member folded past) and the first offset
    of the refused batches (a partition they held that was not folded), yet never
    before `stored`, the state's positions now (read once every batch in flight was
    done): the state took in every record before them, and a batch starting there
    is refused as stale. (A redelivered batch refused unread may start there: going
    back to it made the next batches stale again, and with duplicates behind every
    stale batch the source was moved back forever.)"""
    out: dict[Key, int] = {}
    for batch in refused:
        for p in batch.progress:
            key = (p.topic, p.partition)
            target = batch.stored.get(key, p.first_offset)
            out[key] = min(out.get(key, target), target)
    return {key: max(target, stored.get(key, target)) for key, target in out.items()}


class CheckpointedStep:
    """Folds batches of one source into a state writer (shared by a group's members).

    `until_ms`: a time bound (a replay's `--until`): of each partition, the records from
    its first change committed after the bound on are not folded, and the partition
    is reported finished. `until_lsn`: a source log bound (a replay's `--until X/Y`):
    transactions whose END is after it are not applied (their events stay held).
    """

    def __init__(
        self,
        writer: StateWriter,
        member: str,
        *,
        until_ms: int | None = None,
        until_lsn: int | None = None,
    ) -> None:
        self.writer = writer
        self.member = member
        self.until_ms = until_ms
        self.until_lsn = until_lsn
        self.decoder = Decoder()
        #: Partitions past the time bound: their later records are dropped unread.
        self.finished: set[Key] = set()

    def fold(self, polled: Polled) -> Outcome:
        """Decode and fold one batch in one DuckDB transaction (the folder thread)."""
        records = polled.records
        if self.finished:
            records = [r for r in records if (r.topic, r.partition) not in self.finished]
            if not records:
                return Bounded(())
        finished: tuple[Key, ...] = ()
        if self.until_ms is not None:
            records, finished = self._bound(records, self.until_ms)
            self.finished.update(finished)
            if not records:
                return Bounded(finished)
        consumed, nbytes = positions.consumed(records)
        progress = tuple(
            replace(p, end_offset=polled.ends.get((p.topic, p.partition))) for p in consumed
        )
        try:
            result = self.writer.fold_records(
                records,
                member=self.member,
                progress=progress,
                nbytes=nbytes,
                decode=self._decode,
                until_ms=self.until_ms,
                until_lsn=self.until_lsn,
            )
        except StaleBatch as stale:
            log.warning(
                "%s: %s already folded past this batch (by another member): skipping to "
                "the stored offsets",
                self.member,
                ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(stale.stored.items())),
            )
            return Refused(progress, stale.stored)
        _log_batch(self.member, len(records), result, progress)
        return Folded(progress, result, len(records), nbytes, result.decode_ms, finished)

    def _decode(self, records: Sequence[RecordLike]) -> DecodedBatch:
        return self.decoder.decode(records, self.writer.known_schemas())

    def refuse(self, polled: Polled) -> Refused:
        """Refuse a batch unread: it was polled before the source was moved back."""
        consumed, _nbytes = positions.consumed(polled.records)
        return Refused(consumed, {})

    def checkpoint(self, source: BatchSource, outcome: Folded | Bounded) -> float:
        """Acknowledge a folded batch at the source (the poller thread; a refused one is
        the loop's to seek back). Returns the commit milliseconds."""
        if isinstance(outcome, Bounded):
            source.finish(outcome.finished)
            return 0.0
        commit_ms = source.checkpoint(outcome.progress)
        self.writer.note_commit(outcome.result.batch_id, commit_ms)
        if outcome.finished:
            source.finish(outcome.finished)
        return commit_ms

    def _bound(
        self, records: Sequence[RecordLike], until_ms: int
    ) -> tuple[Sequence[RecordLike], tuple[Key, ...]]:
        """Drop each partition's records from its first change committed after the bound
        (transaction ENDs after it are left out when the transactions are planned)."""
        batch = self._decode(records)
        cut: dict[Key, int] = {}
        for table in batch.tables:
            late = (
                table.frame.filter(pl.col(SOURCE_TS_MS) > until_ms)
                .group_by(PARTITION)
                .agg(pl.col(OFFSET).min())
            )
            for partition, offset in late.iter_rows():
                key = (table.topic, int(partition))
                cut[key] = min(cut.get(key, offset), int(offset))
        if not cut:
            return records, ()
        kept = [r for r in records if r.offset < cut.get((r.topic, r.partition), r.offset + 1)]
        return kept, tuple(sorted(cut))


def _log_batch(
    member: str, records: int, result: WriteResult, progress: Sequence[PartitionProgress]
) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    lags = [p.lag for p in progress if p.lag is not None]
    log.info(
        "%s batch %d: %d records, %d upserts, %d deletes, %d dead letters, %d source "
        "transactions applied, %d events held; decode %.1f ms, fold %.1f ms; lag %s; %s",
        member,
        result.batch_id,
        records,
        result.upserts,
        result.deletes,
        result.dead_letters,
        result.transactions,
        result.held,
        result.decode_ms,
        result.fold_ms,
        sum(lags) if lags else "?",
        ", ".join(
            f"{p.topic}[{p.partition}]@{p.first_offset}-{p.next_offset - 1}" for p in progress
        ),
    )
