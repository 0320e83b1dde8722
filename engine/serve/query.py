"""Run one checked read statement under a deadline and a row cap, into Arrow."""

from __future__ import annotations

import time
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from engine.core.errors import QueryError
from engine.serve.safety import checked_statement
from engine.serve.timeouts import Deadline
from engine.state import frontier
from engine.state.reader import StateReader

#: Rows per Arrow batch pulled from DuckDB's streaming result.
_BATCH_ROWS = 8192


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
) -> QueryResult:
    """Check `sql` (engine.serve.safety), run it read-only, return up to `max_rows` rows.

    With `scope`, the frontier of that group is read first in the same read-only
    transaction, so the rows and `consistency` come from one snapshot.

    Raises QueryError with DuckDB's message when the query is refused, invalid,
    fails, or runs past `timeout_s` (then it is interrupted).
    """
    started = time.perf_counter()
    consistency = None
    with reader.cursor() as cur:
        statement = checked_statement(cur, sql)
        deadline = Deadline(cur, timeout_s)
        try:
            with deadline:
                if scope is not None:
                    consistency = frontier.read(cur, scope)
                columns, table, truncated = _fetch(cur, statement, max_rows)
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            if deadline.expired:
                raise deadline.timeout_error() from None
            raise _query_error(exc) from None
    elapsed_ms = (time.perf_counter() - started) * 1000
    return QueryResult(columns, table, truncated, elapsed_ms, consistency)


def _fetch(
    cur: duckdb.DuckDBPyConnection, statement: str, max_rows: int
) -> tuple[tuple[Column, ...], pa.Table, bool]:
    relation = cur.sql(statement)
    if relation is None:  # not a query after all; checked_statement should prevent it
        raise QueryError("refused", "the statement returns no rows: send a SELECT")
    columns = tuple(
        Column(name, str(kind)) for name, kind in zip(relation.columns, relation.types, strict=True)
    )
    stream = relation.to_arrow_reader(min(_BATCH_ROWS, max_rows + 1))
    try:
        batches: list[pa.RecordBatch] = []
        rows = 0
        for batch in stream:
            batches.append(batch)
            rows += batch.num_rows
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
