"""What the generator asks Postgres before and after a run.

Connecting (with a clear error when the server is not there), checking that the
domain's schema is loaded, reading where ids and the simulated clock continue,
and moving the key sequences past the ids the generator assigned itself.
Identifiers are composed with `psycopg.sql.Identifier`; values are bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import psycopg
from psycopg import sql

from engine.core.config import Settings
from engine.core.errors import WorkloadError
from engine.lab.workload.plan import EPOCH_US, US_PER_H, to_us


def _table(name: str) -> sql.Composable:
    schema, table = name.split(".", 1)
    return sql.Identifier(schema, table)


def connect(settings: Settings, *, async_commit: bool = False) -> psycopg.Connection:
    """An autocommit connection (the writer opens its own transactions).

    `async_commit` sets synchronous_commit=off for this session: a COMMIT returns
    before its WAL reaches the disk. Transactions stay atomic and ordered; a server
    crash could lose the last fraction of a second of them. It lifts the one-fsync-
    per-transaction ceiling on the generation rate.
    """
    pg = settings.stack
    try:
        return open_connection(settings, async_commit=async_commit)
    except psycopg.Error as exc:
        reason = " ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())
        raise WorkloadError(
            f"cannot connect to Postgres at {pg.pg_host}:{pg.pg_port}, database "
            f"{pg.pg_database!r}: {reason}\n"
            "Fix: start the local stack with `changefold stack up`, or point "
            "CHANGEFOLD_PG_HOST / CHANGEFOLD_PG_PORT / CHANGEFOLD_PG_DATABASE at a running "
            "server."
        ) from exc


def open_connection(settings: Settings, *, async_commit: bool = False) -> psycopg.Connection:
    """`connect` without the friendly error: raises psycopg.Error (reconnect attempts)."""
    conn = psycopg.connect(settings.stack.pg_conninfo(), autocommit=True)
    try:
        if async_commit:
            conn.execute("SET synchronous_commit = off")
    except BaseException:
        conn.close()
        raise
    return conn


def missing_tables(conn: psycopg.Connection, tables: Iterable[str]) -> list[str]:
    missing = []
    for name in tables:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
        if not row or not row[0]:
            missing.append(name)
    return missing


def id_bases(conn: psycopg.Connection, serial_keys: Mapping[str, str]) -> dict[str, int]:
    """First free id per table: above both the largest id and the key sequence."""
    bases = {}
    for table, column in serial_keys.items():
        query = sql.SQL("SELECT coalesce(max({}), 0) FROM {}").format(
            sql.Identifier(column), _table(table)
        )
        row = conn.execute(query).fetchone()
        top = int(row[0]) if row else 0
        seq = conn.execute(
            "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence(%s, %s)::regclass), 0)",
            (table, column),
        ).fetchone()
        bases[table] = max(top, int(seq[0]) if seq else 0) + 1
    return bases


def clock_start(conn: psycopg.Connection, columns: Iterable[tuple[str, str]]) -> int:
    """Where the simulated clock starts: the epoch, or the hour after the newest row."""
    newest: datetime | None = None
    for table, column in columns:
        query = sql.SQL("SELECT max({}) FROM {}").format(sql.Identifier(column), _table(table))
        row = conn.execute(query).fetchone()
        if row and row[0] is not None and (newest is None or row[0] > newest):
            newest = row[0]
    if newest is None:
        return EPOCH_US
    after = to_us(newest)
    return max(EPOCH_US, (after // US_PER_H + 1) * US_PER_H)


def sync_sequences(
    conn: psycopg.Connection, serial_keys: Mapping[str, str], high_water: Mapping[str, int]
) -> None:
    """Move each key sequence to at least the largest id the generator has used, so
    that inserts relying on the column default do not collide with generated rows."""
    for table, top in high_water.items():
        column = serial_keys.get(table)
        if column is None or top < 1:
            continue
        conn.execute(
            "SELECT setval(s, greatest(%s, coalesce(pg_sequence_last_value(s), 0))) "
            "FROM (SELECT pg_get_serial_sequence(%s, %s)::regclass AS s) AS seq",
            (top, table, column),
        )
