"""What stops a running query: its statement timeout, the engine's memory, a shutdown.

DuckDB (2.0.1) has no statement timeout and no memory limit per query: its
`memory_limit` is per database instance, shared with the engine's writer, and does
not count every allocation (a `list()` aggregate is bounded by it, the string of
`repeat('x', 1000000000)` is not); `operator_memory_limit`, set per reader cursor
(engine.serve.query), only makes sorts and hash tables spill. What it does have is
`con.interrupt()`: it stops execution, the streaming of a result and most of the
planning of the statement running on that connection.

So one watchdog thread per process samples the engine's resident memory (psutil)
every `interval_s` while queries run and interrupts a query

- whose statement timeout has passed (parse, plan, execution and fetching count);
- when the engine's RSS has grown by more than the query's memory bound since the
  query started (growth while several queries run counts against each of them, so
  together they stay within one bound);
- when its reader shuts down (`stop_all`), so that the engine can close its
  DuckDB connection, which DuckDB refuses while a cursor of it is busy.

An interrupt that lands between two statements of a query is not remembered by
DuckDB, so the watchdog interrupts again on every tick until the query's block
ends, and `Watch.check()` raises between steps. What no interrupt reaches is one
call that runs to its end inside DuckDB: a single huge value (`repeat(x, 1e9)`
folded as a constant, ~30 s) or the parse of a long text (which also holds the
GIL): the SQL length limit bounds the latter; the former is stopped at its end.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import duckdb
import psutil

from engine.core.errors import QueryError

log = logging.getLogger(__name__)

TIMEOUT = "timeout"
MEMORY = "memory"
SHUTDOWN = "shutdown"


@functools.cache
def _process(pid: int) -> psutil.Process:
    return psutil.Process(pid)


def _rss() -> int:
    """This process's resident memory (one read of /proc/self/statm)."""
    return int(_process(os.getpid()).memory_info().rss)


def size_text(size: float) -> str:
    """Bytes as a short figure: 1.0 GiB, 64 MiB, 512 bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{int(size)} bytes"


@dataclass(eq=False)
class Watch:
    """One running query as the watchdog sees it."""

    cursor: duckdb.DuckDBPyConnection
    owner: Hashable
    timeout_s: float
    memory_bytes: int | None
    started: float = field(default_factory=time.monotonic)
    rss_at_start: int = 0
    #: Why it was stopped (TIMEOUT, MEMORY, SHUTDOWN), None while it may run.
    reason: str | None = None
    #: How much the engine's memory had grown when it was stopped for MEMORY.
    grown: int = 0
    _done: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def stop(self, reason: str, grown: int = 0) -> None:
        """Interrupt the query (again, if it was already told to stop)."""
        with self._lock:
            if self._done:
                return
            if self.reason is None:
                self.reason = reason
                self.grown = grown
            try:
                self.cursor.interrupt()
            except duckdb.Error as exc:  # closed meanwhile
                log.debug("interrupt of a query cursor: %s", exc)

    def finish(self) -> None:
        with self._lock:
            self._done = True

    def check(self) -> None:
        """Raise the stop's error if the query was told to stop (between steps)."""
        if self.reason is not None:
            raise self.error()

    def error(self) -> QueryError:
        if self.reason == MEMORY:
            bound = size_text(self.memory_bytes or 0)
            return QueryError(
                "memory",
                f"the engine's memory grew by {self.grown / 2**20:,.0f} MiB while the query ran, "
                f"more than the query memory bound of {bound}, and the query was stopped; "
                "aggregate less (fewer or smaller values per group, a WHERE, a LIMIT) or "
                "raise CHANGEFOLD_API_QUERY_MEMORY_BYTES",
            )
        if self.reason == SHUTDOWN:
            return QueryError(
                "unavailable",
                "the engine is shutting down: the query was interrupted; retry once it runs",
            )
        return QueryError(
            "timeout",
            f"the query ran longer than the statement timeout of {self.timeout_s:g} s "
            "(parse, plan and execution) and was interrupted; narrow it (WHERE, LIMIT, "
            "fewer joins) or raise CHANGEFOLD_API_STATEMENT_TIMEOUT_S",
        )


class Watchdog:
    """Watches running queries; one per process (`watchdog()`), or own ones in tests."""

    def __init__(self, *, interval_s: float = 0.02, rss: Callable[[], int] = _rss) -> None:
        self.interval_s = interval_s
        self._rss = rss
        self._cond = threading.Condition()
        self._watches: set[Watch] = set()
        self._stopping: set[Hashable] = set()
        self._thread: threading.Thread | None = None

    @contextmanager
    def watch(
        self,
        cursor: duckdb.DuckDBPyConnection,
        *,
        owner: Hashable,
        timeout_s: float,
        memory_bytes: int | None = None,
    ) -> Iterator[Watch]:
        """Watch `cursor` while the block runs; refuses at once if `owner` is stopping."""
        item = Watch(cursor, owner, timeout_s, memory_bytes, rss_at_start=self._rss())
        with self._cond:
            if owner in self._stopping:
                item.reason = SHUTDOWN
                raise item.error()
            self._watches.add(item)
            self._ensure_thread()
            self._cond.notify_all()
        try:
            yield item
        finally:
            item.finish()
            with self._cond:
                self._watches.discard(item)
                self._cond.notify_all()

    def running(self, owner: Hashable | None = None) -> int:
        with self._cond:
            return sum(1 for w in self._watches if owner is None or w.owner == owner)

    def stop_all(self, owner: Hashable) -> int:
        """Interrupt `owner`'s running queries and refuse new ones; how many ran."""
        with self._cond:
            self._stopping.add(owner)
            watches = [w for w in self._watches if w.owner == owner]
        for w in watches:
            w.stop(SHUTDOWN)
        return len(watches)

    def wait_idle(self, owner: Hashable, timeout_s: float) -> bool:
        """Wait until none of `owner`'s queries runs; False if some still do."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while any(w.owner == owner for w in self._watches):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
        return True

    def forget(self, owner: Hashable) -> None:
        """`owner` is closed: drop its stopping mark."""
        with self._cond:
            self._stopping.discard(owner)

    # -- the thread ---------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._loop, name="changefold-query-watchdog", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._watches:
                    self._cond.wait()
                watches = list(self._watches)
            self.tick(watches)
            time.sleep(self.interval_s)

    def tick(self, watches: list[Watch]) -> None:
        """One look at the running queries: interrupt those past a bound."""
        now = time.monotonic()
        rss = self._rss()
        for w in watches:
            if w.reason is not None:
                w.stop(w.reason)  # again: DuckDB forgets an interrupt between statements
            elif now - w.started >= w.timeout_s:
                w.stop(TIMEOUT)
            elif w.memory_bytes is not None and rss - w.rss_at_start > w.memory_bytes:
                log.warning(
                    "query stopped: the engine's memory grew by %s while it ran (bound %s)",
                    size_text(rss - w.rss_at_start),
                    size_text(w.memory_bytes),
                )
                w.stop(MEMORY, rss - w.rss_at_start)


_WATCHDOG: Watchdog | None = None
_WATCHDOG_LOCK = threading.Lock()


def watchdog() -> Watchdog:
    """The process's watchdog."""
    global _WATCHDOG
    with _WATCHDOG_LOCK:
        if _WATCHDOG is None:
            _WATCHDOG = Watchdog()
        return _WATCHDOG
