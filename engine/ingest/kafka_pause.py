"""Pausing partitions of a kafka-python consumer without starving them.

kafka-python 3.0 parks the parsed records of a partition that is paused while they
are next in line, and gives them back after a resume only while its in-line slot is
empty (`None`). A slot whose records were all taken is not set back to `None` but
left as a drained object, so parked records never come back and, since a partition
with parked records is not fetched either, the partition is never read again
(seen as a replay that stopped with every partition resumed and none fetched).
`poll` clears a drained slot before each poll: a drained slot and `None` mean the
same to the fetcher everywhere else.
"""

from __future__ import annotations

from typing import Any


def poll(consumer: Any, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
    """consumer.poll, after giving back parked records of resumed partitions (a
    kafka-python KafkaConsumer's; any other reader's poll as it is)."""
    fetcher = getattr(consumer, "_fetcher", None)
    slot = getattr(fetcher, "_next_partition_records", None)
    if slot is not None and not slot:
        fetcher._next_partition_records = None  # type: ignore[union-attr]
    polled: dict[Any, list[Any]] = consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
    return polled
