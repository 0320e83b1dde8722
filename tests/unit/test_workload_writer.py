"""Pacing of the workload writer, on a fake clock (no Postgres, no real sleeping)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from engine.lab.workload.plan import INSERT, PgTxn, Statement
from engine.lab.workload.writer import MAX_BACKLOG_S, MAX_BATCH, Tally, Writer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds


class RecordingWriter(Writer):
    """Records (time, events per transaction) of every batch; a batch costs `cost` seconds."""

    def __init__(self, clock: FakeClock, cost: float = 0.0) -> None:
        super().__init__(None, clock=clock, sleep=clock.sleep)
        self.fake = clock
        self.cost = cost
        self.batches: list[tuple[float, list[int]]] = []
        self.stall_at: int | None = None

    def _send(self, batch: list[PgTxn]) -> None:
        self.batches.append((self.fake.now, [t.events for t in batch]))
        self.fake.now += self.cost
        if self.stall_at is not None and len(self.batches) == self.stall_at:
            self.fake.now += 3.0


def _txns(events_each: int, captured: bool = True) -> Iterator[PgTxn]:
    n = 0
    while True:
        stmts = tuple(
            Statement("INSERT", (n, i), "s.t", INSERT, (n, i), captured) for i in range(events_each)
        )
        yield PgTxn("t", n, stmts)
        n += 1


def _starts(writer: RecordingWriter) -> list[tuple[float, int]]:
    """(time sent, first event number) of every transaction."""
    out, first = [], 0
    for at, sizes in writer.batches:
        for size in sizes:
            out.append((at, first))
            first += size
    return out


def test_each_transaction_is_sent_when_its_first_event_is_due() -> None:
    clock = FakeClock()
    writer = RecordingWriter(clock)
    tally = Tally()
    writer.write_paced(
        _txns(2), tally, rate=100.0, max_events=101, max_seconds=None, stop=threading.Event()
    )
    starts = _starts(writer)
    # The run ends with the transaction that starts before event 101: 51 txns, 102 events.
    assert len(starts) == 51
    assert tally.events == 102 and tally.txns == 51
    for at, first in starts:
        assert at == pytest.approx(first / 100.0)


def test_slow_writes_do_not_add_up_to_drift() -> None:
    clock = FakeClock()
    writer = RecordingWriter(clock, cost=0.004)  # 4 ms per round trip, 1 ms per event due
    tally = Tally()
    writer.write_paced(
        _txns(1), tally, rate=1000.0, max_events=5000, max_seconds=None, stop=threading.Event()
    )
    assert tally.events == 5000
    # Due transactions are grouped into one round trip, so the run takes 5 s, not 20 s.
    assert tally.seconds == pytest.approx(5.0, abs=0.01)
    assert tally.rate == pytest.approx(1000.0, rel=0.01)
    assert max(len(sizes) for _, sizes in writer.batches) > 1
    assert tally.fell_behind == 0


def test_a_stall_moves_the_schedule_instead_of_bursting() -> None:
    clock = FakeClock()
    writer = RecordingWriter(clock)
    writer.stall_at = 10  # the 10th batch takes 3 s
    tally = Tally()
    writer.write_paced(
        _txns(1), tally, rate=100.0, max_events=1000, max_seconds=None, stop=threading.Event()
    )
    assert tally.fell_behind == 1
    after = writer.batches[10][1]
    assert sum(after) <= 100.0 * MAX_BACKLOG_S + 1
    assert tally.events == 1000


def test_stop_ends_the_run_after_the_batch_in_hand() -> None:
    clock = FakeClock()
    stop = threading.Event()
    writer = RecordingWriter(clock)
    calls: list[int] = []

    def progress(t: Tally) -> None:
        calls.append(t.events)
        if t.events >= 30:
            stop.set()

    tally = Tally()
    writer.write_paced(
        _txns(3), tally, rate=50.0, max_events=None, max_seconds=None, stop=stop, progress=progress
    )
    assert tally.events == 30
    assert calls[-1] == 30


def test_unpaced_runs_fill_batches_until_the_wall_clock_deadline() -> None:
    clock = FakeClock()
    writer = RecordingWriter(clock, cost=0.01)
    tally = Tally()
    writer.write_paced(
        _txns(2), tally, rate=None, max_events=None, max_seconds=1.0, stop=threading.Event()
    )
    assert len(writer.batches) == 100
    assert all(len(sizes) == MAX_BATCH for _, sizes in writer.batches)


def test_statements_on_uncaptured_tables_are_not_events() -> None:
    clock = FakeClock()
    writer = RecordingWriter(clock)
    tally = Tally()
    txns = iter([PgTxn("x", 0, (*next(_txns(2)).statements, *next(_txns(1, False)).statements))])
    writer.write_all(txns, tally, stop=threading.Event())
    assert (tally.events, tally.rows, tally.txns) == (2, 3, 1)
    assert tally.changes == {("s.t", INSERT): 2}
