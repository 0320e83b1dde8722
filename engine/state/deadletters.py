"""The dead-letter table: events that could not be decoded or applied."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import polars as pl

from engine.decode.model import DeadLetter
from engine.state.sqlident import INTERNAL_SCHEMA

_TABLE = f"{INTERNAL_SCHEMA}.dead_letters"


def insert(conn: duckdb.DuckDBPyConnection, group_id: str, letters: Sequence[DeadLetter]) -> None:
    """Write dead letters in the caller's transaction (one statement)."""
    if not letters:
        return
    frame = pl.DataFrame(
        {
            "topic": [d.topic for d in letters],
            "partition": [d.partition for d in letters],
            "offset": [d.offset for d in letters],
            "key": [d.key for d in letters],
            "value": [d.value for d in letters],
            "error": [d.error for d in letters],
            "stage": [d.stage for d in letters],
        },
        schema={
            "topic": pl.String(),
            "partition": pl.Int32(),
            "offset": pl.Int64(),
            "key": pl.Binary(),
            "value": pl.Binary(),
            "error": pl.String(),
            "stage": pl.String(),
        },
    )
    conn.register("__changefold_dead_letters", frame.to_arrow())
    try:
        conn.execute(
            f'INSERT INTO {_TABLE} (id, group_id, topic, "partition", "offset", "key", "value", '
            "error, stage, failed_at) "
            f"SELECT (SELECT coalesce(max(id), 0) FROM {_TABLE}) + row_number() OVER (), "
            '?, topic, "partition", "offset", "key", "value", error, stage, now() '
            "FROM __changefold_dead_letters",
            [group_id],
        )
    finally:
        conn.unregister("__changefold_dead_letters")


@dataclass(frozen=True)
class StoredDeadLetter:
    id: int
    group_id: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str
    stage: str
    failed_at: datetime


def listing(
    conn: duckdb.DuckDBPyConnection, *, limit: int = 50, topic: str | None = None
) -> list[StoredDeadLetter]:
    """The newest dead letters first."""
    where, params = ("WHERE topic = ?", [topic]) if topic else ("", [])
    rows = conn.execute(
        f'SELECT id, group_id, topic, "partition", "offset", "key", "value", error, stage, '
        f"failed_at FROM {_TABLE} {where} ORDER BY id DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [_stored(r) for r in rows]


def _stored(r: tuple[Any, ...]) -> StoredDeadLetter:
    return StoredDeadLetter(
        int(r[0]),
        str(r[1]),
        str(r[2]),
        int(r[3]),
        int(r[4]),
        bytes(r[5]) if r[5] is not None else None,
        bytes(r[6]) if r[6] is not None else None,
        str(r[7]),
        str(r[8]),
        r[9],
    )


def selection(
    conn: duckdb.DuckDBPyConnection,
    group_id: str,
    *,
    topic: str | None = None,
    ids: Sequence[int] = (),
) -> list[StoredDeadLetter]:
    """A group's dead letters (all, or of one topic, or these ids), oldest first."""
    rows = conn.execute(
        f'SELECT id, group_id, topic, "partition", "offset", "key", "value", error, stage, '
        f"failed_at FROM {_TABLE} WHERE group_id = ? AND (? IS NULL OR topic = ?) "
        "AND (len(?) = 0 OR list_contains(?, id)) ORDER BY id",
        [group_id, topic, topic, list(ids), list(ids)],
    ).fetchall()
    return [_stored(r) for r in rows]


def positions(conn: duckdb.DuckDBPyConnection, group_id: str) -> set[tuple[str, int, int]]:
    """(topic, partition, offset) of every dead letter of a group."""
    rows = conn.execute(
        f'SELECT topic, "partition", "offset" FROM {_TABLE} WHERE group_id = ?', [group_id]
    ).fetchall()
    return {(str(t), int(p), int(o)) for t, p, o in rows}


def delete(conn: duckdb.DuckDBPyConnection, ids: Sequence[int]) -> None:
    """Take these dead letters out, in the caller's transaction (settled by a redrive)."""
    if ids:
        conn.execute(f"DELETE FROM {_TABLE} WHERE list_contains(?, id)", [list(ids)])


def count(conn: duckdb.DuckDBPyConnection) -> int:
    (row,) = conn.execute(f"SELECT count(*) FROM {_TABLE}").fetchall()
    return int(row[0])
