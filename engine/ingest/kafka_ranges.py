"""A replay's poller: reads the next batch from Kafka while the previous one folds.

kafka-python spends most of a poll parsing records in Python, decoding and
folding are mostly native (polars, DuckDB), so overlapping the two is what
`run` does too (engine/ingest/lane.py). Here the poller thread owns the
consumer from `start()` on; the folder takes batches with `next()`.

- The hand-over queue holds one batch: while it waits, the poller stops
  fetching, so memory stays at two batches whatever the history's size.
- Each batch says which partitions the poller saw reach their end offset; it
  pauses them and never hands on records at or past the end.
- The folder can `cut` a partition (its records passed the `--until` time): the
  poller pauses it at its next turn; records of it already fetched are the
  folder's to drop.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, TopicPartition

Key = tuple[str, int]


@dataclass(frozen=True)
class Fetched:
    records: list[Any]
    #: Partitions whose end offset the poller reached with this batch.
    finished: frozenset[Key]


class Fetcher:
    def __init__(
        self,
        consumer: KafkaConsumer,
        position: dict[Key, int],
        ends: dict[Key, int],
        *,
        max_wait_ms: int,
        max_records: int,
    ) -> None:
        self.consumer = consumer
        self.position = position
        #: Partitions still to read, with the offset to stop before.
        self.remaining = {k: end for k, end in ends.items() if position[k] < end}
        self.max_wait_ms = max_wait_ms
        self.max_records = max_records
        self._out: queue.Queue[Fetched | BaseException | None] = queue.Queue(maxsize=1)
        self._cuts: queue.SimpleQueue[Key] = queue.SimpleQueue()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="replay-fetch", daemon=True)

    def start(self) -> None:
        tps = [TopicPartition(*k) for k in self.position]
        self.consumer.assign(tps)
        for tp in tps:
            self.consumer.seek(tp, self.position[(tp.topic, tp.partition)])
        self.consumer.pause(*[tp for tp in tps if (tp.topic, tp.partition) not in self.remaining])
        self._thread.start()

    def next(self) -> Fetched | None:
        """The next batch; None once every partition is read (or the poller was halted)."""
        item = self._out.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def cut(self, key: Key) -> None:
        self._cuts.put(key)

    def close(self) -> None:
        """Stop polling and wait for the poller (it may be blocked handing a batch on)."""
        self._halt.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._out.get(timeout=0.1)
        self._thread.join()

    # -- the poller thread ----------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while not self._halt.is_set():
                self._apply_cuts()
                if not self.remaining:
                    break
                polled = self.consumer.poll(
                    timeout_ms=self.max_wait_ms, max_records=self.max_records
                )
                records = [
                    r
                    for batch in polled.values()
                    for r in batch
                    if (r.topic, r.partition) in self.remaining
                    and r.offset < self.remaining[(r.topic, r.partition)]
                ]
                finished = frozenset(
                    key
                    for key, end in self.remaining.items()
                    if self.consumer.position(TopicPartition(*key)) >= end
                )
                self._finish(finished)
                if records or finished:
                    self._hand_on(Fetched(records, finished))
        except BaseException as exc:  # handed to the folder, which raises it
            self._hand_on(exc)
        self._hand_on(None)

    def _apply_cuts(self) -> None:
        while True:
            try:
                key = self._cuts.get_nowait()
            except queue.Empty:
                return
            self._finish(frozenset({key}))

    def _finish(self, keys: frozenset[Key]) -> None:
        for key in keys:
            if self.remaining.pop(key, None) is not None:
                self.consumer.pause(TopicPartition(*key))

    def _hand_on(self, item: Fetched | BaseException | None) -> None:
        while not self._halt.is_set():
            try:
                self._out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
