"""Reduce a table's changes in one batch to the final effect per key (pure, polars).

Within a batch a key's events are ordered by partition offset (one key, one
partition); the last one decides: upsert (c/u/r) or delete (d). A truncate
drops every change before it (ordered by LSN: a TRUNCATE locks its table, so
no change of that table interleaves with it) and empties the mirror first. The
changes at or before a truncate applied in an earlier batch are dropped before
they get here (engine/state/truncates.py).

A value column that the last event did not provide (TOAST placeholder, or
not in that event's schema version) takes the last value an earlier event of
the batch provided; with none, the mirror keeps its stored value.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from engine.decode.model import ABSENT_PREFIX, LSN, OFFSET, OP, PARTITION, TableChanges, absent_flag


@dataclass(frozen=True)
class Upserts:
    """Rows to insert or update that share which columns keep their stored value."""

    keep: tuple[str, ...]
    frame: pl.DataFrame


@dataclass(frozen=True)
class Collapsed:
    truncate: bool
    #: Key and value columns; one row per key.
    upserts: tuple[Upserts, ...]
    #: Key columns of rows to delete.
    deletes: pl.DataFrame

    @property
    def upsert_count(self) -> int:
        return sum(u.frame.height for u in self.upserts)


def collapse(changes: TableChanges) -> Collapsed:
    frame = changes.frame
    key = list(changes.key)
    value_names = [c.name for c in changes.columns]
    ops = frame.get_column(OP)
    truncate = bool((ops == "t").any())
    if truncate:
        frame = _after_last_truncate(frame)

    frame = frame.sort([PARTITION, OFFSET])
    flagged = [
        name
        for name in value_names
        if absent_flag(name) in frame.columns and bool(frame.get_column(absent_flag(name)).any())
    ]
    if not flagged:
        last = frame.unique(subset=key, keep="last", maintain_order=True)
    else:
        provided = {n: ~pl.col(absent_flag(n)) & (pl.col(OP) != "d") for n in flagged}
        plain = [c for c in frame.columns if c not in key and c not in flagged]
        plain = [c for c in plain if not c.startswith(ABSENT_PREFIX)]
        aggs = [pl.col(c).last() for c in plain]
        for name in flagged:
            aggs.append(pl.col(name).filter(provided[name]).last().alias(name))
            aggs.append((~provided[name].any()).alias(absent_flag(name)))
        last = frame.group_by(key, maintain_order=True).agg(aggs)

    last_ops = last.get_column(OP)
    rows = last.filter(last_ops.is_in(("c", "u", "r")))
    deletes = last.filter(last_ops == "d").select(key)
    upserts: list[Upserts] = []
    if not flagged or rows.height == 0:
        upserts.append(Upserts((), rows.select(key + value_names)))
    else:
        flag_cols = [absent_flag(n) for n in flagged]
        patterns = rows.select(flag_cols).unique(maintain_order=True)
        for pattern in patterns.iter_rows():
            keep = tuple(n for n, kept in zip(flagged, pattern, strict=True) if kept)
            match = pl.all_horizontal(
                pl.col(f) if kept else ~pl.col(f)
                for f, kept in zip(flag_cols, pattern, strict=True)
            )
            part = rows.filter(match).select(key + [n for n in value_names if n not in keep])
            upserts.append(Upserts(keep, part))
    return Collapsed(truncate, tuple(u for u in upserts if u.frame.height), deletes)


def _after_last_truncate(frame: pl.DataFrame) -> pl.DataFrame:
    truncates = frame.filter(pl.col(OP) == "t").sort([LSN, PARTITION, OFFSET], nulls_last=False)
    last = truncates.row(truncates.height - 1, named=True)
    rest = frame.filter(pl.col(OP) != "t")
    same_partition_later = (pl.col(PARTITION) == last[PARTITION]) & (pl.col(OFFSET) > last[OFFSET])
    if last[LSN] is None:
        return rest.filter(same_partition_later | (pl.col(PARTITION) != last[PARTITION]))
    later = (
        pl.when(pl.col(LSN).is_null()).then(same_partition_later).otherwise(pl.col(LSN) > last[LSN])
    )
    return rest.filter(later)
