"""The consumer loop: a poller thread reads a source while a folder thread folds.

kafka-python spends most of a poll parsing records in Python; decoding and
folding are mostly native (polars, DuckDB). Two threads overlap the two, yet
every call on the source stays on the poller thread (the caller of `run`).

    poller:  checkpoint what was folded -> poll -> hand the batch over   (repeat)
    folder:  take a batch -> CheckpointedStep.fold (one DuckDB transaction)

Bounds and ordering:
- The hand-over (engine.ingest.handover) holds ONE batch: while a batch folds,
  the next one waits. With merge limits (`changefold run`) later polls are
  appended to the waiting batch up to the batch limits, so the folder takes
  everything that arrived during a fold at once; past the limits (or without
  them) the poller blocks and stops reading (backpressure). Memory stays at two
  batches plus the client's fetch buffers, whatever the topic size.
- Checkpoints (Kafka commits) and seeks happen on the poller, after the folder
  committed the batch to DuckDB, in batch order.
- Before partitions are revoked (the source calls `revoking` inside `poll`), the
  loop waits until the folder finished every batch it was handed: no batch is
  being folded while partitions move. (Their checkpoints follow when `poll`
  returns; a commit for a partition that moved may fail, and the stored
  positions in the state decide where its new owner starts.)
- A refused batch (another member folded past it) is skipped to the stored
  positions. Batches polled before that seek would continue from the old
  positions, so every batch of the same *seek epoch* is refused too; the poller
  waits for all of them, then seeks each partition once, to the earliest position
  any of them asks for but never before the position the state stores for it
  (everything before that was taken in: a batch from there would be refused
  again), and starts a new epoch. The input of a bounded source ends only when
  no refusal moved it back.
- Stop (SIGTERM, `stop.set()`, or `leave.set()` for this loop alone): the batch in
  hand is folded and checkpointed, nothing more is polled, then `run` returns. A
  folding error stops the loop and `run` raises it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence

from engine.ingest.handover import Handover, MergeLimits
from engine.ingest.source import BatchSource, Key
from engine.ingest.step import CheckpointedStep, Outcome, Refused, rewind_positions

log = logging.getLogger(__name__)

#: Called on the poller after each checkpoint: (the source, the outcome, commit ms).
OutcomeHook = Callable[[BatchSource, Outcome, float], None]
#: Called after every assignment: (the source, its partitions now).
AssignedHook = Callable[[BatchSource, Sequence[Key]], None]


class FoldLoop:
    """Runs one source through one fold step until the input ends or it is stopped."""

    def __init__(
        self,
        source: BatchSource,
        step: CheckpointedStep,
        *,
        stop: threading.Event,
        leave: threading.Event | None = None,
        on_outcome: OutcomeHook | None = None,
        on_assigned: AssignedHook | None = None,
        merge: MergeLimits | None = None,
    ) -> None:
        self.source = source
        self.step = step
        self.stop = stop
        self.leave = leave or threading.Event()
        self.on_outcome = on_outcome
        self.on_assigned = on_assigned
        self._handover = Handover(merge)
        #: Seek epoch: advanced each time refused batches moved the source back.
        self._epoch = 0
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._caught_up = False

    @property
    def caught_up(self) -> bool:
        """Nothing in hand and the source read every partition to its end."""
        return self._caught_up

    def run(self) -> bool:
        """Poll and fold until stopped or the input ends; True when it ended (a bounded
        source was read completely and every batch folded). Raises a folding error."""
        folder = threading.Thread(
            target=self._fold_loop, name=f"{self.source.name}-fold", daemon=True
        )
        folder.start()
        ended = False
        try:
            while not self._stopping():
                if self._checkpoint_folded():
                    continue
                if self._stopping():
                    break
                polled = self.source.poll(self)
                if polled is None:
                    # Ended, unless a batch in flight is refused and moves the source back.
                    self._handover.join()
                    if self._error is None and self._checkpoint_folded():
                        continue
                    ended = self._error is None
                    break
                if polled.records:
                    self._caught_up = False
                    self._handover.put(self._epoch, polled)
                else:
                    self._caught_up = (
                        self._handover.idle and self._done.empty() and self.source.caught_up()
                    )
        finally:
            self._handover.close()
            folder.join()
            if self._error is None:
                self._checkpoint_folded()
        if self._error is not None:
            raise self._error
        return ended

    # -- Rebalance (called by the source inside poll, on the poller thread) -------------

    def revoking(self, partitions: Sequence[Key]) -> None:
        # Partitions taken away are not read to their end: no idle exit while the
        # member rejoins (a join can outlast it), until a poll after it finds nothing.
        self._caught_up = False
        # Only wait: a Kafka client may call this on its IO thread, where a blocking
        # commit is refused; the folded batches are checkpointed when poll returns.
        self._handover.join()

    def assigned(self, partitions: Sequence[Key]) -> Mapping[Key, int]:
        self._caught_up = False
        writer = self.step.writer
        writer.record_assignment(self.source.name, list(partitions))
        if self.on_assigned is not None:
            self.on_assigned(self.source, partitions)
        return writer.stored_offsets()

    # -- poller side ----------------------------------------------------------------------

    def _stopping(self) -> bool:
        return self.stop.is_set() or self.leave.is_set() or self._error is not None

    def _checkpoint_folded(self) -> bool:
        """Checkpoint what was folded; True when refused batches moved the source back
        (then every batch in flight was waited for and a new seek epoch began)."""
        refused: list[Refused] = []
        while True:
            try:
                outcome = self._done.get_nowait()
            except queue.Empty:
                if not refused:
                    return False
                # Every batch polled before the seek is refused too: wait for them all.
                self._handover.join()
                if not self._done.empty():
                    continue
                self.source.seek(rewind_positions(refused, self.step.writer.stored_offsets()))
                self._epoch += 1
                return True
            if isinstance(outcome, Refused):
                refused.append(outcome)
                commit_ms = 0.0
            else:
                commit_ms = self.step.checkpoint(self.source, outcome)
            if self.on_outcome is not None:
                self.on_outcome(self.source, outcome, commit_ms)

    # -- folder thread --------------------------------------------------------------------

    def _fold_loop(self) -> None:
        refused_epoch = -1
        while (item := self._handover.get()) is not None:
            epoch, polled = item
            try:
                if self._error is not None:
                    continue
                if epoch <= refused_epoch:
                    # Polled before the source was moved back: it continues from the old
                    # positions, so it is refused as a whole.
                    self._done.put(self.step.refuse(polled))
                    continue
                outcome = self.step.fold(polled)
                if isinstance(outcome, Refused):
                    refused_epoch = epoch
                self._done.put(outcome)
            except BaseException as exc:
                log.error("%s: folding failed: %s", self.source.name, exc)
                self._error = exc
            finally:
                self._handover.task_done()
