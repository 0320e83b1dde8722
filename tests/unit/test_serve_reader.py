"""DuckDB's own guards, which the query API relies on first, and what the engine keeps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest
from serve_support import build_state

from engine.core.errors import ApiError, StateLockedError
from engine.state.reader import StateReader


@pytest.fixture
def writer(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = build_state(tmp_path / "state.duckdb", internal=False)
    yield con
    con.close()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM '{dir}/secret.csv'",
        "SELECT * FROM read_csv('{dir}/secret.csv')",
        "SELECT * FROM glob('/etc/*')",
        "COPY bank.events TO '{dir}/leak.csv'",
        "ATTACH '{dir}/other.duckdb' AS other",
        "INSTALL httpfs",
    ],
)
def test_settings_alone_stop_external_access(
    writer: duckdb.DuckDBPyConnection, tmp_path: Path, sql: str
) -> None:
    """Without the statement check: the database-wide setting refuses files and installs."""
    (tmp_path / "secret.csv").write_text("a,b\n1,2\n")
    reader = StateReader.for_connection(writer)
    raw = writer.cursor()
    with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
        raw.execute(sql.format(dir=tmp_path))
    assert not (tmp_path / "leak.csv").exists()
    reader.close()


def test_engine_connection_keeps_working_after_hardening(
    writer: duckdb.DuckDBPyConnection,
) -> None:
    """The engine registers frames by name and writes; hardening must not break that."""
    reader = StateReader.for_connection(writer)
    frame = pl.DataFrame({"id": [9001, 9002], "kind": [1, 2]})
    writer.register("incoming", frame.to_arrow())
    writer.execute("BEGIN TRANSACTION")
    writer.execute("INSERT INTO bank.events SELECT id, kind FROM incoming")
    writer.execute("COMMIT")
    writer.unregister("incoming")
    writer.from_arrow(frame.to_arrow()).insert_into("bank.events")
    writer.execute("CHECKPOINT")
    assert writer.execute("SELECT count(*) FROM bank.events").fetchall() == [(5004,)]
    # engine-side settings may still change (the configuration is not locked in the engine)
    writer.execute("SET TimeZone = 'UTC'")
    with reader.cursor() as cur:
        assert cur.execute("SELECT count(*) FROM bank.events").fetchall() == [(5004,)]
    reader.close()
    # closing the reader leaves the engine's connection open
    assert writer.execute("SELECT 1").fetchall() == [(1,)]


def test_read_cursor_is_a_read_only_transaction(writer: duckdb.DuckDBPyConnection) -> None:
    reader = StateReader.for_connection(writer)
    with reader.cursor() as cur, pytest.raises(duckdb.TransactionException, match="read-only"):
        cur.execute("INSERT INTO bank.events VALUES (-1, -1)")
    with reader.cursor() as cur, pytest.raises(duckdb.TransactionException, match="read-only"):
        cur.execute("SELECT nextval('bank.ids')")
    assert writer.execute("SELECT count(*) FROM bank.events WHERE id < 0").fetchall() == [(0,)]
    reader.close()


def test_open_file_locks_the_configuration(tmp_path: Path) -> None:
    build_state(tmp_path / "state.duckdb", internal=False).close()
    reader = StateReader.open_file(tmp_path / "state.duckdb")
    assert reader.mode == "file"
    with reader.cursor() as cur, pytest.raises(duckdb.InvalidInputException, match="locked"):
        cur.execute("SET enable_external_access = true")
    with reader.cursor() as cur:
        assert cur.execute("SELECT count(*) FROM bank.accounts").fetchall() == [(50,)]
    reader.close()


def test_open_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ApiError, match="changefold run"):
        StateReader.open_file(tmp_path / "none.duckdb")


def test_open_file_held_by_another_process_points_at_the_api(tmp_path: Path) -> None:
    path = tmp_path / "state.duckdb"
    build_state(path, internal=False).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('open', flush=True); "
            "sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StateLockedError, match="CHANGEFOLD_API_PORT"):
            StateReader.open_file(path)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def test_query_cursors_print_no_progress_bar(
    writer: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    """A long query must not draw DuckDB's progress bar into the engine's output."""
    setting = "SELECT current_setting('enable_progress_bar')"
    reader = StateReader.for_connection(writer)
    with reader.cursor() as cur:
        assert cur.execute(setting).fetchall() == [(False,)]
    reader.close()
    writer.close()
    from_file = StateReader.open_file(tmp_path / "state.duckdb")
    with from_file.cursor() as cur:
        assert cur.execute(setting).fetchall() == [(False,)]
    from_file.close()
