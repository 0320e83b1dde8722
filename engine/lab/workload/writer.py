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
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import psycopg
from psycopg.pq import TransactionStatus

from engine.core.errors import WorkloadError
from engine.lab.workload.plan import PgTxn, to_datetime

#: Most planned transactions sent in one pipeline (one network round trip).
MAX_BATCH = 200
#: How far behind schedule the writer may fall before it stops trying to catch up.
MAX_BACKLOG_S = 1.0
_MAX_SLEEP_S = 0.05
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


class Writer:
    """Writes planned transactions on one connection. `clock` and `sleep` can be replaced
    (tests); by default the monotonic clock, and sleeping is waiting on `stop`."""

    def __init__(
        self,
        conn: psycopg.Connection | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.conn = conn
        self.clock = clock
        self.sleep = sleep

    def write(self, batch: list[PgTxn], tally: Tally) -> None:
        """Commit the batch (each planned transaction on its own) and count it."""
        self._send(batch)
        tally.last_commit = self.clock()
        for txn in batch:
            tally.txns += 1
            tally.sim_us = txn.at_us
            for st in txn.statements:
                tally.rows += 1
                if st.captured:
                    tally.events += 1
                    tally.changes[(st.table, st.op)] += 1

    def _send(self, batch: list[PgTxn]) -> None:
        """One pipeline: BEGIN, statements, COMMIT per planned transaction, one round trip."""
        conn = self.conn
        assert conn is not None
        cur = conn.cursor()
        try:
            # Explicit BEGIN/COMMIT: conn.transaction() would sync the pipeline (one round
            # trip) per transaction. On an error the server skips the rest of the pipeline,
            # so the failing transaction and those after it are not committed.
            with conn.pipeline():
                for txn in batch:
                    cur.execute(_BEGIN)
                    for st in txn.statements:
                        cur.execute(st.sql, st.params)
                    cur.execute(_COMMIT)
        except psycopg.Error as exc:
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
            self.write(batch, tally)
            if progress:
                progress(tally)
