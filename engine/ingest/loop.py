"""The consumer loop: a poller thread reads a source while a folder thread folds.

kafka-python spends most of a poll parsing records in Python; decoding and
folding are mostly native (polars, DuckDB). Two threads overlap the two, yet
every call on the source stays on the poller thread (the caller of `run`).

    poller:  checkpoint what was folded -> poll -> hand the batch over   (repeat)
    folder:  take a batch -> CheckpointedStep.fold (one DuckDB transaction)

Bounds and ordering:
- The hand-over holds ONE batch: while a batch folds and the next one waits,
  the poller blocks and stops reading (backpressure). Memory stays at two
  batches plus the client's fetch buffers, whatever the topic size.
- Checkpoints (Kafka commits) and seeks happen on the poller, after the folder
  committed the batch to DuckDB, in batch order.
- Before partitions are revoked (the source calls `revoking` inside `poll`), the
  loop waits until the folder finished every batch it was handed and checkpoints
  them: no batch is in flight while partitions move.
- Stop (SIGTERM, `stop.set()`): the batch in hand is folded and checkpointed,
  then `run` returns. A folding error stops the loop and `run` raises it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence

from engine.ingest.source import BatchSource, Key, Polled
from engine.ingest.step import CheckpointedStep, Outcome

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
        on_outcome: OutcomeHook | None = None,
        on_assigned: AssignedHook | None = None,
    ) -> None:
        self.source = source
        self.step = step
        self.stop = stop
        self.on_outcome = on_outcome
        self.on_assigned = on_assigned
        self._handover: queue.Queue[Polled | None] = queue.Queue(maxsize=1)
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
            while not self.stop.is_set() and self._error is None:
                self._checkpoint_folded()
                polled = self.source.poll(self)
                if polled is None:
                    ended = True
                    break
                if polled.records:
                    self._caught_up = False
                    self._handover.put(polled)
                else:
                    self._caught_up = (
                        self._handover.unfinished_tasks == 0
                        and self._done.empty()
                        and self.source.caught_up()
                    )
        finally:
            self._handover.put(None)
            folder.join()
            if self._error is None:
                self._checkpoint_folded()
        if self._error is not None:
            raise self._error
        return ended

    # -- Rebalance (called by the source inside poll, on the poller thread) -------------

    def revoking(self, partitions: Sequence[Key]) -> None:
        self._handover.join()
        if self._error is None:
            self._checkpoint_folded()

    def assigned(self, partitions: Sequence[Key]) -> Mapping[Key, int]:
        writer = self.step.writer
        writer.record_assignment(self.source.name, list(partitions))
        if self.on_assigned is not None:
            self.on_assigned(self.source, partitions)
        return writer.stored_offsets()

    # -- poller side ----------------------------------------------------------------------

    def _checkpoint_folded(self) -> None:
        while True:
            try:
                outcome = self._done.get_nowait()
            except queue.Empty:
                return
            commit_ms = self.step.checkpoint(self.source, outcome)
            if self.on_outcome is not None:
                self.on_outcome(self.source, outcome, commit_ms)

    # -- folder thread --------------------------------------------------------------------

    def _fold_loop(self) -> None:
        while True:
            polled = self._handover.get()
            try:
                if polled is None:
                    return
                if self._error is None:
                    self._done.put(self.step.fold(polled))
            except BaseException as exc:
                log.error("%s: folding failed: %s", self.source.name, exc)
                self._error = exc
            finally:
                self._handover.task_done()
