"""Run one checked read statement within the query limits and a row cap, into Arrow.

The limits (`QueryLimits`, the `api` settings) and where each one acts:

- SQL length, before anything runs: DuckDB parses and plans in time that grows
  faster than the text (a 130 kB `select 1 union all ...` plans for 11 s), the
  parse holds the GIL (every thread of the engine waits), and not all of planning
  can be interrupted.
- The statement timeout and the memory bound, from the first parse to the last
  fetched batch: engine.serve.guard interrupts the cursor. Each cursor also gets
  DuckDB's `operator_memory_limit` (a quarter of the memory bound), so sorts and
  hash tables spill to disk before the bound is reached.
- The answer's size: the Arrow batches are counted as they stream and the query
  is stopped past `max_result_bytes`, before the JSON encoding multiplies them.
- CPU: the thread that runs a query (and takes part in DuckDB's execution) runs
  at a lower priority (`nice`); DuckDB's own worker threads are shared with the
  engine's writer and its `threads` setting is per database, not per connection.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from engine.core.config import ApiSettings, Settings
from engine.core.errors import QueryError
from engine.serve.guard import Watch, size_text, watchdog
from engine.serve.safety import checked_statement
from engine.state import frontier
from engine.state.reader import StateReader

log = logging.getLogger(__name__)

#: Rows per Arrow batch pulled from DuckDB's streaming result.
_BATCH_ROWS = 8192


@dataclass(frozen=True)
class QueryLimits:
    """Bounds of one query besides its timeout and row cap (defaults: the settings')."""

    max_sql_chars: int = ApiSettings.api_max_sql_chars
    memory_bytes: int = ApiSettings.api_query_memory_bytes
    max_result_bytes: int = ApiSettings.api_max_result_bytes
    nice: int = ApiSettings.api_query_nice

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        api = settings.api
        return cls(
            max_sql_chars=api.api_max_sql_chars,
            memory_bytes=api.api_query_memory_bytes,
            max_result_bytes=api.api_max_result_bytes,
            nice=api.api_query_nice,
        )


@dataclass(frozen=True)
class Column:
    name: str
    #: DuckDB's type name, e.g. DECIMAL(18,2), TIMESTAMP WITH TIME ZONE.
    type: str


@dataclass(frozen=True)
class QueryResult:
    """At most the row cap of a query's rows; `truncated` when the query had more."""

    columns: tuple[Column, ...]
    table: pa.Table
    truncated: bool
    elapsed_ms: float
    #: The frontier read in the query's own read transaction (None: not asked for).
    consistency: frontier.Consistency | None = None

    @property
    def row_count(self) -> int:
        return self.table.num_rows


def run_query(
    reader: StateReader,
    sql: str,
    *,
    max_rows: int,
    timeout_s: float,
    scope: frontier.Scope | None = None,
    limits: QueryLimits | None = None,
) -> QueryResult:
    """Check `sql` (engine.serve.safety), run it read-only, return up to `max_rows` rows.

    With `scope`, the frontier of that group is read first in the same read-only
    transaction, so the rows and `consistency` come from one snapshot.

    Raises QueryError with DuckDB's message when the query is refused, invalid,
    fails, is longer than the limits allow, or runs past `timeout_s` or the memory
    bound (then it is interrupted).
    """
    limits = limits or QueryLimits()
    started = time.perf_counter()
    check_text(sql, limits)
    lower_priority(limits.nice)
    consistency = None
    with reader.cursor() as cur:
        _limit_operator_memory(cur, limits.memory_bytes // 4)
        with watchdog().watch(
            cur, owner=reader, timeout_s=timeout_s, memory_bytes=limits.memory_bytes
        ) as watch:
            try:
                statement = checked_statement(cur, sql, max_folded_bytes=limits.memory_bytes // 4)
                watch.check()
                if scope is not None:
                    consistency = frontier.read(cur, scope)
                    watch.check()
                columns, table, truncated = _fetch(cur, statement, max_rows, limits, watch)
            except (duckdb.Error, pa.ArrowException, OSError, QueryError) as exc:
                if watch.reason is not None:
                    raise watch.error() from None
                if isinstance(exc, QueryError):
                    raise
                raise _query_error(exc) from None
    elapsed_ms = (time.perf_counter() - started) * 1000
    return QueryResult(columns, table, truncated, elapsed_ms, consistency)


def check_text(sql: str, limits: QueryLimits) -> None:
    """Refuse SQL longer than the limit, or that is not valid Unicode, before DuckDB sees it."""
    if len(sql) > limits.max_sql_chars:
        raise QueryError(
            "too_large",
            f"the query has {len(sql):,} characters, more than the limit of "
            f"{limits.max_sql_chars:,} (CHANGEFOLD_API_MAX_SQL_CHARS): shorten it (a long "
            "IN list or UNION is better a join with a table or a range())",
        )
    try:
        sql.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise QueryError(
            "invalid",
            f"the query holds a lone surrogate (U+{ord(sql[exc.start]):04X}) at character "
            f"{exc.start}, which is not Unicode text: send the SQL as valid UTF-8",
        ) from None


_PRIORITY = threading.local()


def lower_priority(nice: int) -> None:
    """Run this thread (not the process) at `nice` or lower priority, once (Linux)."""
    if nice <= 0 or getattr(_PRIORITY, "nice", 0) >= nice:
        return
    _PRIORITY.nice = nice
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except (OSError, AttributeError) as exc:  # not Linux, or not allowed
        log.debug("cannot lower the priority of query thread %s: %s", tid, exc)


def _limit_operator_memory(cur: duckdb.DuckDBPyConnection, size: int) -> None:
    """DuckDB's per-connection bound for sorts and hash tables (they spill past it).

    A state opened by `changefold sql` locks its configuration; there is no
    writer to protect then, and the watchdog's bound still holds.
    """
    locked = cur.execute("SELECT current_setting('lock_configuration')").fetchall()
    if not (locked and locked[0][0]):  # a failed SET would abort the read transaction
        cur.execute(f"SET operator_memory_limit = '{max(size, 1)}B'")


def _fetch(
    cur: duckdb.DuckDBPyConnection,
    statement: str,
    max_rows: int,
    limits: QueryLimits,
    watch: Watch,
) -> tuple[tuple[Column, ...], pa.Table, bool]:
    relation = cur.sql(statement)
    if relation is None:  # not a query after all; checked_statement should prevent it
        raise QueryError("refused", "the statement returns no rows: send a SELECT")
    watch.check()
    columns = tuple(
        Column(name, str(kind)) for name, kind in zip(relation.columns, relation.types, strict=True)
    )
    stream = relation.to_arrow_reader(min(_BATCH_ROWS, max_rows + 1))
    try:
        batches: list[pa.RecordBatch] = []
        rows = 0
        size = 0
        for batch in stream:
            watch.check()
            batches.append(batch)
            rows += batch.num_rows
            size += batch.nbytes
            if size > limits.max_result_bytes:
                raise QueryError(
                    "too_large",
                    f"the answer has more than {size_text(limits.max_result_bytes)} of data "
                    f"(CHANGEFOLD_API_MAX_RESULT_BYTES; {rows:,} rows so far): select fewer "
                    "or narrower columns, or fewer rows (LIMIT)",
                )
            if rows > max_rows:
                break
        table = pa.Table.from_batches(batches, schema=stream.schema)
    finally:
        stream.close()
    truncated = table.num_rows > max_rows
    return columns, table.slice(0, max_rows) if truncated else table, truncated


def _query_error(exc: BaseException) -> QueryError:
    """DuckDB's message, with the kind of problem it is."""
    message = str(exc)
    if isinstance(exc, duckdb.PermissionException):
        return QueryError(
            "refused",
            f"{message} (queries may read only the state's tables and views: no files, "
            "network or extensions)",
        )
    if isinstance(exc, duckdb.TransactionException) and "read-only" in message:
        return QueryError("refused", f"{message} (the query API is read-only)")
    if isinstance(exc, duckdb.ParserException | duckdb.BinderException | duckdb.CatalogException):
        return QueryError("invalid", message)
    return QueryError("failed", message)
