"""Consumed positions stored with the state: the source of truth for where to resume.

Per consumer group and partition, two positions, each the offset *after* a record:
`next_offset`, where to resume reading (the stored offset), and `folded_offset`,
how far it was read and taken in. They differ only while events wait in memory
for their source transaction (engine/state/held.py): resuming re-reads from the
first of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import duckdb

from engine.core.positions import PartitionProgress
from engine.state.sqlident import INTERNAL_SCHEMA

_TABLE = f"{INTERNAL_SCHEMA}.offsets"


def load(conn: duckdb.DuckDBPyConnection, group_id: str) -> dict[tuple[str, int], int]:
    rows = conn.execute(
        f'SELECT topic, "partition", next_offset FROM {_TABLE} WHERE group_id = ?', [group_id]
    ).fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}


def load_folded(conn: duckdb.DuckDBPyConnection, group_id: str) -> dict[tuple[str, int], int]:
    """How far each partition was read and taken in (at least its resume position)."""
    rows = conn.execute(
        f'SELECT topic, "partition", greatest(next_offset, coalesce(folded_offset, 0)) '
        f"FROM {_TABLE} WHERE group_id = ?",
        [group_id],
    ).fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}


def save(
    conn: duckdb.DuckDBPyConnection, group_id: str, progress: Sequence[PartitionProgress]
) -> None:
    """Upsert the next offset of each partition a batch consumed (one statement)."""
    save_positions(
        conn, group_id, {(p.topic, p.partition): (p.next_offset, p.next_offset) for p in progress}
    )


def save_positions(
    conn: duckdb.DuckDBPyConnection,
    group_id: str,
    positions: Mapping[tuple[str, int], tuple[int, int]],
) -> None:
    """Upsert (resume position, folded position) per partition (one statement)."""
    if not positions:
        return
    rows = ", ".join("(?, ?, ?, ?, ?, now())" for _ in positions)
    params: list[object] = []
    for (topic, partition), (resume, folded) in sorted(positions.items()):
        params += [group_id, topic, partition, resume, folded]
    conn.execute(
        f'INSERT INTO {_TABLE} (group_id, topic, "partition", next_offset, folded_offset, '
        f'updated_at) VALUES {rows} ON CONFLICT (group_id, topic, "partition") DO UPDATE SET '
        "next_offset = excluded.next_offset, folded_offset = excluded.folded_offset, "
        "updated_at = excluded.updated_at",
        params,
    )


def stale(
    stored: dict[tuple[str, int], int], progress: Iterable[PartitionProgress]
) -> dict[tuple[str, int], int]:
    """Partitions whose stored offset is already past the start of this batch.

    That happens when another member folded them meanwhile (this one lost the
    partition in a rebalance it has not seen yet). Such a batch must not be
    applied: its caller seeks to the stored offsets and polls again.
    """
    out = {}
    for p in progress:
        have = stored.get((p.topic, p.partition))
        if have is not None and have > p.first_offset:
            out[(p.topic, p.partition)] = have
    return out
