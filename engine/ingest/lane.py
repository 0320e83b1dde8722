"""One member's pipeline: a poller thread fetches while a folder thread folds.

kafka-python spends most of a poll parsing records in Python; decoding and
folding are mostly native (polars, DuckDB). Running them in two threads
overlaps the two, yet keeps every consumer call on the poller thread.

Bounds and ordering:
- The hand-over queue holds ONE batch: while a batch folds and the next one
  waits, the poller blocks and stops fetching (backpressure); memory stays at
  two batches plus kafka-python's fetch buffers, whatever the topic size.
- Kafka offset commits, seeks and position tracking happen on the poller, after
  the folder has committed the batch to DuckDB.
- Before partitions are revoked (kafka-python runs the callback while the
  poller waits in poll()), the lane waits until the folder has finished every
  batch it was handed: no batch is in flight while partitions move.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from engine.core.positions import PartitionProgress
from engine.decode.decoder import Decoder
from engine.ingest.kafka_group import Member
from engine.state.writer import StaleBatch, StateWriter, WriteResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Folded:
    """A batch the folder committed to DuckDB (to be committed to Kafka)."""

    progress: tuple[PartitionProgress, ...]
    result: WriteResult
    records: int
    bytes: int
    decode_ms: float


@dataclass(frozen=True)
class Refused:
    """A batch behind the stored offsets: the poller seeks to them."""

    progress: tuple[PartitionProgress, ...]
    stored: dict[tuple[str, int], int]


Outcome = Folded | Refused


@dataclass
class _Handover:
    records: list[Any]
    #: High watermark per (topic, partition) when the batch was polled.
    ends: dict[tuple[str, int], int | None]


class Lane:
    def __init__(
        self,
        member: Member,
        writer: StateWriter,
        *,
        stop: threading.Event,
        on_folded: Callable[[Member, Folded, float], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.member = member
        self.writer = writer
        self.stop = stop
        self.leave = threading.Event()
        self.on_folded = on_folded
        self.on_error = on_error
        self._handover: queue.Queue[_Handover | None] = queue.Queue(maxsize=1)
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._failed = False
        self.caught_up = False
        self._folder = threading.Thread(
            target=self._fold_loop, name=f"{member.name}-fold", daemon=True
        )
        member.before_revoke = self.drain

    # -- poller -----------------------------------------------------------------------

    def run(self) -> None:
        """The poller: runs on the member's thread until stopped."""
        self._folder.start()
        try:
            while not self.stop.is_set() and not self.leave.is_set():
                self._apply_outcomes()
                records = self.member.poll()
                if records:
                    self.caught_up = False
                    ends = {
                        key: self.member.end_offset(*key)
                        for key in {(r.topic, r.partition) for r in records}
                    }
                    self._handover.put(_Handover(records, ends))
                else:
                    self.caught_up = (
                        self._handover.unfinished_tasks == 0
                        and self._done.empty()
                        and self.member.caught_up()
                    )
        finally:
            self._handover.put(None)
            self._folder.join()
            self._apply_outcomes()

    def drain(self) -> None:
        """Wait until the folder has finished every batch handed to it."""
        self._handover.join()

    def _apply_outcomes(self) -> None:
        while True:
            try:
                outcome = self._done.get_nowait()
            except queue.Empty:
                return
            member = self.member
            if isinstance(outcome, Refused):
                member.rewind(outcome.progress, outcome.stored)
                member.advanced(
                    [
                        replace(
                            p,
                            next_offset=outcome.stored.get((p.topic, p.partition), p.first_offset),
                        )
                        for p in outcome.progress
                    ]
                )
                continue
            member.advanced(outcome.progress)
            commit_ms = member.commit(outcome.progress)
            self.writer.note_commit(outcome.result.batch_id, commit_ms)
            self.on_folded(member, outcome, commit_ms)

    # -- folder -----------------------------------------------------------------------

    def _fold_loop(self) -> None:
        decoder = Decoder()
        while True:
            item = self._handover.get()
            try:
                if item is None:
                    return
                if not self._failed:
                    self._done.put(self._fold(decoder, item))
            except BaseException as exc:
                self._failed = True
                log.error("%s: folding failed: %s", self.member.name, exc)
                self.on_error(exc)
            finally:
                self._handover.task_done()

    def _fold(self, decoder: Decoder, item: _Handover) -> Outcome:
        records = item.records
        t0 = time.perf_counter()
        batch = decoder.decode(records, self.writer.known_schemas())
        decode_ms = (time.perf_counter() - t0) * 1000
        progress = tuple(
            replace(p, end_offset=item.ends.get((p.topic, p.partition))) for p in batch.progress
        )
        try:
            result = self.writer.write(
                batch, member=self.member.name, progress=progress, decode_ms=decode_ms
            )
        except StaleBatch as stale:
            log.warning(
                "%s: %s already folded past this batch (by another member): skipping to "
                "the stored offsets",
                self.member.name,
                ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(stale.stored.items())),
            )
            return Refused(progress, stale.stored)
        if log.isEnabledFor(logging.INFO):
            lags = [p.lag for p in progress if p.lag is not None]
            log.info(
                "%s batch %d: %d records, %d upserts, %d deletes, %d dead letters; "
                "decode %.1f ms, fold %.1f ms; lag %s; %s",
                self.member.name,
                result.batch_id,
                batch.records,
                result.upserts,
                result.deletes,
                result.dead_letters,
                decode_ms,
                result.fold_ms,
                sum(lags) if lags else "?",
                ", ".join(
                    f"{p.topic}[{p.partition}]@{p.first_offset}-{p.next_offset - 1}"
                    for p in progress
                ),
            )
        return Folded(progress, result, batch.records, batch.bytes, decode_ms)
