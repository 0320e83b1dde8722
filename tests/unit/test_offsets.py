"""Offsets stored with the state: save/load per group, and the stale-batch fence."""

from __future__ import annotations

from engine_helpers import memory_writer

from engine.core.positions import PartitionProgress
from engine.state import offsets


def _progress(topic: str, partition: int, first: int, nxt: int) -> PartitionProgress:
    return PartitionProgress(topic, partition, first, nxt, nxt - first)


def test_save_and_load_per_group() -> None:
    writer = memory_writer()
    with writer.store.transaction() as conn:
        offsets.save(conn, "g1", [_progress("a.b.c", 0, 0, 10), _progress("a.b.c", 1, 0, 4)])
        offsets.save(conn, "g2", [_progress("a.b.c", 0, 0, 2)])
        offsets.save(conn, "g1", [_progress("a.b.c", 0, 10, 15)])
    with writer.store.reading() as conn:
        assert offsets.load(conn, "g1") == {("a.b.c", 0): 15, ("a.b.c", 1): 4}
        assert offsets.load(conn, "g2") == {("a.b.c", 0): 2}
        assert offsets.load(conn, "nobody") == {}


def test_rolled_back_offsets_are_not_stored() -> None:
    writer = memory_writer()
    try:
        with writer.store.transaction() as conn:
            offsets.save(conn, "g", [_progress("a.b.c", 0, 0, 10)])
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert writer.stored_offsets() == {}


def test_stale_only_when_the_store_is_past_the_batch_start() -> None:
    stored = {("t", 0): 10, ("t", 1): 5}
    batch = [_progress("t", 0, 10, 20), _progress("t", 1, 3, 9), _progress("t", 2, 0, 1)]
    assert offsets.stale(stored, batch) == {("t", 1): 5}
    # A batch starting after the stored offset (records removed by retention) is not stale.
    assert offsets.stale(stored, [_progress("t", 0, 12, 13)]) == {}
