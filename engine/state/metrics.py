"""Per-batch figures in a bounded table (the health API and dashboards read them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from engine.core.positions import PartitionProgress
from engine.state.sqlident import INTERNAL_SCHEMA

_BATCHES = f"{INTERNAL_SCHEMA}.batches"
_PARTITIONS = f"{INTERNAL_SCHEMA}.batch_partitions"


@dataclass(frozen=True, slots=True)
class BatchMetrics:
    """Figures of one folded batch, kept in the bounded metrics table."""

    member: str
    records: int
    bytes: int
    tombstones: int
    skipped: int
    dead_letters: int
    upserts: int
    deletes: int
    decode_ms: float
    fold_ms: float
    #: Newest `source.ts_ms` folded (None when the batch held no change events).
    newest_source_ts_ms: int | None


def next_batch_id(conn: duckdb.DuckDBPyConnection) -> int:
    """The next batch id, inside the batch's transaction (under the writer lock).

    Not a DuckDB sequence: after a crash a sequence may hand out a value again.
    """
    (row,) = conn.execute(f"SELECT coalesce(max(batch_id), 0) + 1 FROM {_BATCHES}").fetchall()
    return int(row[0])


def record(
    conn: duckdb.DuckDBPyConnection,
    batch_id: int,
    group_id: str,
    metrics: BatchMetrics,
    progress: Sequence[PartitionProgress],
    *,
    keep: int,
) -> None:
    """Insert one batch's figures; drop batches beyond the newest `keep`."""
    now = datetime.now(UTC)
    newest = (
        datetime.fromtimestamp(metrics.newest_source_ts_ms / 1000, UTC)
        if metrics.newest_source_ts_ms is not None
        else None
    )
    freshness = (now - newest).total_seconds() * 1000 if newest is not None else None
    conn.execute(
        f"INSERT INTO {_BATCHES} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
        [
            batch_id,
            group_id,
            metrics.member,
            now,
            metrics.records,
            metrics.bytes,
            metrics.tombstones,
            metrics.skipped,
            metrics.dead_letters,
            metrics.upserts,
            metrics.deletes,
            metrics.decode_ms,
            metrics.fold_ms,
            newest,
            freshness,
        ],
    )
    if progress:
        rows = ", ".join("(?, ?, ?, ?, ?, ?, ?, ?)" for _ in progress)
        params: list[object] = []
        for p in progress:
            params += [
                batch_id,
                p.topic,
                p.partition,
                p.first_offset,
                p.next_offset,
                p.records,
                p.end_offset,
                p.lag,
            ]
        conn.execute(f"INSERT INTO {_PARTITIONS} VALUES {rows}", params)
    if batch_id % 100 == 0:
        # Pruning every 100th batch keeps the table within keep + 100 rows.
        conn.execute(f"DELETE FROM {_BATCHES} WHERE batch_id <= ?", [batch_id - keep])
        conn.execute(f"DELETE FROM {_PARTITIONS} WHERE batch_id <= ?", [batch_id - keep])


def set_commit_ms(conn: duckdb.DuckDBPyConnection, batch_id: int, commit_ms: float) -> None:
    conn.execute(f"UPDATE {_BATCHES} SET commit_ms = ? WHERE batch_id = ?", [commit_ms, batch_id])
