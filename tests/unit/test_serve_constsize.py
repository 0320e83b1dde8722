"""Values built while DuckDB plans a query (constant folding): estimated from the syntax
tree and refused past a bound, before anything runs (engine/serve/constsize.py)."""

from __future__ import annotations

import json

import duckdb
import pytest

from engine.core.errors import QueryError
from engine.serve.constsize import largest_folded
from engine.serve.safety import checked_statement

MIB = 2**20


@pytest.fixture
def cur() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (a INTEGER, s VARCHAR)")
    return con


def estimate(cur: duckdb.DuckDBPyConnection, sql: str) -> int:
    (tree,) = cur.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()  # type: ignore[misc]
    return largest_folded(json.loads(tree))


@pytest.mark.parametrize(
    ("sql", "at_least"),
    [
        ("SELECT repeat('x', 1000000000)", 10**9),
        ("SELECT repeat(repeat('x', 100000), 10000)", 10**9),
        ("SELECT repeat('ab', 1000 * 1000 * 1000)", 2 * 10**9),
        ("SELECT repeat('x', 10 ** 9)", 10**9),
        ("SELECT lpad('a', 1000000000, 'b')", 10**9),
        ("SELECT rpad('a', CAST(1e9 AS BIGINT), 'b')", 10**9),
        ("SELECT range(200000000)", 200_000_000 * 8),
        ("SELECT len(list_resize([1], 300000000))", 300_000_000 * 8),
        ("SELECT 'a' || repeat('b', 500000000) AS x FROM t", 5 * 10**8),
        ("SELECT * FROM t WHERE s = repeat('x', 1000000000)", 10**9),
    ],
)
def test_values_built_from_a_count_are_estimated_large(
    cur: duckdb.DuckDBPyConnection, sql: str, at_least: int
) -> None:
    assert estimate(cur, sql) >= at_least
    with pytest.raises(QueryError) as refused:
        checked_statement(cur, sql, max_folded_bytes=256 * MIB)
    assert refused.value.kind == "memory"
    assert "CHANGEFOLD_API_QUERY_MEMORY_BYTES" in str(refused.value)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT repeat('x', 1000)",
        "SELECT range(1000)",
        "SELECT repeat(s, 1000000000) FROM t",  # reads a column: runs, interruptible
        "SELECT repeat('x', a) FROM t",
        "SELECT * FROM range(200000000)",  # a table function: executes, watched
        "SELECT a, s FROM t WHERE a > 5 ORDER BY a",
    ],
)
def test_small_or_non_constant_expressions_pass(cur: duckdb.DuckDBPyConnection, sql: str) -> None:
    assert checked_statement(cur, sql, max_folded_bytes=256 * MIB)


def test_the_bound_is_the_callers(cur: duckdb.DuckDBPyConnection) -> None:
    sql = "SELECT repeat('x', 2000000)"
    assert checked_statement(cur, sql, max_folded_bytes=4 * MIB)
    with pytest.raises(QueryError):
        checked_statement(cur, sql, max_folded_bytes=1 * MIB)
