"""Pipeline figures read from the engine's internal tables, for /health and /metrics.

Sources (schema `_changefold`, migrations in sql/state/): `offsets` (next
offset per group/topic/partition), `batches` and `batch_partitions` (figures
per folded batch, bounded), `assignments` (partition owners), `dead_letters`,
`schema_versions`. Each section is read only when its tables exist, so a new
or foreign state file gives the sections it has and the names of the missing
tables, never an error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import duckdb

from engine.state.sqlident import INTERNAL_SCHEMA

S = INTERNAL_SCHEMA

_PARTITIONS_SQL = f"""
WITH latest AS (
    SELECT b.group_id, p.topic, p."partition",
           arg_max(p.end_offset, p.batch_id) AS end_offset,
           max(b.finished_at) AS last_batch_at,
           coalesce(sum(p.records) FILTER (WHERE b.finished_at >= $since), 0)
               AS records_in_window
    FROM {S}.batch_partitions AS p JOIN {S}.batches AS b USING (batch_id)
    GROUP BY ALL
)
SELECT o.group_id, o.topic, o."partition", o.next_offset, l.end_offset,
       greatest(l.end_offset - o.next_offset, 0) AS lag,
       a.member, o.updated_at, l.last_batch_at,
       coalesce(l.records_in_window, 0) AS records_in_window
FROM {S}.offsets AS o
LEFT JOIN latest AS l USING (group_id, topic, "partition")
LEFT JOIN {S}.assignments AS a USING (group_id, topic, "partition")
ORDER BY o.group_id, o.topic, o."partition"
"""

_WINDOW_SQL = f"""
SELECT count(*), coalesce(sum(records), 0), coalesce(sum(bytes), 0),
       coalesce(sum(dead_letters), 0),
       avg(decode_ms), quantile_cont(decode_ms, 0.5), quantile_cont(decode_ms, 0.95),
       max(decode_ms),
       avg(fold_ms), quantile_cont(fold_ms, 0.5), quantile_cont(fold_ms, 0.95), max(fold_ms),
       avg(commit_ms), quantile_cont(commit_ms, 0.5), quantile_cont(commit_ms, 0.95),
       max(commit_ms),
       quantile_cont(freshness_ms, 0.5), quantile_cont(freshness_ms, 0.95)
FROM {S}.batches WHERE finished_at >= $since
"""

_LAST_BATCH_SQL = f"""
SELECT batch_id, group_id, member, finished_at, records, decode_ms, fold_ms, commit_ms,
       newest_source_ts, freshness_ms
FROM {S}.batches ORDER BY batch_id DESC LIMIT 1
"""

_NEWEST_SOURCE_SQL = f"SELECT max(newest_source_ts) FROM {S}.batches"

_DEAD_LETTERS_SQL = f"""
SELECT stage, count(*), max(failed_at) FROM {S}.dead_letters GROUP BY stage ORDER BY stage
"""

_SCHEMA_VERSIONS_SQL = f"""
SELECT count(*), count(DISTINCT (table_schema, table_name)), max(recorded_at)
FROM {S}.schema_versions
"""

_MEMBERS_SQL = f"""
SELECT group_id, member, count(*), list(topic || ':' || "partition" ORDER BY topic, "partition")
FROM {S}.assignments GROUP BY ALL ORDER BY ALL
"""


#: The internal tables the figures come from.
_TABLES = (
    "offsets",
    "batches",
    "batch_partitions",
    "assignments",
    "dead_letters",
    "schema_versions",
)


def internal_tables(cur: duckdb.DuckDBPyConnection) -> set[str]:
    rows = cur.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = ?", [INTERNAL_SCHEMA]
    ).fetchall()
    return {str(r[0]) for r in rows}


def collect(cur: duckdb.DuckDBPyConnection, *, window_s: float, now: dt.datetime) -> dict[str, Any]:
    """Every section whose tables exist (None for the others), and `missing_tables`."""
    present = internal_tables(cur)
    since = now - dt.timedelta(seconds=window_s)
    out: dict[str, Any] = {"generated_at": now.isoformat(), "window_s": window_s}
    needed = _TABLES
    missing = [f"{INTERNAL_SCHEMA}.{t}" for t in needed if t not in present]

    partitions_from = {"offsets", "batches", "batch_partitions", "assignments"}
    out["partitions"] = _partitions(cur, since, window_s) if partitions_from <= present else None
    if "batches" in present:
        window = cur.execute(_WINDOW_SQL, {"since": since}).fetchall()[0]
        last = _last_batch(cur)
        newest = cur.execute(_NEWEST_SOURCE_SQL).fetchall()[0][0]
        out["throughput"] = _throughput(window, window_s)
        out["batches"] = _timings(window) | {"last": _public_batch(last)}
        out["freshness"] = _freshness(window, last, newest, now)
    else:
        out["throughput"] = out["batches"] = out["freshness"] = None
    out["dead_letters"] = _dead_letters(cur) if "dead_letters" in present else None
    out["schema_versions"] = _schema_versions(cur) if "schema_versions" in present else None
    out["members"] = _members(cur) if "assignments" in present else None
    out["missing_tables"] = missing
    return out


def health(cur: duckdb.DuckDBPyConnection, *, now: dt.datetime) -> dict[str, Any]:
    """The newest batch's time, age and freshness (None when there is none yet)."""
    last = _last_batch(cur) if "batches" in internal_tables(cur) else None
    return {
        "last_batch_at": _iso(last[3]) if last else None,
        "last_batch_age_s": _age_s(now, last[3]) if last else None,
        "freshness_ms": last[9] if last else None,
    }


# -- sections -----------------------------------------------------------------------------


def _partitions(
    cur: duckdb.DuckDBPyConnection, since: dt.datetime, window_s: float
) -> list[dict[str, Any]]:
    rows = cur.execute(_PARTITIONS_SQL, {"since": since}).fetchall()
    return [
        {
            "group_id": r[0],
            "topic": r[1],
            "partition": r[2],
            "next_offset": r[3],
            "end_offset": r[4],
            "lag": r[5],
            "member": r[6],
            "updated_at": _iso(r[7]),
            "last_batch_at": _iso(r[8]),
            "records_in_window": int(r[9]),
            "records_per_s": round(int(r[9]) / window_s, 3),
        }
        for r in rows
    ]


def _throughput(r: Sequence[Any], window_s: float) -> dict[str, Any]:
    return {
        "batches": int(r[0]),
        "records": int(r[1]),
        "bytes": int(r[2]),
        "dead_letters": int(r[3]),
        "records_per_s": round(int(r[1]) / window_s, 3),
        "bytes_per_s": round(int(r[2]) / window_s, 3),
        "batches_per_s": round(int(r[0]) / window_s, 3),
    }


def _timings(r: Sequence[Any]) -> dict[str, Any]:
    return {
        "count": int(r[0]),
        "decode_ms": _stats(r[4:8]),
        "fold_ms": _stats(r[8:12]),
        "commit_ms": _stats(r[12:16]),
    }


def _stats(values: Sequence[Any]) -> dict[str, float | None]:
    return {name: _round(v) for name, v in zip(("avg", "p50", "p95", "max"), values, strict=True)}


def _last_batch(cur: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    rows = cur.execute(_LAST_BATCH_SQL).fetchall()
    return tuple(rows[0]) if rows else None


def _public_batch(r: tuple[Any, ...] | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "batch_id": r[0],
        "group_id": r[1],
        "member": r[2],
        "finished_at": _iso(r[3]),
        "records": r[4],
        "decode_ms": _round(r[5]),
        "fold_ms": _round(r[6]),
        "commit_ms": _round(r[7]),
        "newest_source_ts": _iso(r[8]),
        "freshness_ms": _round(r[9]),
    }


def _freshness(
    window: Sequence[Any], last: tuple[Any, ...] | None, newest: Any, now: dt.datetime
) -> dict[str, Any]:
    return {
        # end to end (source commit -> folded) of the newest batch, and over the window
        "freshness_ms": _round(last[9]) if last else None,
        "freshness_ms_p50": _round(window[16]),
        "freshness_ms_p95": _round(window[17]),
        "last_batch_at": _iso(last[3]) if last else None,
        "last_batch_age_s": _age_s(now, last[3]) if last else None,
        # the newest source change folded into the state, and how old it is now
        "newest_source_ts": _iso(newest),
        "newest_source_age_s": _age_s(now, newest),
    }


def _dead_letters(cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    rows = cur.execute(_DEAD_LETTERS_SQL).fetchall()
    latest = max((r[2] for r in rows if r[2] is not None), default=None)
    return {
        "total": sum(int(r[1]) for r in rows),
        "by_stage": {str(r[0]): int(r[1]) for r in rows},
        "latest_at": _iso(latest),
    }


def _schema_versions(cur: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    r = cur.execute(_SCHEMA_VERSIONS_SQL).fetchall()[0]
    return {"versions": int(r[0]), "tables": int(r[1]), "latest_at": _iso(r[2])}


def _members(cur: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = cur.execute(_MEMBERS_SQL).fetchall()
    return [
        {"group_id": r[0], "member": r[1], "partitions": int(r[2]), "assigned": list(r[3])}
        for r in rows
    ]


# -- helpers -------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else None


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _age_s(now: dt.datetime, then: Any) -> float | None:
    if not isinstance(then, dt.datetime):
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=dt.UTC)
    return round((now - then).total_seconds(), 3)
