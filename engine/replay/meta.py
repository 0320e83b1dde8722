"""The replay's identity row in the state file it builds (see sql/state/020_replays.sql)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import duckdb

from engine.replay.bounds import Offsets
from engine.state.sqlident import INTERNAL_SCHEMA

_TABLE = f"{INTERNAL_SCHEMA}.replays"

#: Consumer group name under which a replay stores its offsets (no Kafka group is joined).
REPLAY_GROUP = "replay"


@dataclass(frozen=True)
class ReplayMeta:
    topics: tuple[str, ...]
    from_spec: str
    until_spec: str
    until_ts: datetime | None
    start_offsets: Offsets
    end_offsets: Offsets
    finished: bool = False

    def same_replay(self, other: ReplayMeta) -> bool:
        return (self.topics, self.from_spec, self.until_spec) == (
            other.topics,
            other.from_spec,
            other.until_spec,
        )

    def describe(self) -> str:
        return f"a replay of {', '.join(self.topics)} from {self.from_spec} until {self.until_spec}"

    @property
    def total(self) -> int:
        return sum(
            max(self.end_offsets[k] - self.start_offsets.get(k, 0), 0) for k in self.end_offsets
        )


def load(conn: duckdb.DuckDBPyConnection) -> ReplayMeta | None:
    try:
        row = conn.execute(
            f"SELECT topics, from_spec, until_spec, until_ts, start_offsets, end_offsets, "
            f"finished_at IS NOT NULL FROM {_TABLE}"
        ).fetchone()
    except duckdb.CatalogException:
        return None
    if row is None:
        return None
    return ReplayMeta(
        topics=tuple(json.loads(row[0])),
        from_spec=row[1],
        until_spec=row[2],
        until_ts=row[3],
        start_offsets=_offsets(row[4]),
        end_offsets=_offsets(row[5]),
        finished=bool(row[6]),
    )


def save(conn: duckdb.DuckDBPyConnection, meta: ReplayMeta) -> None:
    conn.execute(f"DELETE FROM {_TABLE}")
    conn.execute(
        f"INSERT INTO {_TABLE} VALUES (?, ?, ?, ?, ?, ?, now(), NULL)",
        [
            json.dumps(list(meta.topics)),
            meta.from_spec,
            meta.until_spec,
            meta.until_ts,
            json.dumps(_nested(meta.start_offsets)),
            json.dumps(_nested(meta.end_offsets)),
        ],
    )


def mark_finished(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(f"UPDATE {_TABLE} SET finished_at = now()")


def _nested(offsets: Offsets) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        out.setdefault(topic, {})[str(partition)] = offset
    return out


def _offsets(text: str) -> Offsets:
    return {(t, int(p)): int(o) for t, parts in json.loads(text).items() for p, o in parts.items()}
