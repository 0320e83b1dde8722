"""The statement check and the value formats, without a server (in-memory DuckDB)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import duckdb
import pyarrow as pa
import pytest

from engine.core.errors import QueryError
from engine.serve.formats import iso_duration, jsonable, portable
from engine.serve.safety import checked_statement


@pytest.fixture
def cur() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (a INTEGER); CREATE TABLE u (b INTEGER)")
    return con


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1",
        "  select a from t;  ",
        "(SELECT a FROM t) UNION ALL (SELECT b FROM u)",
        "SELECT * FROM t WHERE a IN (SELECT b FROM u)",
        "SELECT * FROM t, LATERAL unnest([1, 2])",
        "EXPLAIN (FORMAT json) SELECT * FROM t",
        "explain   analyze\n  WITH x AS (SELECT 1) SELECT * FROM x",
        "PIVOT t ON a IN (1, 2) USING count(*)",
        "SELECT * FROM generate_series(1, 3)",
        "SELECT * FROM json_each('{\"a\": 1}')",
    ],
)
def test_read_statements_pass(cur: duckdb.DuckDBPyConnection, sql: str) -> None:
    statement = checked_statement(cur, sql)
    cur.execute(statement).fetchall()


@pytest.mark.parametrize(
    ("sql", "kind", "words"),
    [
        ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", "refused", "EXPLAIN of INSERT"),
        ("EXPLAIN (FORMAT json) DELETE FROM t", "refused", "EXPLAIN of DELETE"),
        ("UPDATE EXTENSIONS", "refused", "not allowed"),
        ("PIVOT t ON a USING count(*)", "refused", "multi-step"),
        ("SELECT * FROM t JOIN read_parquet('x.parquet') ON true", "refused", "read_parquet()"),
        ("WITH x AS (SELECT * FROM sniff_csv('a.csv')) SELECT * FROM x", "refused", "sniff_csv"),
        ("SELECT * FROM arrow_scan(1, 2, 3)", "refused", "arrow_scan()"),
        ("SELECT * FROM main.enable_logging()", "refused", "enable_logging()"),
        ("SELECT * FROM 's3://bucket/x.parquet'", "refused", "not files or URLs"),
        ("SELECT 1;;SELECT 2", "refused", "2 statements"),
        ("-- nothing", "invalid", "no statement"),
        ("SELECT FROM WHERE", "invalid", "syntax error"),
    ],
)
def test_refusals(cur: duckdb.DuckDBPyConnection, sql: str, kind: str, words: str) -> None:
    with pytest.raises(QueryError) as caught:
        checked_statement(cur, sql)
    assert caught.value.kind == kind
    assert words in caught.value.message


def test_the_state_s_own_table_macros_are_allowed(cur: duckdb.DuckDBPyConnection) -> None:
    cur.execute("CREATE MACRO top_a(n) AS TABLE SELECT a FROM t ORDER BY a DESC LIMIT n")
    assert checked_statement(cur, "SELECT * FROM top_a(3)") == "SELECT * FROM top_a(3)"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("12345678901234567890.01"), "12345678901234567890.01"),
        (float("nan"), "NaN"),
        (float("-inf"), "-Infinity"),
        (1.5, 1.5),
        (dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC), "2024-05-01T12:00:00+00:00"),
        (dt.date(2024, 5, 1), "2024-05-01"),
        (b"\x00\xff", "AP8="),
        ([("k", 1), ("j", 2)], {"k": 1, "j": 2}),
        ([(1, "a")], [[1, "a"]]),
        ({"x": [Decimal("1.10")]}, {"x": ["1.10"]}),
        (pa.scalar((1, 2, 3_000_000_000), pa.month_day_nano_interval()).as_py(), "P1M2DT3S"),
    ],
)
def test_json_values_are_exact(value: object, expected: object) -> None:
    assert jsonable(value) == expected


@pytest.mark.parametrize(
    ("parts", "text"),
    [
        ((0, 0, 0), "PT0S"),
        ((14, 0, 0), "P1Y2M"),
        ((0, 3, 5_400_000_000_000), "P3DT1H30M"),
        ((0, 0, 1_500_000), "PT0.0015S"),
        ((-1, 0, -60_000_000_000), "P-1MT-1M"),
    ],
)
def test_iso_durations(parts: tuple[int, int, int], text: str) -> None:
    assert iso_duration(*parts) == text


def test_intervals_become_durations_for_arrow_readers() -> None:
    table = pa.table(
        {"i": pa.array([(0, 1, 1000), None], pa.month_day_nano_interval()), "n": [1, 2]}
    )
    out = portable(table)
    assert out.schema.field("i").type == pa.duration("us")
    assert out.column("i").to_pylist() == [dt.timedelta(days=1, microseconds=1), None]
    assert out.column("n").to_pylist() == [1, 2]
