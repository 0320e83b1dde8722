"""Partitions handed out together in source time: a buffer between a consumer and its batches.

A Kafka consumer fetches each partition in chunks (up to its fetch size: thousands
of records, often tens of seconds of source time), one partition's chunk at a time.
Read that way while a backlog is read (a replay, an engine catching up), a batch
holds the events of one topic from a stretch of time whose transaction ENDs (on
`<prefix>.transaction`) or other legs (other topics) have not been read yet, and the
fold holds them for their transactions, batch after batch: that holding is most of
the cost of whole transactions on a backlog.

`SourceTimeAligner` keeps what was fetched and hands out, per partition in offset
order, only the records up to the *watermark*: the earliest of the newest record
timestamps of the partitions still being fetched (Kafka's record timestamp: when
Connect wrote the change; one connector writes in commit order). A partition whose
records wait past the watermark is to be paused, so that the partitions behind it
are fetched next; the partition that sets the watermark never waits, so reading
moves on. A partition fetched to its end no longer holds the watermark back.

It changes which records a batch holds, never what the state becomes (the state is
a function of the history whatever the batch cuts), and positions stay those of the
records handed out: a record still in the buffer was not handed out, so after a
crash it is read again. When the watermark holds everything back (a partition not
fetched from yet), `take(..., force=True)` hands out the earliest records anyway, so
alignment can slow nothing down to a stop. Memory: about one fetch per partition.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from engine.decode.records import RecordLike
from engine.ingest.source import Key


def _timestamp(record: RecordLike) -> int:
    """A record's Kafka timestamp (ms); 0 for records that carry none."""
    ts = getattr(record, "timestamp", None)
    return ts if isinstance(ts, int) else 0


class SourceTimeAligner:
    """A buffer of fetched records, handed out up to the watermark (see the module)."""

    def __init__(self) -> None:
        self._buffers: dict[Key, deque[RecordLike]] = {}
        #: Newest timestamp fetched per partition (absent: nothing fetched since the
        #: partition was assigned or moved).
        self._front: dict[Key, int] = {}

    def __len__(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def add(self, records: Iterable[RecordLike]) -> None:
        """Records fetched, in offset order per partition."""
        for r in records:
            key = (r.topic, r.partition)
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = deque()
            buf.append(r)
            ts = _timestamp(r)
            if ts > self._front.get(key, -1):
                self._front[key] = ts

    def watermark(self, fetching: Iterable[Key]) -> int | None:
        """The watermark over the partitions still being fetched; None: no bound (none
        is). A partition not fetched from yet holds everything back (its first records
        may be the earliest)."""
        fronts = [self._front.get(k, -1) for k in fetching]
        return min(fronts) if fronts else None

    def take(
        self, fetching: Iterable[Key], max_records: int, *, force: bool = False
    ) -> list[RecordLike]:
        """Up to `max_records` records at or before the watermark over `fetching`, in
        offset order per partition, the partitions furthest behind first. `force`: when
        the watermark lets nothing out, the earliest records anyway."""
        mark = self.watermark(fetching)
        out = self._take(mark, max_records)
        if not out and force and self._buffers:
            out = self._take(None, max_records)
        return out

    def _take(self, mark: int | None, max_records: int) -> list[RecordLike]:
        out: list[RecordLike] = []
        for key in sorted(self._buffers, key=lambda k: self._front.get(k, -1)):
            buf = self._buffers[key]
            while buf and len(out) < max_records and (mark is None or _timestamp(buf[0]) <= mark):
                out.append(buf.popleft())
            if not buf:
                del self._buffers[key]
            if len(out) >= max_records:
                break
        return out

    def releasable(
        self, fetching: Iterable[Key], max_records: int, max_bytes: int
    ) -> tuple[int, int]:
        """How many records `take` would hand out now, and their bytes, counted up to
        `max_records` records or `max_bytes` bytes."""
        mark = self.watermark(fetching)
        count = size = 0
        for buf in self._buffers.values():
            for r in buf:
                if mark is not None and _timestamp(r) > mark:
                    break
                count += 1
                size += len(r.value or b"") + len(r.key or b"")
                if count >= max_records or size >= max_bytes:
                    return count, size
        return count, size

    def put_back(self, records: Iterable[RecordLike]) -> None:
        """Records taken but not used (past a batch's byte bound): first out next time."""
        per_key: dict[Key, list[RecordLike]] = {}
        for r in records:
            per_key.setdefault((r.topic, r.partition), []).append(r)
        for key, recs in per_key.items():
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = deque()
            buf.extendleft(reversed(recs))

    def clear(self) -> None:
        """Forget everything (the partitions moved to other members)."""
        self._buffers.clear()
        self._front.clear()

    def waiting(self) -> set[Key]:
        """Partitions with records waiting here (ahead of the watermark): to be paused."""
        return set(self._buffers)

    def drop(self, keys: Iterable[Key]) -> None:
        """Forget these partitions' records (moved, finished); they hold the watermark
        back again until fetched from anew."""
        for key in keys:
            self._buffers.pop(key, None)
            self._front.pop(key, None)

    def pending(self, key: Key) -> bool:
        """Whether records of this partition wait here."""
        return key in self._buffers
