"""An in-memory batch source: the Kafka of unit tests (no server).

- `MemoryLog`: partitions of records with offsets, appended by the test; `end()`
  says no more will come (a source then returns None once it handed out all).
- `MemoryGroup`: deals a log's partitions out to the members that joined (sorted
  partitions, round robin over sorted member names), with a generation number
  that every join and leave bumps: a member sees the change at its next poll as a
  rebalance (revoke everything, then assign), as an eager Kafka group does. It
  also keeps what members checkpointed (Kafka's committed offsets).
- `MemorySource`: one member (the contract of engine.ingest.source), with scripted
  faults: records delivered twice, a crash while polling, a crash after the state
  committed and before the checkpoint.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterable, Mapping, Sequence

from engine.core.errors import ChangefoldError
from engine.core.positions import PartitionProgress
from engine.decode.records import RawRecord
from engine.ingest.source import Key, Polled, Rebalance


class Crash(ChangefoldError):
    """A scripted crash of a memory source (stands for kill -9 at that point)."""


class MemoryLog:
    """Append-only partitions of records; thread-safe."""

    def __init__(self, partitions: Iterable[Key] = ()) -> None:
        self._lock = threading.Lock()
        self._parts: dict[Key, list[RawRecord]] = {key: [] for key in partitions}
        self._ended = False

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> int:
        """Add a record at the partition's end; returns its offset."""
        with self._lock:
            part = self._parts.setdefault((topic, partition), [])
            offset = len(part)
            part.append(RawRecord(topic, partition, offset, key, value))
            return offset

    def extend(self, records: Iterable[RawRecord]) -> None:
        """Add records (captured or generated) in their order, each at its partition's end
        (their own offsets are replaced by the log's)."""
        for r in records:
            self.append(r.topic, r.partition, r.key, r.value)

    def end(self) -> None:
        """No more records will be appended."""
        with self._lock:
            self._ended = True

    @property
    def ended(self) -> bool:
        return self._ended

    def partitions(self) -> list[Key]:
        with self._lock:
            return sorted(self._parts)

    def end_offset(self, key: Key) -> int:
        with self._lock:
            return len(self._parts.get(key, ()))

    def read(self, key: Key, start: int, count: int) -> list[RawRecord]:
        with self._lock:
            return self._parts.get(key, [])[start : start + count]


class MemoryGroup:
    """A consumer group over one log: membership, assignment, committed offsets."""

    def __init__(self, log: MemoryLog) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._members: list[str] = []
        self.generation = 0
        #: Kafka's committed offsets: what members checkpointed.
        self.committed: dict[Key, int] = {}

    def join(self, member: str) -> None:
        with self._lock:
            if member not in self._members:
                self._members.append(member)
                self.generation += 1

    def leave(self, member: str) -> None:
        with self._lock:
            if member in self._members:
                self._members.remove(member)
                self.generation += 1

    def assignment(self, member: str) -> list[Key]:
        with self._lock:
            members = sorted(self._members)
            if member not in members:
                return []
            i = members.index(member)
            return [k for j, k in enumerate(self.log.partitions()) if j % len(members) == i]

    def commit(self, offsets: Mapping[Key, int]) -> None:
        with self._lock:
            self.committed.update(offsets)


class MemorySource:
    """One member of a memory group as a batch source.

    `max_records` bounds a batch; a batch takes records from the assigned partitions in
    an order drawn from `seed` (per-partition order kept, partitions interleaved), so
    tests can vary where batches are cut and how partitions interleave.
    Faults: `redeliver_every=n` hands every n-th batch out a second time (Kafka's
    at-least-once delivery); `crash_on_poll=n` raises Crash at the n-th poll;
    `crash_on_checkpoint=n` raises Crash at the n-th checkpoint, after the batch
    was committed to the state and before Kafka would have been told.
    """

    def __init__(
        self,
        group: MemoryGroup,
        name: str = "memory",
        *,
        max_records: int = 100,
        seed: int = 0,
        redeliver_every: int | None = None,
        crash_on_poll: int | None = None,
        crash_on_checkpoint: int | None = None,
    ) -> None:
        self.group = group
        self.log = group.log
        self.name = name
        self.max_records = max_records
        self.random = random.Random(seed)
        self.redeliver_every = redeliver_every
        self.crash_on_poll = crash_on_poll
        self.crash_on_checkpoint = crash_on_checkpoint
        self.assigned: list[Key] = []
        self.positions: dict[Key, int] = {}
        self._generation = -1
        self._closed = False
        #: Figures for tests: polls that handed out records, checkpoints, rebalances,
        #: and the most batches handed out and not yet checkpointed at once.
        self.batches_out = 0
        self.checkpoints = 0
        self.rebalances = 0
        self.max_unacknowledged = 0
        self._polls = 0
        self._unacknowledged = 0
        self._last: list[RawRecord] = []
        self._redelivered = False
        group.join(name)

    # -- the contract ---------------------------------------------------------------------

    def poll(self, rebalance: Rebalance) -> Polled | None:
        self._polls += 1
        if self.crash_on_poll is not None and self._polls >= self.crash_on_poll:
            raise Crash(f"{self.name}: scripted crash at poll {self._polls}")
        if self._generation != self.group.generation:
            self._rebalance(rebalance)
        if (
            self.redeliver_every
            and self._last
            and self.batches_out % self.redeliver_every == 0
            and not self._redelivered
        ):
            self._redelivered = True
            return self._hand_out(list(self._last))
        self._redelivered = False
        records = self._take()
        if not records:
            if self.log.ended and self.caught_up():
                return None
            return Polled([])
        self._last = records
        return self._hand_out(records)

    def checkpoint(self, progress: Sequence[PartitionProgress]) -> float:
        self.checkpoints += 1
        self._unacknowledged = max(self._unacknowledged - 1, 0)
        if self.crash_on_checkpoint is not None and self.checkpoints >= self.crash_on_checkpoint:
            raise Crash(f"{self.name}: scripted crash at checkpoint {self.checkpoints}")
        self.group.commit({(p.topic, p.partition): p.next_offset for p in progress})
        return 0.0

    def seek(self, positions: Mapping[Key, int]) -> None:
        self._unacknowledged = max(self._unacknowledged - 1, 0)
        # After a seek records come from these positions: the batch handed out before
        # is not redelivered (it could start past them and skip records).
        self._last = []
        for key, offset in positions.items():
            if key in self.positions:
                self.positions[key] = offset

    def finish(self, partitions: Sequence[Key]) -> None:
        for key in partitions:
            if key in self.positions:
                self.positions[key] = self.log.end_offset(key)

    def caught_up(self) -> bool:
        return all(self.positions[k] >= self.log.end_offset(k) for k in self.assigned)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.group.leave(self.name)

    # -- inside ---------------------------------------------------------------------------

    def _rebalance(self, rebalance: Rebalance) -> None:
        if self.assigned:
            rebalance.revoking(list(self.assigned))
        self.assigned, self.positions = [], {}
        self._generation = self.group.generation
        self.assigned = self.group.assignment(self.name)
        stored = rebalance.assigned(list(self.assigned))
        self.positions = {k: stored.get(k, 0) for k in self.assigned}
        self._last = []
        self.rebalances += 1

    def _take(self) -> list[RawRecord]:
        """Up to max_records, partitions interleaved at random, each in offset order."""
        pending = {
            k: self.log.read(k, self.positions[k], self.max_records)
            for k in self.assigned
            if self.positions[k] < self.log.end_offset(k)
        }
        out: list[RawRecord] = []
        while pending and len(out) < self.max_records:
            key = self.random.choice(sorted(pending))
            run = pending[key]
            n = min(self.random.randint(1, max(len(run), 1)), self.max_records - len(out))
            out.extend(run[:n])
            del run[:n]
            if not run:
                del pending[key]
        for r in out:
            self.positions[(r.topic, r.partition)] = r.offset + 1
        return out

    def _hand_out(self, records: list[RawRecord]) -> Polled:
        self.batches_out += 1
        self._unacknowledged += 1
        self.max_unacknowledged = max(self.max_unacknowledged, self._unacknowledged)
        keys = {(r.topic, r.partition) for r in records}
        return Polled(records, {k: self.log.end_offset(k) for k in keys})
