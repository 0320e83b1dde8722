"""Helpers for the query API tests: a small state file, a fingerprint of it, settings."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path
from typing import Any

import duckdb

from engine.core.config import Settings
from engine.state.store import Store

TOPIC = "bank.public.accounts"


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings that ignore the caller's environment; state under tmp_path."""
    values: dict[str, Any] = {
        "home": tmp_path / "home",
        "state_path": tmp_path / "state.duckdb",
        "api_port": free_port(),
    }
    values.update(overrides)
    return Settings.from_env({}, **values)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_state(path: Path, *, internal: bool = True) -> duckdb.DuckDBPyConnection:
    """A state file with demo tables (and the engine's internal tables); the writer stays open.

    The returned connection plays the engine: it is the one writer of the file.
    """
    if internal:
        store = Store(path)
        store.migrate(Settings.from_env({}).state_sql_dir)
        store.close()
    con = duckdb.connect(str(path))
    con.execute(
        """
        CREATE SCHEMA bank;
        CREATE TABLE bank.accounts (
            id INTEGER PRIMARY KEY, owner VARCHAR, balance DECIMAL(18, 2),
            opened TIMESTAMPTZ, tags VARCHAR[], hold INTERVAL);
        INSERT INTO bank.accounts
            SELECT i, 'owner ' || i, (i * 100 + 0.25)::DECIMAL(18, 2),
                   TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_days(i::INTEGER),
                   ['t' || (i % 3)], to_microseconds(i * 1000)
            FROM range(1, 51) AS r(i);
        CREATE TABLE bank.events AS SELECT i AS id, i % 7 AS kind FROM range(5000) AS r(i);
        CREATE SEQUENCE bank.ids;
        """
    )
    return con


def fold_batches(con: duckdb.DuckDBPyConnection, count: int = 3) -> None:
    """Rows as the engine writes them (sql/state/ tables): per batch its figures and each
    partition's progress (10 records, end offset 100 + partition), the offsets, then one
    dead letter and one assignment."""
    now = dt.datetime.now(dt.UTC)
    for i in range(count):
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "INSERT INTO _changefold.batches VALUES "
            "(?, 'g1', 'member-1', ?, 30, 3000, 0, 0, 0, 30, 0, 1.5, 4.0, 2.0, ?, 250.0)",
            [i + 1, now, now - dt.timedelta(milliseconds=250)],
        )
        for p in range(3):
            con.execute(
                "INSERT INTO _changefold.batch_partitions VALUES (?, ?, ?, ?, ?, 10, ?, ?)",
                [i + 1, TOPIC, p, i * 10, i * 10 + 10, 100 + p, 100 + p - (i * 10 + 10)],
            )
            con.execute(
                'INSERT OR REPLACE INTO _changefold.offsets (group_id, topic, "partition", '
                "next_offset, updated_at) VALUES ('g1', ?, ?, ?, ?)",
                [TOPIC, p, i * 10 + 10, now],
            )
        con.execute("COMMIT")
    con.execute("BEGIN TRANSACTION")
    con.execute(
        'INSERT INTO _changefold.dead_letters (id, group_id, topic, "partition", "offset", '
        '"key", "value", error, stage, failed_at) '
        "VALUES (1, 'g1', ?, 1, 7, 'k'::BLOB, 'not json'::BLOB, 'bad JSON', 'decode', now())",
        [TOPIC],
    )
    con.execute(
        "INSERT OR REPLACE INTO _changefold.assignments VALUES ('g1', ?, 0, 'member-1', now())",
        [TOPIC],
    )
    con.execute("COMMIT")


def fingerprint(con: duckdb.DuckDBPyConnection, directory: Path) -> dict[str, Any]:
    """Everything a refused statement could have changed: tables and their rows, views,
    sequences, settings that matter, attached databases, files next to the state."""
    cur = con.cursor()
    try:
        tables = cur.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL"
        ).fetchall()
        contents = {}
        for schema, table in tables:
            name = f'"{schema}"."{table}"'
            contents[name] = cur.execute(
                f"SELECT count(*), md5(string_agg(t::VARCHAR, '|' ORDER BY t::VARCHAR)) "
                f"FROM {name} AS t"
            ).fetchall()
        return {
            "tables": contents,
            "views": cur.execute(
                "SELECT view_name FROM duckdb_views() WHERE NOT internal"
            ).fetchall(),
            "sequences": cur.execute(
                "SELECT sequence_name, last_value FROM duckdb_sequences() ORDER BY ALL"
            ).fetchall(),
            "settings": cur.execute(
                "SELECT name, value FROM duckdb_settings() WHERE name IN ('threads', "
                "'memory_limit', 'enable_external_access', 'autoload_known_extensions', "
                "'autoinstall_known_extensions', 'TimeZone', 'enable_profiling') ORDER BY ALL"
            ).fetchall(),
            "databases": cur.execute(
                "SELECT database_name FROM duckdb_databases() ORDER BY ALL"
            ).fetchall(),
            "macros": cur.execute(
                "SELECT function_name FROM duckdb_functions() WHERE NOT internal ORDER BY ALL"
            ).fetchall(),
            "files": sorted(p.name for p in directory.iterdir()),
        }
    finally:
        cur.close()
