"""Dead letters applied again after a fix (`changefold dlq --redrive`).

A dead letter is a change event the engine could not decode or apply; its partition
moved on past it. After a fix (a changefold that now reads it, a mirror the user
repaired), a redrive decodes each selected dead letter again with the current
decoder and folds the ones it now reads as one batch through the writer's usual path
(mirrors, schema versions, derived views), without moving any partition's position.
The ones that fail again come back as new dead letters with today's reason; the
redriven ones leave the table in the same DuckDB transaction.

The history decides what may be applied. Kafka keeps a key's changes in one
partition, in order; when a later change of the same key in that partition was
folded after the dead letter, the dead letter is *superseded*: applying it would put
an old row over a newer one, so it is removed without being applied (the state is
then what a replay of the history would give). To know, the partition is read from
the dead letter on up to the state's position for it (`Reader`: Kafka for the
command, memory in tests). A later record that is itself a dead letter changed
nothing and supersedes nothing. Records of a transaction topic are not redriven
(their transaction was applied without them or is still held), nor are tombstones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from engine.decode import txmeta
from engine.decode.records import DecodedBatch, RawRecord, RecordLike
from engine.state.deadletters import StoredDeadLetter

#: A partition: (topic, partition number).
Key = tuple[str, int]
#: Reads the records of [start, end) of each partition given.
Reader = Callable[[Mapping[Key, tuple[int, int]]], Iterable[RecordLike]]


@dataclass(frozen=True)
class RedrivePlan:
    """What a redrive does with each selected dead letter."""

    #: To decode and fold again, in offset order per partition.
    apply: list[StoredDeadLetter]
    #: A later change of the same key was folded: removed, not applied.
    superseded: list[StoredDeadLetter]
    #: Left as they are, with why (transaction records, tombstones).
    skipped: list[tuple[StoredDeadLetter, str]]

    @property
    def settled(self) -> list[int]:
        """Ids of the dead letters this redrive takes out of the table."""
        return [d.id for d in (*self.apply, *self.superseded)]


def ranges_to_read(
    letters: Sequence[StoredDeadLetter], positions: Mapping[Key, int]
) -> dict[Key, tuple[int, int]]:
    """Per partition of the keyed dead letters: from the first one's next offset up to
    the state's position for the partition (what was folded after it)."""
    ranges: dict[Key, tuple[int, int]] = {}
    for d in letters:
        if d.key is None:
            continue
        key = (d.topic, d.partition)
        start = min(d.offset + 1, ranges.get(key, (d.offset + 1, 0))[0])
        end = positions.get(key, 0)
        if end > start:
            ranges[key] = (start, end)
    return ranges


def last_changes(
    records: Iterable[RecordLike], dead: set[tuple[str, int, int]]
) -> dict[tuple[str, int, bytes], int]:
    """The offset of the last folded change per (topic, partition, message key); records
    that are dead letters themselves (`dead`: topic, partition, offset) changed nothing."""
    last: dict[tuple[str, int, bytes], int] = {}
    for r in records:
        if r.key is None or (r.topic, r.partition, r.offset) in dead:
            continue
        at = (r.topic, r.partition, r.key)
        if r.offset > last.get(at, -1):
            last[at] = r.offset
    return last


def sort_out(
    letters: Sequence[StoredDeadLetter], last: Mapping[tuple[str, int, bytes], int]
) -> RedrivePlan:
    """Split the selected dead letters into applied, superseded and skipped (see the
    module docstring)."""
    apply: list[StoredDeadLetter] = []
    superseded: list[StoredDeadLetter] = []
    skipped: list[tuple[StoredDeadLetter, str]] = []
    for d in sorted(letters, key=lambda d: (d.topic, d.partition, d.offset)):
        if txmeta.is_transaction_topic(d.topic):
            skipped.append((d, "a transaction record: not redriven"))
        elif d.value is None:
            skipped.append((d, "a tombstone: nothing to apply"))
        elif d.key is not None and last.get((d.topic, d.partition, d.key), -1) > d.offset:
            superseded.append(d)
        else:
            apply.append(d)
    return RedrivePlan(apply, superseded, skipped)


def plan(
    letters: Sequence[StoredDeadLetter],
    positions: Mapping[Key, int],
    dead: set[tuple[str, int, int]],
    read: Reader,
) -> RedrivePlan:
    """Sort out `letters` against the history read after them (`read`), up to the
    state's `positions`; `dead` is every dead letter's (topic, partition, offset)."""
    ranges = ranges_to_read(letters, positions)
    last = last_changes(read(ranges), dead) if ranges else {}
    return sort_out(letters, last)


def records(letters: Sequence[StoredDeadLetter]) -> list[RawRecord]:
    """The dead letters as the records they were, to decode again."""
    return [RawRecord(d.topic, d.partition, d.offset, d.key, d.value) for d in letters]


@dataclass(frozen=True)
class RedriveResult:
    plan: RedrivePlan
    #: Of `plan.apply`: how many were folded, and how many failed again (new dead letters).
    applied: int
    failed_again: int
    batch_id: int | None


def redrive(
    plan_: RedrivePlan,
    decode: Callable[[Sequence[RecordLike]], DecodedBatch],
    write: Callable[[DecodedBatch, Sequence[int]], tuple[int, int]],
) -> RedriveResult:
    """Decode the dead letters to apply and fold them (`write(batch, settled ids)` returns
    the batch id and the dead letters it wrote again); nothing to write: no batch."""
    if not plan_.settled:
        return RedriveResult(plan_, 0, 0, None)
    batch = decode(records(plan_.apply))
    batch_id, failed = write(batch, plan_.settled)
    return RedriveResult(plan_, len(plan_.apply) - failed, failed, batch_id)
