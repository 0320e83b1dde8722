"""Which member owns which partition (for status output and the health API)."""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

from engine.state.sqlident import INTERNAL_SCHEMA

_TABLE = f"{INTERNAL_SCHEMA}.assignments"


def replace_member(
    conn: duckdb.DuckDBPyConnection,
    group_id: str,
    member: str,
    partitions: Sequence[tuple[str, int]],
) -> None:
    """Record `member`'s current partitions (taking them over from any other member)."""
    conn.execute(f"DELETE FROM {_TABLE} WHERE group_id = ? AND member = ?", [group_id, member])
    if not partitions:
        return
    rows = ", ".join("(?, ?, ?, ?, now())" for _ in partitions)
    params: list[object] = []
    for topic, partition in partitions:
        params += [group_id, topic, partition, member]
    conn.execute(
        f'INSERT INTO {_TABLE} (group_id, topic, "partition", member, assigned_at) VALUES {rows} '
        'ON CONFLICT (group_id, topic, "partition") DO UPDATE SET member = excluded.member, '
        "assigned_at = excluded.assigned_at",
        params,
    )


def current(conn: duckdb.DuckDBPyConnection, group_id: str) -> list[tuple[str, str, int]]:
    """(member, topic, partition) rows, ordered."""
    rows = conn.execute(
        f'SELECT member, topic, "partition" FROM {_TABLE} WHERE group_id = ? ORDER BY 1, 2, 3',
        [group_id],
    ).fetchall()
    return [(str(m), str(t), int(p)) for m, t, p in rows]
