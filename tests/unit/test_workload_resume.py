"""Resuming a plan after a lost connection, and reconnecting with backoff (no Postgres).

A fake server commits a prefix of each pipeline and keeps the progress marker the
way Postgres does (set in the same transaction as the rows): the writer must end
with every planned transaction committed exactly once, in plan order.
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, cast

import psycopg
import pytest

from engine.core.config import Settings
from engine.core.errors import WorkloadError
from engine.lab.workload.plan import EPOCH_US, INSERT, PgTxn, Statement
from engine.lab.workload.resume import Reconnector
from engine.lab.workload.writer import (
    MAX_BATCH,
    ConnectionLostError,
    Tally,
    Writer,
    connection_lost,
)


def _txn(n: int) -> PgTxn:
    st = Statement("INSERT", (n,), "s.t", INSERT, n)
    return PgTxn(f"t{n}", EPOCH_US + n, (st,))


class FakeServer:
    """What Postgres holds: committed transactions, and the marker (their count)."""

    def __init__(self) -> None:
        self.committed: list[PgTxn] = []
        #: Per pipeline sent: how many of its transactions commit before the link breaks
        #: (None: all of them, and the pipeline is acknowledged).
        self.breaks: list[int | None] = []
        #: Per reconnect: acknowledged transactions the server lost (crash, async commit).
        self.lose: list[int] = []

    @property
    def marker(self) -> int:
        return len(self.committed)


class FakeConn:
    closed = False

    def close(self) -> None:
        self.closed = True


class FakeResumer:
    run_id = 7

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.calls: list[int] = []

    def reconnect(self, cause: BaseException, steps: int) -> tuple[psycopg.Connection, int]:
        self.calls.append(steps)
        lost = self.server.lose.pop(0) if self.server.lose else 0
        if lost:
            del self.server.committed[-lost:]
        return cast(psycopg.Connection, FakeConn()), self.server.marker


class PipelineWriter(Writer):
    """Sends to a FakeServer; checks the step numbers the markers would carry."""

    def __init__(self, server: FakeServer, resumer: FakeResumer | None = None) -> None:
        super().__init__(cast(psycopg.Connection, FakeConn()), resumer=resumer)
        self.server = server

    def _send(self, batch: list[PgTxn]) -> None:
        # The first transaction's marker is the step after the acknowledged ones, and
        # the server's marker is where the writer believes it is.
        assert self.step == self.server.marker
        brk = self.server.breaks.pop(0) if self.server.breaks else None
        n = len(batch) if brk is None else min(brk, len(batch))
        self.server.committed.extend(batch[:n])
        if brk is not None:
            raise ConnectionLostError(psycopg.OperationalError("server closed the connection"))


PLAN = [_txn(n) for n in range(1, 1001)]


def _write(writer: Writer, plan: list[PgTxn] = PLAN) -> Tally:
    tally = Tally()
    writer.write_all(iter(plan), tally, stop=threading.Event())
    return tally


@pytest.mark.parametrize(
    "breaks",
    [
        [None, 57],  # the second pipeline breaks after 57 of its transactions committed
        [0],  # nothing of the first pipeline committed
        [None, MAX_BATCH],  # all of it committed, but the acknowledgement was lost
        [3, 0, 1, None, 199, 50],  # several losses, some right after a reconnect
    ],
)
def test_after_a_lost_connection_every_step_is_committed_once_in_order(
    breaks: list[int | None],
) -> None:
    server = FakeServer()
    server.breaks = list(breaks)
    resumer = FakeResumer(server)
    writer = PipelineWriter(server, resumer)
    tally = _write(writer)
    assert server.committed == PLAN
    assert writer.step == len(PLAN)
    assert writer.reconnects == sum(1 for b in breaks if b is not None)
    # Counted once each, as if nothing had happened.
    assert (tally.txns, tally.events) == (len(PLAN), len(PLAN))


def test_acknowledged_transactions_a_crash_lost_are_written_again() -> None:
    server = FakeServer()
    server.breaks = [None, None, 10]
    server.lose = [150]  # async commit: acknowledged, then lost in the crash
    writer = PipelineWriter(server, FakeResumer(server))
    _write(writer)
    assert server.committed == PLAN


def test_losing_more_than_is_kept_for_replay_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("engine.lab.workload.writer.REPLAY_TXNS", 100)
    server = FakeServer()
    server.breaks = [None, None, 10]
    server.lose = [300]
    writer = PipelineWriter(server, FakeResumer(server))
    with pytest.raises(WorkloadError, match=r"lost 290 planned transactions it had acknowledged"):
        _write(writer)


def test_a_marker_ahead_of_what_was_sent_stops_the_run() -> None:
    server = FakeServer()
    server.breaks = [5]

    class Ahead(FakeResumer):
        def reconnect(self, cause: BaseException, steps: int) -> tuple[psycopg.Connection, int]:
            conn, _ = super().reconnect(cause, steps)
            return conn, 10_000

    with pytest.raises(WorkloadError, match="another program updates run_id 7"):
        _write(PipelineWriter(server, Ahead(server)))


def test_without_a_resumer_a_lost_connection_is_a_workload_error() -> None:
    server = FakeServer()
    server.breaks = [5]
    with pytest.raises(WorkloadError, match="lost the connection to Postgres"):
        _write(PipelineWriter(server))


def test_an_outage_does_not_count_as_falling_behind() -> None:
    clock = [0.0]

    class Slow(PipelineWriter):
        def _send(self, batch: list[PgTxn]) -> None:
            super()._send(batch)
            clock[0] += 0.001

    server = FakeServer()
    server.breaks = [None, None, 4]

    class Waits(FakeResumer):
        def reconnect(self, cause: BaseException, steps: int) -> tuple[psycopg.Connection, int]:
            clock[0] += 30.0  # Postgres was down for 30 s
            return super().reconnect(cause, steps)

    writer = Slow(server, Waits(server))
    writer.clock = lambda: clock[0]

    def sleep(s: float) -> None:
        clock[0] += s

    writer.sleep = sleep
    tally = Tally()
    writer.write_paced(
        iter(PLAN),
        tally,
        rate=100.0,
        max_events=600,
        max_seconds=None,
        stop=threading.Event(),
    )
    assert server.committed == PLAN[:600]
    assert writer.outage_s == pytest.approx(30.0)
    assert tally.fell_behind == 0
    assert clock[0] == pytest.approx(6.0 + 30.0, abs=0.2)


# -- telling a lost link from a failed statement -------------------------------------------


class _Conn:
    def __init__(self, broken: bool) -> None:
        self.broken = broken
        self.closed = False


def test_connection_lost_tells_a_broken_link_from_a_failed_statement() -> None:
    op = psycopg.OperationalError("could not serialize access due to concurrent update")
    assert connection_lost(cast(psycopg.Connection, _Conn(broken=True)), op)
    assert not connection_lost(cast(psycopg.Connection, _Conn(broken=False)), op)
    # libpq's words for a server gone mid-pipeline, before psycopg marks the link broken
    # (seen when Postgres restarted under the generator).
    gone = psycopg.OperationalError(
        "consuming input failed: cannot exit pipeline mode while busy\n"
        "server closed the connection unexpectedly"
    )
    assert connection_lost(cast(psycopg.Connection, _Conn(broken=False)), gone)
    dup = psycopg.errors.UniqueViolation("duplicate key")
    assert not connection_lost(cast(psycopg.Connection, _Conn(broken=True)), dup)
    shutdown = psycopg.errors.AdminShutdown("terminating connection")
    assert connection_lost(cast(psycopg.Connection, _Conn(broken=False)), shutdown)
    # A fast shutdown mid-pipeline (seen in CI): the AdminShutdown raised in the pipeline,
    # then "cannot exit pipeline mode while busy" raised while leaving it.
    try:
        try:
            raise psycopg.errors.AdminShutdown("terminating connection due to administrator")
        except psycopg.Error:
            raise psycopg.OperationalError("cannot exit pipeline mode while busy") from None
    except psycopg.OperationalError as leaving:
        assert leaving.__context__ is not None
        assert connection_lost(cast(psycopg.Connection, _Conn(broken=False)), leaving)
    busy = psycopg.OperationalError("cannot exit pipeline mode while busy")
    assert not connection_lost(cast(psycopg.Connection, _Conn(broken=False)), busy)


# -- reconnecting ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        return False


class MarkerConn:
    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.closed = False

    def execute(self, query: str, params: Any = None) -> MarkerConn:
        return self

    def fetchone(self) -> tuple[int]:
        return (self.steps,)

    def close(self) -> None:
        self.closed = True


def _settings() -> Settings:
    return Settings.from_env({}, pg_host="127.0.0.1", pg_port=5999)


def test_reconnect_backs_off_logging_each_attempt_with_the_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    attempts = []

    def connect() -> psycopg.Connection:
        attempts.append(clock.now)
        if len(attempts) < 5:
            raise psycopg.OperationalError("connection refused")
        return cast(psycopg.Connection, MarkerConn(412))

    r = Reconnector(_settings(), 3, timeout_s=120, clock=clock, wait=clock.wait, connect=connect)
    with caplog.at_level(logging.WARNING, logger="engine.lab.workload.resume"):
        conn, steps = r.reconnect(psycopg.OperationalError("lost"), 400)
    assert steps == 412 and isinstance(conn, MarkerConn)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps == [0.25, 0.5, 1.0, 2.0]
    failed = [r.getMessage() for r in caplog.records if "attempt" in r.getMessage()]
    assert len(failed) == 5  # four failures and the success
    assert all("127.0.0.1:5999" in m for m in failed)
    assert "resuming at step 413" in failed[-1]


def test_reconnect_gives_up_after_the_deadline_with_a_clear_message() -> None:
    clock = Clock()

    def connect() -> psycopg.Connection:
        clock.now += 0.1
        raise psycopg.OperationalError("connection refused")

    r = Reconnector(_settings(), 3, timeout_s=30, clock=clock, wait=clock.wait, connect=connect)
    with pytest.raises(WorkloadError) as err:
        r.reconnect(psycopg.OperationalError("lost"), 1234)
    text = str(err.value)
    assert "Postgres at 127.0.0.1:5999 did not come back within 30 s" in text
    assert "1,234 planned transactions were committed" in text
    assert "--reconnect-timeout" in text
    assert 30 <= clock.now <= 31


def test_reconnect_timeout_0_stops_at_once_and_ctrl_c_stops_the_waiting() -> None:
    def never() -> psycopg.Connection:
        raise AssertionError("must not connect")

    off = Reconnector(_settings(), 3, timeout_s=0, connect=never)
    with pytest.raises(WorkloadError, match=r"Reconnecting is off \(--reconnect-timeout 0\)"):
        off.reconnect(psycopg.OperationalError("lost"), 5)

    def refused() -> psycopg.Connection:
        raise psycopg.OperationalError("connection refused")

    stopped = Reconnector(_settings(), 3, timeout_s=60, wait=lambda s: True, connect=refused)
    waiting = r"stopped while waiting for Postgres at 127\.0\.0\.1:5999"
    with pytest.raises(WorkloadError, match=waiting):
        stopped.reconnect(psycopg.OperationalError("lost"), 5)
