"""The index of what waits for its source transaction (engine/state/held.py)."""

from __future__ import annotations

from engine.decode.records import RawRecord
from engine.decode.txmeta import TxnEnd
from engine.state.held import Held, record_bytes

TXN = "p.transaction"


def _rec(topic: str, partition: int, offset: int, size: int = 100) -> RawRecord:
    return RawRecord(topic, partition, offset, b"k", b"v" * size)


def _end(xid: str, offset: int) -> TxnEnd:
    return TxnEnd(xid, 1000 + offset, 0, (("t", 1),), TXN, 0, offset)


def _held() -> Held:
    held = Held()
    held.commit(
        applied=(),
        spilled=set(),
        new_events=[
            ("a", 1, _rec("t", 0, 7)),
            ("a", 2, _rec("t", 1, 3)),
            ("b", 1, _rec("t", 0, 5)),
        ],
        new_ends=[_end("a", 9)],
        batch_id=1,
    )
    return held


def test_marks_are_the_first_record_kept_in_memory_of_each_partition() -> None:
    held = _held()
    keys = [("t", 0), ("t", 1), (TXN, 0)]
    nothing: dict = {"applied": set(), "spilled": set(), "new_events": (), "new_ends": ()}
    assert held.marks_after(keys, **nothing) == {("t", 0): 5, ("t", 1): 3, (TXN, 0): 9}
    assert held.places == {("a", 1), ("a", 2), ("b", 1)} and len(held) == 3
    # Once b is applied partition 0 may resume at a's event; moved to the state file,
    # a no longer holds anything back.
    after_b = {**nothing, "applied": {"b"}}
    assert held.marks_after(keys, **after_b) == {("t", 0): 7, ("t", 1): 3, (TXN, 0): 9}
    assert held.marks_after(keys, **{**after_b, "spilled": {"a"}}) == {}
    # A batch's own new holds count too.
    new = {**nothing, "new_events": [("c", 1, _rec("t", 1, 1))], "new_ends": [_end("c", 2)]}
    assert held.marks_after(keys, **new) == {("t", 0): 5, ("t", 1): 1, (TXN, 0): 2}


def test_commit_drops_what_was_applied_and_marks_what_moved_out() -> None:
    held = _held()
    before = held.nbytes
    held.commit(applied=["b"], spilled={"a"}, new_events=(), new_ends=(), batch_id=2)
    assert set(held.events) == {"a"} and held.nbytes == 0 < before
    assert held.stored == {"a"} and held.stored_ends == {"a"}
    assert held.records(["a"]) == [], "records moved out are read from the state file"
    assert held.queues == {("t", 0): [(7, "a")], ("t", 1): [(3, "a")]}
    held.commit(applied=["a"], spilled=set(), new_events=(), new_ends=(), batch_id=3)
    assert not held.events and not held.ends and not held.order and not held.queues
    assert not held.places and not held.stored and not held.since


def test_events_of_one_transaction_across_batches_add_up_and_keep_their_first_batch() -> None:
    held = Held()
    held.commit(
        applied=(), spilled=set(), new_events=[("a", 1, _rec("t", 0, 1))], new_ends=(), batch_id=4
    )
    held.commit(
        applied=(), spilled=set(), new_events=[("a", 2, _rec("t", 1, 1))], new_ends=(), batch_id=9
    )
    assert len(held.events["a"]) == 2 and held.since == {"a": 4}
    assert held.have == {"a": {"t": 2}}
    assert held.stuck(before_batch=5) == [("a", 2, "t[0]@1")]
    assert held.stuck(before_batch=4) == []


def test_spill_takes_old_transactions_then_the_oldest_until_half_the_bound() -> None:
    held = Held()
    for batch, xid in enumerate("abcdef", start=1):
        new = [(xid, 1, _rec("t", 0, batch, size=1000))]
        held.commit(applied=(), spilled=set(), new_events=new, new_ends=(), batch_id=batch)
    each = record_bytes(_rec("t", 0, 0, size=1000))
    assert held.nbytes == 6 * each

    def spill(max_bytes: int, max_batches: int = 100, applied: frozenset = frozenset()) -> set:
        return held.to_spill(
            applied=set(applied),
            new_events=(),
            batch_id=7,
            max_bytes=max_bytes,
            max_batches=max_batches,
        )

    # Within the bound, nothing moves unless it waited too long.
    assert spill(10 * each) == set()
    assert spill(10 * each, max_batches=5) == {"a", "b"}
    # Past the bound: the oldest go until what stays is within half of it; what the
    # batch applies does not count.
    assert spill(5 * each) == {"a", "b", "c", "d"}
    assert spill(5 * each, applied=frozenset("a")) == set()
    assert spill(4 * each, applied=frozenset("a")) == {"b", "c", "d"}
    # No memory: everything kept in memory goes.
    assert spill(0) == set("abcdef")
    events, ends = held.spill_contents({"a", "b"}, [("g", None, _rec("t", 1, 0))], (), 7)
    assert [(x, b) for x, _p, _r, b in events] == [("a", 1), ("b", 2)] and ends == []
