"""SourceTimeAligner: records handed out up to the watermark, in offset order per partition."""

from __future__ import annotations

from dataclasses import dataclass

from engine.ingest.aligned import SourceTimeAligner


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None = None
    value: bytes | None = b"{}"


def recs(topic: str, partition: int, stamps: list[int], first: int = 0) -> list[Rec]:
    return [Rec(topic, partition, first + i, ts) for i, ts in enumerate(stamps)]


A = ("a", 0)
B = ("b", 0)


def test_records_ahead_of_the_slowest_partition_wait() -> None:
    al = SourceTimeAligner()
    al.add(recs("a", 0, [10, 20, 30, 40]))
    al.add(recs("b", 0, [15, 25]))
    out = al.take([A, B], 100)
    # The watermark is b's newest, 25: a's 30 and 40 wait.
    assert [(r.topic, r.offset) for r in out] == [("b", 0), ("b", 1), ("a", 0), ("a", 1)]
    assert al.waiting() == {A}
    assert len(al) == 2
    # b fetched further: a's waiting records come out, in offset order.
    al.add(recs("b", 0, [45], first=2))
    out = al.take([A, B], 100)
    assert [(r.topic, r.offset) for r in out] == [("a", 2), ("a", 3)]
    assert al.waiting() == {B}


def test_a_partition_not_fetched_from_holds_everything_back_unless_forced() -> None:
    al = SourceTimeAligner()
    al.add(recs("a", 0, [10, 20]))
    assert al.take([A, B], 100) == []
    assert al.waiting() == {A}
    forced = al.take([A, B], 100, force=True)
    assert [r.offset for r in forced] == [0, 1]
    assert not al.pending(A)


def test_a_partition_fetched_to_its_end_no_longer_holds_the_watermark() -> None:
    al = SourceTimeAligner()
    al.add(recs("a", 0, [10, 20, 90]))
    al.add(recs("b", 0, [15]))
    assert [r.offset for r in al.take([A, B], 100) if r.topic == "a"] == [0]
    # b has nothing more to fetch: only a is fetching, its own newest is the bound.
    out = al.take([A], 100)
    assert [(r.topic, r.offset) for r in out] == [("a", 1), ("a", 2)]
    assert len(al) == 0
    # Nothing fetching at all: no bound.
    al.add(recs("b", 0, [99], first=1))
    assert [r.offset for r in al.take([], 100)] == [1]


def test_max_records_and_drop() -> None:
    al = SourceTimeAligner()
    al.add(recs("a", 0, [1, 2, 3, 4, 5]))
    al.add(recs("b", 0, [1, 2, 3, 4, 5]))
    first = al.take([A, B], 3)
    assert len(first) == 3
    assert len(al) == 7
    al.drop([A])
    # a's front is forgotten: it holds the watermark back until fetched anew.
    assert al.take([A, B], 100) == []
    rest = al.take([B], 100)
    assert all(r.topic == "b" for r in rest)
    assert len(al) == 0


def test_releasable_counts_what_take_would_hand_out() -> None:
    al = SourceTimeAligner()
    al.add(recs("a", 0, [10, 20, 30, 40]))
    al.add(recs("b", 0, [15, 25]))
    # The watermark is 25: b's two and a's first two, 2 bytes each ("{}").
    assert al.releasable([A, B], 100, 1000) == (4, 8)
    # Counting stops at a bound.
    assert al.releasable([A, B], 3, 1000) == (3, 6)
    assert al.releasable([A, B], 100, 4) == (2, 4)
    assert len(al.take([A, B], 100)) == 4
    assert al.releasable([A, B], 100, 1000) == (0, 0)


def test_records_put_back_come_out_first_in_offset_order() -> None:
    al = SourceTimeAligner()
    al.add(recs("a", 0, [1, 2, 3, 4]))
    out = al.take([], 100)
    al.put_back(out[2:])
    assert [r.offset for r in al.take([], 100)] == [2, 3]
    al.add(recs("a", 0, [5, 6], first=4))
    al.put_back(out[:2])
    assert [r.offset for r in al.take([], 100)] == [0, 1, 4, 5]
    al.clear()
    assert len(al) == 0 and al.waiting() == set()
