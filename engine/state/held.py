"""What waits for its source transaction: an index kept in memory, built up batch by batch.

Per batch the writer asks which held transactions the batch completes
(`engine.state.transactions.plan`, which reads this index), then, once the batch's
DuckDB transaction has committed, `commit` brings the index up to date. Every step
costs what the batch brings or applies, not what is held: the ENDs stay sorted in
commit order, the waiting events of each partition in offset order, and the
counts of events per transaction and topic are kept as they come.

The index knows every held event and END; the records themselves are kept in
memory, or, for a transaction moved out (`spill`: held too long, past the memory
bound, or at a clean stop), in the state's `txn_events` / `txn_ends` tables. What
is kept only in memory is not lost in a crash because each partition's stored
resume position stays at its first record kept in memory (`marks_after`): after
a restart the member reads from there again, and the copies of what was applied
meanwhile are dropped as duplicates (`_changefold.txn_applied`, and the stored
`folded_offset` for events outside a transaction). A transaction moved to the
state file no longer holds its partitions back.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from engine.decode.records import RecordLike
from engine.decode.txmeta import TxnEnd

Key = tuple[str, int]


def record_bytes(record: RecordLike) -> int:
    return len(record.value or b"") + len(record.key or b"") + 64


def end_order(end: TxnEnd) -> tuple[int, int, str, int, int, str]:
    """Where an END sorts: by its place in the source log (LSN), then where it was read."""
    return (end.lsn, end.ts_ms, end.topic, end.partition, end.offset, end.xid)


@dataclass
class HeldEvent:
    xid: str
    #: Its place in its transaction (Debezium's total_order; None: not given).
    place: int | None
    topic: str
    partition: int
    offset: int
    #: The record; None when it is kept in the state file.
    record: RecordLike | None


class Held:
    """Every event and END held, by transaction (xid), and the order they apply in."""

    def __init__(self) -> None:
        self.events: dict[str, list[HeldEvent]] = {}
        self.ends: dict[str, TxnEnd] = {}
        #: Held ENDs in commit order (end_order keys).
        self.order: list[tuple[int, int, str, int, int, str]] = []
        #: Events held per transaction and topic.
        self.have: dict[str, dict[str, int]] = {}
        self.places: set[tuple[str, int]] = set()
        #: Per partition, (offset, xid) of the held events in offset order; entries of
        #: transactions applied since are skipped (and dropped from the front).
        self.queues: dict[Key, list[tuple[int, str]]] = {}
        #: Per transaction-topic partition, (offset, xid) of the held ENDs.
        self.end_queues: dict[Key, list[tuple[int, str]]] = {}
        self.touches: dict[str, set[Key]] = {}
        #: The batch that first held something of each transaction (insertion order).
        self.since: dict[str, int] = {}
        #: Transactions with events kept in the state file, and those whose END is.
        self.stored: set[str] = set()
        self.stored_ends: set[str] = set()
        #: Bytes of the records kept in memory.
        self.nbytes = 0

    # -- reading --------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(v) for v in self.events.values())

    def pending(self, xid: str) -> bool:
        return xid in self.events or xid in self.ends

    def records(self, xids: Iterable[str]) -> list[RecordLike]:
        """The records of these transactions kept in memory."""
        return [e.record for x in xids for e in self.events.get(x, ()) if e.record is not None]

    def positions(self) -> Iterator[tuple[str, int | None, str, int, int]]:
        """(xid, place, topic, partition, offset) of every event held."""
        for xid, evs in self.events.items():
            for e in evs:
                yield xid, e.place, e.topic, e.partition, e.offset

    def in_memory(self) -> Iterator[tuple[str, int | None, RecordLike]]:
        for xid, evs in self.events.items():
            for e in evs:
                if e.record is not None:
                    yield xid, e.place, e.record

    def stuck(self, before_batch: int) -> list[tuple[str, int, str]]:
        """Transactions held since a batch before `before_batch`: (xid, events held,
        where the first one is, as topic[partition]@offset)."""
        out = []
        for x, b in self.since.items():
            if b >= before_batch:
                continue
            evs = self.events.get(x)
            if evs:
                first = min(evs, key=lambda e: (e.topic, e.partition, e.offset))
                out.append((x, len(evs), f"{first.topic}[{first.partition}]@{first.offset}"))
                if len(out) == 20:
                    break
        return out

    def marks_after(
        self,
        keys: Iterable[Key],
        *,
        applied: set[str],
        spilled: set[str],
        new_events: Sequence[tuple[str, int | None, RecordLike]],
        new_ends: Sequence[TxnEnd],
    ) -> dict[Key, int]:
        """Per partition of `keys`, the offset of its first record kept in memory once a
        batch applied `applied`, moved `spilled` out and held its own new records: the
        resume position may not pass it (absent: nothing of it is kept in memory)."""
        out: dict[Key, int] = {}
        gone = applied | spilled

        for key in keys:
            for offset, xid in self.queues.get(key, ()):
                if xid not in gone and self._in_memory_at(xid, key, offset):
                    out[key] = offset
                    break
            for offset, xid in self.end_queues.get(key, ()):
                if xid not in gone and xid in self.ends and xid not in self.stored_ends:
                    if offset < out.get(key, offset + 1):
                        out[key] = offset
                    break
        for xid, _place, r in new_events:
            key = (r.topic, r.partition)
            if xid not in spilled and r.offset < out.get(key, r.offset + 1):
                out[key] = r.offset
        for e in new_ends:
            key = (e.topic, e.partition)
            if e.xid not in spilled and e.offset < out.get(key, e.offset + 1):
                out[key] = e.offset
        return out

    def _in_memory_at(self, xid: str, key: Key, offset: int) -> bool:
        return any(
            e.offset == offset and e.record is not None and (e.topic, e.partition) == key
            for e in self.events.get(xid, ())
        )

    def _kept_in_memory(self, xid: str) -> bool:
        return (xid in self.ends and xid not in self.stored_ends) or any(
            e.record is not None for e in self.events.get(xid, ())
        )

    def keys_of(self, xids: Iterable[str]) -> set[Key]:
        """The partitions these transactions hold records in (events and ENDs)."""
        out: set[Key] = set()
        for x in xids:
            out |= self.touches.get(x, set())
            end = self.ends.get(x)
            if end is not None:
                out.add((end.topic, end.partition))
        return out

    def to_spill(
        self,
        *,
        applied: set[str],
        new_events: Sequence[tuple[str, int | None, RecordLike]],
        batch_id: int,
        max_bytes: int,
        max_batches: int,
    ) -> set[str]:
        """The transactions to move to the state file once a batch applied `applied` and
        held `new_events`: every one kept in memory when `max_bytes` is 0; else those
        held for `max_batches` batches or more, then the oldest until what stays is
        within half of `max_bytes` (when it is over it)."""
        new_bytes: dict[str, int] = {}
        for x, _p, r in new_events:
            new_bytes[x] = new_bytes.get(x, 0) + record_bytes(r)
        if max_bytes <= 0:
            kept = {x for x in (*self.events, *self.ends) if self._kept_in_memory(x)}
            return (kept - applied) | set(new_bytes)
        out: set[str] = set()
        for x, b in self.since.items():
            if batch_id - b < max_batches:
                break
            if x not in applied and (self._kept_in_memory(x) or x in new_bytes):
                out.add(x)
        total = (
            self.nbytes
            + sum(new_bytes.values())
            - sum(self._memory_bytes(x) for x in applied | out)
            - sum(new_bytes.get(x, 0) for x in out)
        )
        if total <= max_bytes:
            return out
        for x in [*self.since, *new_bytes]:
            if total <= max_bytes // 2:
                break
            if x in applied or x in out:
                continue
            out.add(x)
            total -= self._memory_bytes(x) + new_bytes.get(x, 0)
        return out

    def _memory_bytes(self, xid: str) -> int:
        return sum(record_bytes(e.record) for e in self.events.get(xid, ()) if e.record)

    # -- changing (after the batch's DuckDB transaction committed) -------------------

    def commit(
        self,
        *,
        applied: Sequence[str],
        spilled: set[str],
        new_events: Sequence[tuple[str, int | None, RecordLike]],
        new_ends: Sequence[TxnEnd],
        batch_id: int,
    ) -> None:
        """Apply a committed batch: drop what it applied, add what it held, mark what it
        moved to the state file."""
        done = set(applied)
        emptied: set[Key] = set()
        from_order = 0
        for x in applied:
            if x not in self.events and x not in self.ends:
                continue  # applied as it came: nothing of it was held
            emptied |= self.keys_of((x,))
            if x in self.ends:
                from_order += 1
            self._drop(x)
        # The applied held ENDs lead the commit order (plan walks it from the start).
        del self.order[:from_order]
        for x, place, r in new_events:
            self.add_event(x, place, r.topic, r.partition, r.offset, r, batch_id)
        for e in new_ends:
            self.add_end(e, batch_id, stored=False)
        for x in spilled:
            self._mark_stored(x)
        for key in emptied:
            for queues in (self.queues, self.end_queues):
                q = queues.get(key)
                if q is None:
                    continue
                i = 0
                while i < len(q) and (q[i][1] in done or not self.pending(q[i][1])):
                    i += 1
                del q[:i]
                if not q:
                    del queues[key]

    def add_event(
        self,
        xid: str,
        place: int | None,
        topic: str,
        partition: int,
        offset: int,
        record: RecordLike | None,
        batch_id: int,
    ) -> None:
        self.events.setdefault(xid, []).append(
            HeldEvent(xid, place, topic, partition, offset, record)
        )
        counts = self.have.setdefault(xid, {})
        counts[topic] = counts.get(topic, 0) + 1
        if place is not None:
            self.places.add((xid, place))
        key = (topic, partition)
        self.touches.setdefault(xid, set()).add(key)
        _insert(self.queues.setdefault(key, []), (offset, xid))
        self.since.setdefault(xid, batch_id)
        if record is None:
            self.stored.add(xid)
        else:
            self.nbytes += record_bytes(record)

    def add_end(self, end: TxnEnd, batch_id: int, *, stored: bool) -> None:
        self.ends[end.xid] = end
        bisect.insort(self.order, end_order(end))
        _insert(self.end_queues.setdefault((end.topic, end.partition), []), (end.offset, end.xid))
        self.since.setdefault(end.xid, batch_id)
        if stored:
            self.stored_ends.add(end.xid)

    def spill_contents(
        self,
        xids: set[str],
        new_events: Sequence[tuple[str, int | None, RecordLike]],
        new_ends: Sequence[TxnEnd],
        batch_id: int,
    ) -> tuple[list[tuple[str, int | None, RecordLike, int]], list[tuple[TxnEnd, int]]]:
        """What moving `xids` out writes: their events and ENDs kept in memory and those
        the batch holds, each with the batch since which its transaction waits."""
        events = [
            (x, e.place, e.record, self.since.get(x, batch_id))
            for x in sorted(xids)
            for e in self.events.get(x, ())
            if e.record is not None
        ]
        events += [(x, p, r, self.since.get(x, batch_id)) for x, p, r in new_events if x in xids]
        ends = [
            (self.ends[x], self.since.get(x, batch_id))
            for x in sorted(xids)
            if x in self.ends and x not in self.stored_ends
        ]
        ends += [(e, self.since.get(e.xid, batch_id)) for e in new_ends if e.xid in xids]
        return events, ends

    def _mark_stored(self, xid: str) -> None:
        stored = False
        for e in self.events.get(xid, ()):
            if e.record is not None:
                self.nbytes -= record_bytes(e.record)
                e.record = None
            stored = True
        if stored:
            self.stored.add(xid)
        if xid in self.ends:
            self.stored_ends.add(xid)

    def _drop(self, xid: str) -> None:
        for e in self.events.pop(xid, ()):
            if e.record is not None:
                self.nbytes -= record_bytes(e.record)
            if e.place is not None:
                self.places.discard((xid, e.place))
        self.ends.pop(xid, None)
        self.have.pop(xid, None)
        self.touches.pop(xid, None)
        self.since.pop(xid, None)
        self.stored.discard(xid)
        self.stored_ends.discard(xid)


def _insert(queue: list[tuple[int, str]], item: tuple[int, str]) -> None:
    """Append in offset order (records come in order; a record read again may not)."""
    if not queue or queue[-1] <= item:
        queue.append(item)
    else:
        bisect.insort(queue, item)


def counts_with(held: Held, batch: Mapping[str, Mapping[str, int]], xid: str) -> dict[str, int]:
    """Events per topic of `xid`, held and in the batch."""
    out = dict(held.have.get(xid, {}))
    for topic, n in batch.get(xid, {}).items():
        out[topic] = out.get(topic, 0) + n
    return out
