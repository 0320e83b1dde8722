"""The Postgres wire-protocol endpoint with real clients: psql (simple protocol) and
psycopg (extended protocol, prepared statements, binary results), over a state file
whose writer connection plays the engine."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import duckdb
import httpx
import psycopg
import pytest
from serve_support import build_state, settings_for

from engine.core.errors import ApiError
from engine.serve import ApiHandle, start_api
from engine.serve.pgwire import PgwireHandle, enabled, start_pgwire
from engine.state.reader import StateReader

#: 2026-12-02 15:04:05.123 UTC
COMMIT_MS = 1_796_223_845_123
LINE = "consistent as of 2026-12-02 15:04:05.123 UTC (LSN 0/1A2B3C8, transaction 877)"
PSQL = shutil.which("psql")


@dataclass
class Engine:
    con: duckdb.DuckDBPyConnection
    pg: PgwireHandle
    api: ApiHandle

    @property
    def url(self) -> str:
        return self.pg.url

    def connect(self, **kwargs: object) -> psycopg.Connection:
        return psycopg.connect(self.url, connect_timeout=5, **kwargs)  # type: ignore[arg-type]

    def psql(
        self,
        *args: str,
        script: str | None = None,
        user: str = "changefold",
        db: str = "changefold",
    ) -> subprocess.CompletedProcess[str]:
        """psql against the endpoint (-X: no psqlrc; unaligned tuples only); `script`
        goes to its standard input."""
        assert PSQL, "psql is missing: install Debian's postgresql-client (make test needs it)"
        env = {**os.environ, "PGCONNECT_TIMEOUT": "5", "PGSSLMODE": "prefer"}
        command = [PSQL, "-X", "-At", "-h", self.pg.host, "-p", str(self.pg.port)]
        return subprocess.run(
            [*command, "-U", user, "-d", db, *args],
            input=script,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )

    def api_error(self, sql: str) -> str:
        r = httpx.post(f"{self.api.url}/query", json={"sql": sql}, timeout=30)
        assert r.status_code == 400, r.text
        return str(r.json()["message"])


def put_frontier(con: duckdb.DuckDBPyConnection, xid: str, lsn: int, commit_ms: int) -> None:
    con.execute(
        "INSERT OR REPLACE INTO _changefold.frontier VALUES ('changefold', ?, ?, ?, ?, 1, now())",
        [xid, lsn, commit_ms, int(xid)],
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    con = build_state(tmp_path / "state.duckdb")
    put_frontier(con, "877", 0x1A2B3C8, COMMIT_MS)
    settings = settings_for(tmp_path, api_max_rows=100, api_statement_timeout_s=1.0)
    pg = start_pgwire(settings, StateReader.for_connection(con), port=0)
    api = start_api(settings, StateReader.for_connection(con), port=0)
    try:
        yield Engine(con, pg, api)
    finally:
        pg.stop()
        api.stop()
        con.close()


# -- psql (simple query protocol) --------------------------------------------------------


def test_psql_answers_rows_from_the_state(engine: Engine) -> None:
    done = engine.psql(
        "-c", "select id, owner, balance, opened, tags, hold from bank.accounts order by id limit 2"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "1|owner 1|100.25|2024-01-02 00:00:00+00|{t1}|00:00:00.001",
        "2|owner 2|200.25|2024-01-03 00:00:00+00|{t2}|00:00:00.002",
    ]


def test_psql_write_is_refused_with_the_apis_message(engine: Engine) -> None:
    for sql in (
        "insert into bank.accounts (id) values (999)",
        "drop table bank.events",
        "select * from read_csv('/etc/passwd')",
        "select 1; select 2",
        "attach '/tmp/x.duckdb' as x",
    ):
        done = engine.psql("-c", sql)
        assert done.returncode == 1, sql
        assert done.stderr.strip() == f"ERROR:  {engine.api_error(sql)}", sql
    check = engine.psql("-c", "select count(*) from bank.accounts where id = 999")
    assert check.stdout.strip() == "0"


def test_psql_session_statements_and_probes(engine: Engine) -> None:
    script = "\n".join(
        [
            "select version();",
            "show server_version;",
            "set application_name = 'dashboards';",
            "show application_name;",
            "set search_path to bank;",
            "show search_path;",
            "begin;",
            "select count(*) from bank.events;",
            "commit;",
            "show changefold.consistency;",
            "show all;",
        ]
    )
    done = engine.psql("-v", "ON_ERROR_STOP=1", script=script)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("PostgreSQL 16.0 (changefold ")
    assert lines[1].startswith("16.0")
    assert lines[2:7] == ["SET", "dashboards", "SET", "bank", "BEGIN"]
    assert lines[7:10] == ["5000", "COMMIT", LINE]
    assert "application_name|dashboards" in lines


def test_psql_error_in_a_transaction_block_aborts_it_until_rollback(engine: Engine) -> None:
    script = "begin;\nselect nope;\nselect 1;\nrollback;\nselect 2;\n"
    done = engine.psql(script=script)
    assert done.stdout.splitlines() == ["BEGIN", "ROLLBACK", "2"]
    assert 'Referenced column "nope" was not found' in done.stderr
    assert "current transaction is aborted" in done.stderr


def test_psql_unknown_user_or_database_is_refused(engine: Engine) -> None:
    done = engine.psql("-c", "select 1", user="postgres")
    assert done.returncode == 2
    assert 'role "postgres" does not exist: connect as user changefold' in done.stderr
    done = engine.psql("-c", "select 1", db="postgres")
    assert 'database "postgres" does not exist' in done.stderr


def test_psql_lists_tables_and_schemas(engine: Engine) -> None:
    tables = engine.psql("-c", "\\dt bank.*")
    assert tables.returncode == 0, tables.stderr
    assert tables.stdout.splitlines() == [
        "bank|accounts|table|changefold",
        "bank|events|table|changefold",
    ]
    schemas = engine.psql("-c", "\\dn")
    assert "bank|changefold" in schemas.stdout.splitlines(), schemas.stderr
    described = engine.psql("-c", "describe bank.accounts")
    assert described.stdout.splitlines()[0].startswith("id|INTEGER|NO|PRI")


def test_psql_empty_query_and_comments(engine: Engine) -> None:
    done = engine.psql("-c", "-- nothing\n;")
    assert done.returncode == 0 and done.stdout == "", done.stderr


# -- psycopg (extended query protocol) ---------------------------------------------------


def test_psycopg_parameters_and_typed_results(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.info.server_version == 160000
        cur = conn.execute(
            "select id, owner, balance, opened, tags, hold from bank.accounts "
            "where id = %s and owner = %s",
            [3, "owner 3"],
        )
        assert [c.name for c in cur.description] == [
            "id", "owner", "balance", "opened", "tags", "hold",
        ]  # fmt: skip
        assert cur.fetchall() == [
            (
                3,
                "owner 3",
                Decimal("300.25"),
                dt.datetime(2024, 1, 4, tzinfo=dt.UTC),
                ["t0"],
                dt.timedelta(microseconds=3000),
            )
        ]
        row = conn.execute(
            "select %s as s, %s as i, %s as f, %s as d, %s as t, %s as n, %s as b, %s as z",
            ["it's; --", 2**40, 1.5, dt.date(2024, 1, 2),
             dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), Decimal("1.25"), True, None],
        ).fetchone()  # fmt: skip
        assert row == (
            "it's; --", 2**40, 1.5, dt.date(2024, 1, 2),
            dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), Decimal("1.25"), True, None,
        )  # fmt: skip


def test_psycopg_binary_results_and_prepared_statements(engine: Engine) -> None:
    with engine.connect(autocommit=True) as conn:
        cur = conn.cursor(binary=True)
        cur.execute(
            "select id, owner, balance, opened, hold, id::DOUBLE as x, DATE '2024-02-03' as d, "
            "'ab'::BLOB as bl, -0.001::DECIMAL(10, 3) as small from bank.accounts "
            "order by id limit 1"
        )
        assert cur.fetchall() == [
            (1, "owner 1", Decimal("100.25"), dt.datetime(2024, 1, 2, tzinfo=dt.UTC),
             dt.timedelta(microseconds=1000), 1.0, dt.date(2024, 2, 3), b"ab",
             Decimal("-0.001")),
        ]  # fmt: skip
        for i in range(8):  # psycopg prepares a statement from its 5th run on
            assert conn.execute("select %s::INTEGER + 1", [i]).fetchone() == (i + 1,)
        assert conn.execute("select %s + 1", [1], prepare=True).fetchone() == (2,)


def test_psycopg_write_is_refused_and_the_transaction_recovers(engine: Engine) -> None:
    sql = "delete from bank.accounts"
    with engine.connect() as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as err:
            conn.execute(sql)
        assert str(err.value) == engine.api_error(sql)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
        assert conn.execute("select count(*) from bank.accounts").fetchone() == (50,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select * from read_text(%s)", ["/etc/passwd"])
        conn.rollback()


def test_psycopg_row_cap_comes_with_a_notice(engine: Engine) -> None:
    notices: list[str] = []
    with engine.connect(autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        rows = conn.execute("select id from bank.events order by id").fetchall()
    assert len(rows) == 100
    assert notices and "cut at 100 rows" in notices[0]


def test_psycopg_statement_timeout_is_the_apis(engine: Engine) -> None:
    with engine.connect(autocommit=True) as conn:
        with pytest.raises(psycopg.errors.QueryCanceled) as err:
            conn.execute("select count(*) from range(1000000000) a, range(1000) b").fetchall()
        assert "statement timeout of 1 s" in str(err.value)
        assert conn.execute("select 1").fetchone() == (1,)


def test_each_answer_names_the_frontier_it_read(engine: Engine) -> None:
    with engine.connect(autocommit=True) as conn:
        conn.execute("select 1").fetchall()
        assert conn.info.parameter_status("changefold.consistency") == LINE
        # The engine applies a transaction: the rows and the frontier move together.
        engine.con.execute("BEGIN")
        engine.con.execute("UPDATE bank.accounts SET owner = 'moved' WHERE id = 1")
        put_frontier(engine.con, "878", 0x1A2B400, COMMIT_MS + 1000)
        engine.con.execute("COMMIT")
        assert conn.execute("select owner from bank.accounts where id = 1").fetchone() == ("moved",)
        assert conn.info.parameter_status("changefold.consistency") == (
            "consistent as of 2026-12-02 15:04:06.123 UTC (LSN 0/1A2B400, transaction 878)"
        )


def test_server_side_cursor_portal_is_fetched_in_parts(engine: Engine) -> None:
    with engine.connect(autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("select id from bank.accounts order by id")
        assert cur.fetchmany(3) == [(1,), (2,), (3,)]
        assert len(cur.fetchall()) == 47


# -- the endpoint ------------------------------------------------------------------------


def test_stop_closes_open_connections(tmp_path: Path) -> None:
    con = build_state(tmp_path / "state.duckdb")
    settings = settings_for(tmp_path)
    pg = start_pgwire(settings, StateReader.for_connection(con), port=0)
    conn = psycopg.connect(pg.url, autocommit=True, connect_timeout=5)
    assert conn.execute("select 1").fetchone() == (1,)
    pg.stop()
    with pytest.raises(psycopg.OperationalError):
        conn.execute("select 1")
    conn.close()
    con.close()


def test_a_busy_port_names_the_setting(engine: Engine, tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    reader = StateReader.for_connection(engine.con)
    with pytest.raises(ApiError, match="CHANGEFOLD_PGWIRE_PORT"):
        start_pgwire(settings, reader, port=engine.pg.port)
    reader.close()


def test_port_zero_means_not_served(tmp_path: Path) -> None:
    assert enabled(settings_for(tmp_path))
    assert not enabled(settings_for(tmp_path, pgwire_port=0))
