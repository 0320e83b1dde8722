"""The last truncate applied to each mirror, and the events it makes stale.

A TRUNCATE locks its table: every change of the table made before it has an older
source LSN (its transaction committed before the truncate), every change after it
a newer one. Within a batch the fold drops what comes before a truncate
(engine/state/collapse.py). Across batches, an event read after its table's
truncate was applied, with an LSN at or before that truncate's, is dropped here,
by the same rule: a snapshot row (no transaction block, applied as it comes) read
from another partition than the truncate, a change or truncate sent again, or an
event of a transaction whose END came after the truncate's from another partition
of the transaction topic. So a truncated table stays truncated whatever the batch
cuts or the order in which partitions are read. Events without an LSN are kept
(nothing to order them by; within a batch collapse orders them by offset).

`_changefold.truncates` holds each mirror's last truncate LSN, written in the
batch's transaction; the writer keeps a copy in memory, read once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import duckdb
import polars as pl

from engine.decode.model import LSN, OP, MirrorName, TableChanges
from engine.state.sqlident import INTERNAL_SCHEMA

_TRUNCATES = f"{INTERNAL_SCHEMA}.truncates"


@dataclass(frozen=True)
class Stale:
    """A batch's changes without the events at or before their mirror's last truncate."""

    #: The tables to fold (one whose events were all truncates, all stale, is left out).
    tables: tuple[TableChanges, ...]
    #: Events dropped, per mirror.
    dropped: dict[MirrorName, int]


def load(conn: duckdb.DuckDBPyConnection) -> dict[MirrorName, int]:
    """The last truncate LSN of every mirror ever truncated (one row per mirror)."""
    rows = conn.execute(f"SELECT table_schema, table_name, lsn FROM {_TRUNCATES}").fetchall()
    return {MirrorName(str(s), str(t)): int(lsn) for s, t, lsn in rows}


def drop_stale(tables: Sequence[TableChanges], last: Mapping[MirrorName, int]) -> Stale:
    """Each table's events but those whose LSN is at or before its mirror's `last`
    truncate. A table left with no event keeps its place when it has a key (its
    mirror and schema versions are recorded as in one batch) and is left out when it
    has none (it held only truncates)."""
    kept: list[TableChanges] = []
    dropped: dict[MirrorName, int] = {}
    for changes in tables:
        lsn = last.get(changes.mirror)
        if lsn is None:
            kept.append(changes)
            continue
        frame = changes.frame.filter(~_at_or_before(lsn))
        gone = changes.frame.height - frame.height
        if not gone:
            kept.append(changes)
            continue
        dropped[changes.mirror] = dropped.get(changes.mirror, 0) + gone
        if frame.height or changes.versions[-1].schema.key:
            kept.append(replace(changes, frame=frame))
    return Stale(tuple(kept), dropped)


def newest(tables: Iterable[TableChanges]) -> dict[MirrorName, int]:
    """The greatest truncate LSN per mirror among the tables' events (truncates without
    an LSN are not counted)."""
    out: dict[MirrorName, int] = {}
    for changes in tables:
        lsns = changes.frame.filter(pl.col(OP) == "t").get_column(LSN)
        top = lsns.cast(pl.Int64, strict=False).max()
        if isinstance(top, int):
            out[changes.mirror] = max(top, out.get(changes.mirror, top))
    return out


def merged(last: Mapping[MirrorName, int], new: Mapping[MirrorName, int]) -> dict[MirrorName, int]:
    """`last` with `new` truncates taken in (an LSN never moves back)."""
    out = dict(last)
    for mirror, lsn in new.items():
        out[mirror] = max(lsn, out.get(mirror, lsn))
    return out


def record(conn: duckdb.DuckDBPyConnection, new: Mapping[MirrorName, int], batch_id: int) -> None:
    """Inside the batch's transaction: remember the batch's truncates (the greater LSN
    wins)."""
    if not new:
        return
    mirrors = sorted(new, key=str)
    schemas, names = [m.schema for m in mirrors], [m.table for m in mirrors]
    lsns = [new[m] for m in mirrors]
    conn.execute(
        f"INSERT INTO {_TRUNCATES} SELECT unnest(?), unnest(?), unnest(?), ? "
        "ON CONFLICT (table_schema, table_name) DO UPDATE SET "
        f"lsn = greatest({_TRUNCATES}.lsn, excluded.lsn), batch_id = CASE WHEN "
        f"excluded.lsn > {_TRUNCATES}.lsn THEN excluded.batch_id ELSE {_TRUNCATES}.batch_id END",
        [schemas, names, lsns, batch_id],
    )


def _at_or_before(lsn: int) -> pl.Expr:
    """Events with an LSN at or before `lsn` (null LSN: no)."""
    return (pl.col(LSN).cast(pl.Int64, strict=False) <= lsn).fill_null(False)
