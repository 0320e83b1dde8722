"""A statement timeout for DuckDB, which has none of its own: a timer that interrupts.

`con.interrupt()` stops whatever the connection is running, execution or the
streaming of its result, with an INTERRUPT error; the connection stays usable.
"""

from __future__ import annotations

import threading
from types import TracebackType

import duckdb

from engine.core.errors import QueryError


class Deadline:
    """Interrupts `cursor` when `seconds` have passed, unless the block finished first.

    Use as a context manager around execution and fetching; afterwards,
    `expired` tells whether an error raised inside came from the interruption
    (`timeout_error()` is the error to report then).
    """

    def __init__(self, cursor: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self.cursor = cursor
        self.seconds = seconds
        self.expired = False
        self._done = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.name = "changefold-query-deadline"

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            self.cursor.interrupt()

    def timeout_error(self) -> QueryError:
        return QueryError(
            "timeout",
            f"the query ran longer than the statement timeout of {self.seconds:g} s and was "
            "interrupted; narrow it (WHERE, LIMIT, fewer joins) or raise "
            "CHANGEFOLD_API_STATEMENT_TIMEOUT_S",
        )
