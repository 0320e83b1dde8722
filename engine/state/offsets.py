"""Consumed positions stored with the state: the source of truth for where to resume.

A stored offset is the position *after* the last folded record of a partition
(the next offset to read), per consumer group.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import duckdb

from engine.core.positions import PartitionProgress
from engine.state.sqlident import INTERNAL_SCHEMA

_TABLE = f"{INTERNAL_SCHEMA}.offsets"


def load(conn: duckdb.DuckDBPyConnection, group_id: str) -> dict[tuple[str, int], int]:
    rows = conn.execute(
        f'SELECT topic, "partition", next_offset FROM {_TABLE} WHERE group_id = ?', [group_id]
    ).fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}


def save(
    conn: duckdb.DuckDBPyConnection, group_id: str, progress: Sequence[PartitionProgress]
) -> None:
    """Upsert the next offset of each partition a batch consumed (one statement)."""
    if not progress:
        return
    rows = ", ".join("(?, ?, ?, ?, now())" for _ in progress)
    params: list[object] = []
    for p in progress:
        params += [group_id, p.topic, p.partition, p.next_offset]
    conn.execute(
        f'INSERT INTO {_TABLE} (group_id, topic, "partition", next_offset, updated_at) '
        f'VALUES {rows} ON CONFLICT (group_id, topic, "partition") DO UPDATE SET '
        "next_offset = excluded.next_offset, updated_at = excluded.updated_at",
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
