"""The hand-over between a fold loop's poller and its folder: at most one batch waits.

While the folder is busy, what the poller reads next waits here. With merge limits
the waiting batch grows: every later poll is appended to it (same seek epoch, and
only a poll that continues each partition past the waiting batch's last offset, so
a redelivery is never merged) until it would pass `max_records` or `max_bytes`;
then the poller blocks until the folder takes it (backpressure). So when the
folder comes back it takes everything that arrived during the last fold in one
batch, and a change waits for at most the fold in progress and its own, instead
of queueing behind a batch that was cut when the previous fold began. Without
limits, each poll is handed over as polled and the poller blocks while one waits.

Memory stays bounded by the batch limits: the batch being folded, the one waiting
(at most the limits) and the poll in the poller's hand.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from engine.ingest.source import Key, Polled


@dataclass(frozen=True)
class MergeLimits:
    """How large a waiting batch may grow by merging later polls into it."""

    max_records: int
    max_bytes: int


def polled_bytes(polled: Polled) -> int:
    """Key and value bytes of the records (what the batch byte limits count)."""
    return sum(len(r.value or b"") + len(r.key or b"") for r in polled.records)


def last_offsets(polled: Polled) -> dict[Key, int]:
    """The last offset of each partition in the batch."""
    out: dict[Key, int] = {}
    for r in polled.records:
        out[(r.topic, r.partition)] = r.offset
    return out


def continues(last: dict[Key, int], later: Polled) -> bool:
    """Every record of `later` is past the last offset `last` holds for its partition."""
    seen: set[Key] = set()
    for r in later.records:
        key = (r.topic, r.partition)
        if key not in seen:
            seen.add(key)
            if r.offset <= last.get(key, -1):
                return False
    return True


def merged(first: Polled, later: Polled) -> Polled:
    """`first` then `later`: the records of each partition stay in offset order (the
    later poll continues where the first stopped); the newest known end offsets."""
    ends: dict[Key, int | None] = dict(first.ends)
    for key, end in later.ends.items():
        if end is not None or key not in ends:
            ends[key] = end
    return Polled([*first.records, *later.records], ends)


class Handover:
    """One waiting batch between two threads, with join/task_done like a queue."""

    def __init__(self, merge: MergeLimits | None = None) -> None:
        self.merge = merge
        self._cond = threading.Condition()
        self._waiting: tuple[int, Polled] | None = None
        self._waiting_bytes = 0
        self._waiting_last: dict[Key, int] = {}
        self._unfinished = 0
        self._closed = False
        #: Polls appended to a waiting batch (for tests and logs).
        self.merges = 0

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing taken is unfinished."""
        with self._cond:
            return self._unfinished == 0

    def put(self, epoch: int, polled: Polled) -> None:
        """Hand a batch over: merged into the waiting one when the limits allow, else
        blocks until the folder took the waiting one."""
        size = polled_bytes(polled) if self.merge is not None else 0
        last = last_offsets(polled) if self.merge is not None else {}
        with self._cond:
            while self._waiting is not None:
                if self._fits(epoch, polled, size):
                    waiting_epoch, waiting = self._waiting
                    self._waiting = (waiting_epoch, merged(waiting, polled))
                    self._waiting_bytes += size
                    self._waiting_last.update(last)
                    self.merges += 1
                    return
                self._cond.wait()
            self._waiting = (epoch, polled)
            self._waiting_bytes = size
            self._waiting_last = last
            self._unfinished += 1
            self._cond.notify_all()

    def _fits(self, epoch: int, polled: Polled, size: int) -> bool:
        assert self._waiting is not None
        waiting_epoch, waiting = self._waiting
        return (
            self.merge is not None
            and waiting_epoch == epoch
            and len(waiting.records) + len(polled.records) <= self.merge.max_records
            and self._waiting_bytes + size <= self.merge.max_bytes
            and continues(self._waiting_last, polled)
        )

    def get(self) -> tuple[int, Polled] | None:
        """The waiting batch (blocks until there is one); None once closed and empty.
        Call `task_done` when it is folded."""
        with self._cond:
            while self._waiting is None:
                if self._closed:
                    return None
                self._cond.wait()
            item, self._waiting = self._waiting, None
            self._waiting_bytes = 0
            self._cond.notify_all()
            return item

    def task_done(self) -> None:
        with self._cond:
            self._unfinished -= 1
            self._cond.notify_all()

    def join(self) -> None:
        """Wait until every batch handed over was taken and folded."""
        with self._cond:
            while self._unfinished:
                self._cond.wait()

    def close(self) -> None:
        """No more batches: `get` returns the waiting one, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
