"""The poller-to-folder hand-over (engine.ingest.handover): one waiting batch, merged
polls within the limits, redeliveries and other seek epochs never merged."""

from __future__ import annotations

import threading

from engine.decode.records import RawRecord
from engine.ingest.handover import Handover, MergeLimits, merged
from engine.ingest.source import Polled

WAIT_S = 5.0


def poll(partition: int, first: int, count: int, size: int = 10) -> Polled:
    records = [
        RawRecord("t", partition, offset, None, b"x" * size)
        for offset in range(first, first + count)
    ]
    return Polled(records, {("t", partition): first + count + 100})


def offsets(polled: Polled) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in polled.records]


def put_in_thread(handover: Handover, epoch: int, polled: Polled) -> threading.Thread:
    thread = threading.Thread(target=handover.put, args=(epoch, polled), daemon=True)
    thread.start()
    return thread


def test_polls_merge_into_the_waiting_batch_in_order() -> None:
    handover = Handover(MergeLimits(max_records=10, max_bytes=1000))
    handover.put(0, poll(0, 0, 3))
    handover.put(0, poll(1, 0, 2))
    handover.put(0, poll(0, 3, 2))
    assert handover.merges == 2
    item = handover.get()
    assert item is not None
    epoch, batch = item
    assert epoch == 0
    assert offsets(batch) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (0, 3), (0, 4)]
    assert batch.ends == {("t", 0): 105, ("t", 1): 102}
    assert not handover.idle
    handover.task_done()
    assert handover.idle


def test_a_poll_past_the_record_limit_waits_for_the_folder() -> None:
    handover = Handover(MergeLimits(max_records=5, max_bytes=1000))
    handover.put(0, poll(0, 0, 3))
    blocked = put_in_thread(handover, 0, poll(0, 3, 3))
    blocked.join(0.2)
    assert blocked.is_alive()  # 3 + 3 > 5
    first = handover.get()
    blocked.join(WAIT_S)
    assert not blocked.is_alive()
    second = handover.get()
    assert first is not None and second is not None
    assert offsets(first[1]) == [(0, 0), (0, 1), (0, 2)]
    assert offsets(second[1]) == [(0, 3), (0, 4), (0, 5)]


def test_a_poll_past_the_byte_limit_waits_for_the_folder() -> None:
    handover = Handover(MergeLimits(max_records=100, max_bytes=50))
    handover.put(0, poll(0, 0, 3, size=10))
    handover.put(0, poll(0, 3, 2, size=10))  # 50 bytes: fits
    blocked = put_in_thread(handover, 0, poll(0, 5, 1, size=10))
    blocked.join(0.2)
    assert blocked.is_alive()
    item = handover.get()
    assert item is not None and len(item[1].records) == 5
    blocked.join(WAIT_S)
    assert not blocked.is_alive()


def test_a_redelivery_or_another_epoch_is_never_merged() -> None:
    limits = MergeLimits(max_records=100, max_bytes=10_000)
    for epoch, later in [(0, poll(0, 2, 3)), (1, poll(0, 3, 3))]:
        handover = Handover(limits)
        handover.put(0, poll(0, 0, 3))
        blocked = put_in_thread(handover, epoch, later)
        blocked.join(0.2)
        assert blocked.is_alive(), (epoch, offsets(later))
        first = handover.get()
        blocked.join(WAIT_S)
        second = handover.get()
        assert first is not None and second is not None
        assert len(first[1].records) == 3
        assert second == (epoch, later)
        assert handover.merges == 0


def test_without_limits_every_poll_is_handed_over_as_polled() -> None:
    handover = Handover()
    handover.put(0, poll(0, 0, 1))
    blocked = put_in_thread(handover, 0, poll(0, 1, 1))
    blocked.join(0.2)
    assert blocked.is_alive()
    handover.get()
    blocked.join(WAIT_S)
    assert not blocked.is_alive()


def test_close_hands_out_the_waiting_batch_then_none() -> None:
    handover = Handover(MergeLimits(max_records=10, max_bytes=1000))
    handover.put(0, poll(0, 0, 2))
    handover.close()
    item = handover.get()
    assert item is not None and len(item[1].records) == 2
    assert handover.get() is None


def test_join_waits_for_every_batch_to_be_folded() -> None:
    handover = Handover(MergeLimits(max_records=10, max_bytes=1000))
    handover.put(0, poll(0, 0, 2))
    joined = threading.Thread(target=handover.join, daemon=True)
    joined.start()
    handover.get()
    joined.join(0.2)
    assert joined.is_alive()  # taken, not yet folded
    handover.task_done()
    joined.join(WAIT_S)
    assert not joined.is_alive()


def test_merged_keeps_known_end_offsets() -> None:
    first = Polled(poll(0, 0, 1).records, {("t", 0): 7})
    later = Polled(poll(0, 1, 1).records, {("t", 0): None})
    assert merged(first, later).ends == {("t", 0): 7}
