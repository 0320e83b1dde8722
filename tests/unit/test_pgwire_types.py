"""The Postgres endpoint's pure parts: types and value formats, parameter literals,
placeholders, the session statements it answers itself, the catalog rewrites."""

from __future__ import annotations

from decimal import Decimal

import duckdb
import pytest

from engine.core.errors import QueryError
from engine.serve import pgwire_types as t
from engine.serve.pgwire_catalog import rewrite
from engine.serve.pgwire_commands import defaults, local_answer
from engine.serve.pgwire_session import _is_empty, _placeholders


def encoded(sql: str, binary: bool = False) -> list[tuple[int, bytes | None]]:
    rel = duckdb.connect().sql(sql)
    table = rel.to_arrow_table()
    out = []
    for kind, column in zip(rel.types, table.columns, strict=True):
        oid = t.oid_of(str(kind))
        out.append((oid, t.encode_column(column, oid, binary)[0]))
    return out


def test_duckdb_types_map_to_the_postgres_types_clients_expect() -> None:
    assert [t.oid_of(k) for k in ("INTEGER", "BIGINT", "DECIMAL(18,2)", "VARCHAR")] == [
        t.INT4, t.INT8, t.NUMERIC, t.TEXT,
    ]  # fmt: skip
    assert t.oid_of("TIMESTAMP WITH TIME ZONE") == t.TIMESTAMPTZ
    assert t.oid_of("INTEGER[]") == 1007 and t.oid_of("VARCHAR[]") == 1009
    assert t.oid_of("STRUCT(a INTEGER)") == t.JSON and t.oid_of("MAP(VARCHAR, INTEGER)") == t.JSON
    assert t.oid_of("HUGEINT") == t.NUMERIC and t.oid_of("ENUM('a')") == t.TEXT


def test_text_formats_are_postgres_own() -> None:
    got = encoded(
        "SELECT TIMESTAMPTZ '2024-01-01 10:00:00+02' a, INTERVAL '1 year 2 months 3 days "
        "04:05:06.5' b, -INTERVAL '1 hour' c, ['a b', 'q\"', NULL] d, DATE 'infinity' e, "
        "TIMESTAMP '-infinity' f, 1.50::DECIMAL(5,2) g, 'x'::BLOB h, true i, "
        "TIMESTAMP_NS '2024-01-01 00:00:00.123456789' j, 'nan'::DOUBLE k"
    )
    assert [v for _, v in got] == [
        b"2024-01-01 08:00:00+00",
        b"1 year 2 mons 3 days 04:05:06.5",
        b"-01:00:00",
        b'{"a b","q\\"",NULL}',
        b"infinity",
        b"-infinity",
        b"1.50",
        b"\\x78",
        b"t",
        b"2024-01-01 00:00:00.123456",
        b"NaN",
    ]


@pytest.mark.parametrize("value", ["0", "123.4500", "-0.001", "99999999.99", "1e-7", "10000"])
def test_numeric_binary_round_trips(value: str) -> None:
    raw = t._numeric_binary(Decimal(value))
    assert Decimal(t._numeric_from_binary(raw)) == Decimal(value)


def test_binary_of_a_type_without_one_is_an_error() -> None:
    with pytest.raises(QueryError, match="binary format of type"):
        encoded("SELECT [1, 2] AS a", binary=True)


def test_parameters_become_typed_literals_that_cannot_escape_their_quotes() -> None:
    sneaky = t.Param(t.TEXT, b"x'); DROP TABLE bank.accounts; --", False)
    assert t.literal(sneaky) == "CAST('x''); DROP TABLE bank.accounts; --' AS VARCHAR)"
    assert t.literal(t.Param(0, b"abc", False)) == "'abc'"
    assert t.literal(t.Param(t.INT8, (5).to_bytes(8, "big"), True)) == "CAST('5' AS BIGINT)"
    assert t.literal(t.Param(t.NUMERIC, b"1.25", False)) == "(1.25)"
    assert t.literal(t.Param(t.NUMERIC, b"1; select 1", False)) == ("CAST('1; select 1' AS DOUBLE)")
    assert t.literal(t.Param(t.INT4, None, False)) == "NULL"
    with pytest.raises(QueryError, match="NUL"):
        t.literal(t.Param(t.TEXT, b"a\x00b", False))


def test_placeholders_outside_strings_and_comments() -> None:
    sql = "select $1, '$2', \"$3\" -- $4\n, $10"
    assert [(sql[s:e], n) for s, e, n in _placeholders(sql)] == [("$1", 1), ("$10", 10)]


def test_empty_statements() -> None:
    assert _is_empty("") and _is_empty(" ; ") and _is_empty("-- nothing\n;")
    assert not _is_empty("select 1")


def test_session_statements_answered_by_the_endpoint() -> None:
    settings = defaults()
    assert local_answer("BEGIN ISOLATION LEVEL REPEATABLE READ", settings, "").effect == "begin"
    assert local_answer("commit;", settings, "").effect == "commit"
    set_ = local_answer("SET application_name TO 'grafana'", settings, "")
    assert set_ is not None and set_.changed == {"application_name": "grafana"}
    show = local_answer("SHOW application_name", settings, "")
    assert show is not None and show.rows == (("grafana",),)
    assert local_answer("SET TIME ZONE 'Europe/Berlin'", settings, "").changed == {
        "TimeZone": "Europe/Berlin"
    }
    assert (
        local_answer("select version()", settings, "2.0.1")
        .rows[0][0]
        .startswith("PostgreSQL 16.0 (changefold")
    )
    with pytest.raises(QueryError, match="UTF8"):
        local_answer("SET client_encoding = 'LATIN1'", settings, "")
    # What the state answers, or the API's checks refuse, is not the endpoint's.
    for sql in (
        "SHOW TABLES",
        "SHOW bank.accounts",
        "SET x = 1; DROP TABLE t",
        "BEGIN; DELETE FROM t",
        "select version(), 1",
        "SET threads TO 1; select 1",
    ):
        assert local_answer(sql, dict(settings), "") is None, sql  # fmt: skip


def test_catalog_rewrites_touch_only_postgres_only_forms() -> None:
    psql = (
        "SELECT pg_catalog.pg_get_userbyid(c.relowner) FROM pg_catalog.pg_class c "
        "WHERE c.relname OPERATOR(pg_catalog.~) '^(x)$' COLLATE pg_catalog.default"
    )
    assert rewrite(psql) == (
        "SELECT 'changefold' FROM pg_catalog.pg_class c WHERE c.relname ~ '^(x)$'"
    )
    assert rewrite("select 'COLLATE pg_catalog.default'") == "select 'COLLATE pg_catalog.default'"
