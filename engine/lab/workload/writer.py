"""Executes planned Postgres transactions through psycopg, paced to a target rate.

Pacing follows an absolute schedule: the transaction that starts with event number
n is due at t0 + n / rate. Whatever is due is sent as one pipeline (each planned
transaction still between its own BEGIN and COMMIT), then the writer sleeps until
the next one is due. Lateness therefore never accumulates into drift; when
Postgres cannot keep up for more than `MAX_BACKLOG_S`, the schedule is moved
forward instead of bursting to catch up, and the achieved rate shows the
shortfall.

Stopping: `stop` (set on Ctrl-C) is checked between pipelines, so the
transactions in hand are finished and committed; nothing is ever half-written,
because every planned transaction commits or rolls back whole.

A lost connection (Postgres restarted): with a `Resumer`, every planned
transaction also sets the run's progress marker to its step number (see
resume.py). The resumer reconnects and reads the marker; the writer then sends
the plan on from the step after it: what committed of the broken pipeline is
not sent again, what did not is. With synchronous_commit=off a crash can lose
commits that were already acknowledged; the last `REPLAY_TXNS` transactions are
kept so that those are written again too.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import psycopg
from psycopg.pq import TransactionStatus

from engine.core.errors import WorkloadError
from engine.lab.workload.plan import PgTxn, to_datetime
from engine.lab.workload.resume import MARK_SQL

#: Most planned transactions sent in one pipeline (one network round trip).
MAX_BATCH = 200
#: How far behind schedule the writer may fall before it stops trying to catch up.
MAX_BACKLOG_S = 1.0
_MAX_SLEEP_S = 0.05
#: Acknowledged transactions kept for writing again after a crash lost them (async commit).
REPLAY_TXNS = 20_000
_BEGIN = "BEGIN"
_COMMIT = "COMMIT"
_ROLLBACK = "ROLLBACK"


@dataclass
class Tally:
    """Running counts of what has been committed (events = captured row changes)."""

    events: int = 0
    txns: int = 0
    rows: int = 0
    changes: Counter[tuple[str, str]] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    last_commit: float = 0.0
    sim_us: int = 0
    #: Times the schedule was moved forward because Postgres fell behind.
    fell_behind: int = 0

    @property
    def seconds(self) -> float:
        end = self.last_commit or time.monotonic()
        return max(end - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.events else 0.0


ProgressFn = Callable[[Tally], None]


class Resumer(Protocol):
    run_id: int

    def reconnect(self, cause: BaseException, steps: int) -> tuple[psycopg.Connection, int]:
        """A new connection and the run's committed step count (its progress marker)."""
        ...


class ConnectionLostError(Exception):
    """The connection broke while a pipeline was out: some of it may have committed."""

    def __init__(self, cause: psycopg.Error) -> None:
        super().__init__(str(cause))
        self.cause = cause


#: What libpq says when the server closed the link.
_LINK_GONE = "server closed the connection unexpectedly"


def connection_lost(conn: psycopg.Connection | None, exc: BaseException) -> bool:
    """Whether `exc` means the link to the server is gone (not a failed statement)."""
    if not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    if conn is None or conn.broken or conn.closed:
        return True
    # A server gone while a pipeline was in flight: libpq reports the pipeline's state
    # ("cannot exit pipeline mode while busy") with the lost link in the same message,
    # before the connection is marked broken.
    pgconn = getattr(conn, "pgconn", None)
    if pgconn is not None and pgconn.status != psycopg.pq.ConnStatus.OK:
        return True
    # The server's own word may sit further down the chain: a fast shutdown's
    # AdminShutdown (57P01) raised in the pipeline, then "cannot exit pipeline mode
    # while busy" raised while leaving it.
    return any(_says_link_gone(e) for e in _chain(exc))


def _says_link_gone(exc: BaseException) -> bool:
    if _LINK_GONE in str(exc):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate or ""
    return state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or while handling, nearest first."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out and len(out) < 10:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


class Writer:
    """Writes planned transactions on one connection. `clock` and `sleep` can be replaced
    (tests); by default the monotonic clock, and sleeping is waiting on `stop`."""

    def __init__(
        self,
        conn: psycopg.Connection | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        resumer: Resumer | None = None,
    ) -> None:
        self.conn = conn
        self.clock = clock
        self.sleep = sleep
        self.resumer = resumer
        #: Planned transactions committed (acknowledged) so far: the step of the last one.
        self.step = 0
        #: The last acknowledged transactions, oldest first (the last is `self.step`).
        self._recent: deque[PgTxn] = deque(maxlen=REPLAY_TXNS)
        #: Connections lost and re-opened, and the seconds spent reconnecting.
        self.reconnects = 0
        self.outage_s = 0.0

    def write(self, batch: list[PgTxn], tally: Tally) -> None:
        """Commit the batch (each planned transaction on its own) and count it."""
        self._deliver(batch)
        tally.last_commit = self.clock()
        for txn in batch:
            tally.txns += 1
            tally.sim_us = txn.at_us
            for st in txn.statements:
                tally.rows += 1
                if st.captured:
                    tally.events += 1
                    tally.changes[(st.table, st.op)] += 1

    def _deliver(self, batch: list[PgTxn]) -> None:
        """Send the batch; after a lost connection reconnect and send what did not commit."""
        todo = list(batch)
        while True:
            try:
                self._send(todo)
            except ConnectionLostError as lost:
                todo = self._resume(lost, todo)
                continue
            self.step += len(todo)
            self._recent.extend(todo)
            return

    def _resume(self, lost: ConnectionLostError, todo: list[PgTxn]) -> list[PgTxn]:
        """Reconnect; returns what is still to be sent, from the step after the marker."""
        resumer = self.resumer
        if resumer is None:
            raise WorkloadError(
                f"lost the connection to Postgres: {str(lost.cause).strip()}\n"
                "Every planned transaction commits or rolls back whole; the database is "
                "consistent. Check that the server is running (`changefold stack status`)."
            ) from lost.cause
        with contextlib.suppress(psycopg.Error):
            if self.conn is not None:
                self.conn.close()
        t0 = self.clock()
        self.conn, done = resumer.reconnect(lost.cause, self.step)
        self.outage_s += self.clock() - t0
        self.reconnects += 1
        if done > self.step + len(todo):
            raise WorkloadError(
                f"the progress marker of this run says {done:,} planned transactions "
                f"committed, but only {self.step + len(todo):,} were sent: another program "
                f"updates run_id {resumer.run_id} in the generator's runs table. Stopped, "
                "so as not to write anything twice."
            )
        if done >= self.step:
            committed, todo = todo[: done - self.step], todo[done - self.step :]
            self._recent.extend(committed)
        else:
            back = self.step - done
            if back > len(self._recent):
                raise WorkloadError(
                    f"Postgres lost {back:,} planned transactions it had acknowledged (more "
                    f"than the {len(self._recent):,} kept for writing again), as it may when "
                    "it crashes under --async-commit. The database is consistent up to step "
                    f"{done:,}; run the generator again."
                )
            again = [self._recent.pop() for _ in range(back)][::-1]
            todo = again + todo
        self.step = done
        return todo

    def _send(self, batch: list[PgTxn]) -> None:
        """One pipeline: BEGIN, statements, COMMIT per planned transaction, one round trip.

        With a resumer, each transaction also sets the run's progress marker to its
        step number (the step after `self.step` for the first one)."""
        conn = self.conn
        assert conn is not None
        cur = conn.cursor()
        run_id = self.resumer.run_id if self.resumer is not None else None
        try:
            # Explicit BEGIN/COMMIT: conn.transaction() would sync the pipeline (one round
            # trip) per transaction. On an error the server skips the rest of the pipeline,
            # so the failing transaction and those after it are not committed.
            with conn.pipeline():
                for i, txn in enumerate(batch, start=self.step + 1):
                    cur.execute(_BEGIN)
                    for st in txn.statements:
                        cur.execute(st.sql, st.params)
                    if run_id is not None:
                        cur.execute(MARK_SQL, (i, run_id))
                    cur.execute(_COMMIT)
        except psycopg.Error as exc:
            if connection_lost(conn, exc):
                raise ConnectionLostError(exc) from exc
            self._abandon()
            first = batch[0]
            raise WorkloadError(
                f"writing {len(batch)} planned transaction(s) ({first.label} at simulated "
                f"{to_datetime(first.at_us):%Y-%m-%d %H:%M:%S}, ...) failed: "
                f"{str(exc).strip()}\n"
                "Nothing of the failed transaction was kept. If the message names a missing "
                "column, type or table, the schema in Postgres is older than sql/source/: "
                "reload it (`changefold stack down --purge` then `stack up`). A duplicate key "
                "means another program inserted rows into these tables during the run."
            ) from exc

    def _abandon(self) -> None:
        """Roll back a transaction left open by a failed pipeline (if the link still works)."""
        conn = self.conn
        if conn is None or conn.broken or conn.closed:
            return
        with contextlib.suppress(psycopg.Error):
            if conn.info.transaction_status != TransactionStatus.IDLE:
                conn.execute(_ROLLBACK)

    def write_all(
        self,
        txns: Iterable[PgTxn],
        tally: Tally,
        *,
        stop: threading.Event,
        progress: ProgressFn | None = None,
    ) -> None:
        """Write everything, unpaced (setup phase)."""
        batch: list[PgTxn] = []
        for txn in txns:
            batch.append(txn)
            if len(batch) >= MAX_BATCH:
                self.write(batch, tally)
                batch = []
                if progress:
                    progress(tally)
                if stop.is_set():
                    return
        if batch:
            self.write(batch, tally)

    def write_paced(
        self,
        txns: Iterator[PgTxn],
        tally: Tally,
        *,
        rate: float | None,
        max_events: int | None,
        max_seconds: float | None,
        stop: threading.Event,
        progress: ProgressFn | None = None,
    ) -> None:
        """Write planned transactions at `rate` events/s (None: as fast as possible).

        Ends when the transaction starting at event number `max_events` would be next
        (so the same plan always ends at the same transaction), when `max_seconds` of
        wall time have passed (for unpaced runs), or when `stop` is set.
        """
        clock = self.clock
        sleep = self.sleep or stop.wait
        t0 = tally.started = clock()
        sent = 0  # events handed to Postgres; the next transaction starts at this number
        nxt = next(txns, None)
        while nxt is not None and not stop.is_set():
            if max_events is not None and sent >= max_events:
                break
            now = clock()
            if max_seconds is not None and now - t0 >= max_seconds:
                break
            if rate is not None:
                due = t0 + sent / rate
                if due > now:
                    sleep(min(due - now, _MAX_SLEEP_S))
                    continue
                if now - due > MAX_BACKLOG_S:
                    t0 += now - due - MAX_BACKLOG_S
                    tally.fell_behind += 1
            batch: list[PgTxn] = []
            while nxt is not None and len(batch) < MAX_BATCH:
                if max_events is not None and sent >= max_events:
                    break
                if rate is not None and t0 + sent / rate > now:
                    break
                batch.append(nxt)
                sent += nxt.events
                nxt = next(txns, None)
            outage = self.outage_s
            self.write(batch, tally)
            # Time spent reconnecting is not lateness: the schedule waits for Postgres.
            t0 += self.outage_s - outage
            if progress:
                progress(tally)
