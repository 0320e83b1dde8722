"""Stage a batch's before/after rows as typed temp tables for the views' SQL.

For each mirror table the views read, two temp tables exist while the views run:
`_before_<schema>_<table>` and `_after_<schema>_<table>`, with exactly the
mirror's columns and types (a column missing from the engine's frame is NULL;
the frame's values are cast to the mirror's types). A table the batch did not
change gets empty ones, so the SQL of every view that runs binds. Only the tables
of the views that run in a batch are staged (`stage_inputs(tables=...)`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

import duckdb
import polars as pl

from engine.state.deltas import MirrorDelta
from engine.views.sqlfiles import quote, quote_table

_frames = itertools.count()


def input_name(side: str, table: str) -> str:
    """`before`, `bank.transactions` -> `_before_bank_transactions`."""
    return f"_{side}_{table.replace('.', '_')}"


def mirror_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(mirror_columns(con, table))


def mirror_columns(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple[str, str]]:
    schema, _, name = table.partition(".")
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [schema, name],
    ).fetchall()
    return [(str(c), str(t)) for c, t in rows]


def moved(change: MirrorDelta) -> bool:
    """Whether a delta changes the mirror at all: False when every key's before-row
    equals its after-row (events delivered again), or when it holds no row."""
    before, after = change.before, change.after
    if change.truncated or before.height != after.height or before.schema != after.schema:
        return True
    if before.height == 0:
        return False
    # Same rows in any order: order both by a hash of the whole row, then compare exactly
    # (two different rows with one hash can only make this say "moved").
    try:
        b = before.with_columns(before.hash_rows().alias("__row_hash")).sort("__row_hash")
        a = after.with_columns(after.hash_rows().alias("__row_hash")).sort("__row_hash")
        return not b.equals(a)
    except pl.exceptions.PolarsError:
        return True


def stage_inputs(
    con: duckdb.DuckDBPyConnection,
    tables: Iterable[str],
    changes: Mapping[str, MirrorDelta],
    *,
    full: Iterable[str] = (),
) -> None:
    """(Re)create the input temp tables of `tables`. Tables in `full` get the whole
    mirror as their after-rows and no before-rows (a rebuild from scratch).

    The mirror's columns and types come with the delta when the fold captured them
    (`MirrorDelta.columns`); else they are looked up, only for a table with rows."""
    full = set(full)
    for table in tables:
        columns: list[tuple[str, str]] | None = None
        for side in ("before", "after"):
            target = quote(input_name(side, table))
            if table in full:
                source = f"SELECT * FROM {quote_table(table)}"
                if side == "before":
                    source += " LIMIT 0"
                con.execute(f"CREATE OR REPLACE TEMP TABLE {target} AS {source}")
                continue
            change = changes.get(table)
            frame = getattr(change, side) if change is not None else None
            if frame is None or frame.height == 0:
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE {target} AS "
                    f"SELECT * FROM {quote_table(table)} LIMIT 0"
                )
                continue
            if columns is None:
                known = change.columns if change is not None else None
                columns = list(known) if known else mirror_columns(con, table)
            _stage_frame(con, target, columns, frame)


def _stage_frame(
    con: duckdb.DuckDBPyConnection,
    target: str,
    columns: list[tuple[str, str]],
    frame: pl.DataFrame,
) -> None:
    view = f"__views_frame_{next(_frames)}"
    have = set(frame.columns)
    select = ", ".join(
        f"CAST({quote(c)} AS {t}) AS {quote(c)}"
        if c in have
        else f"CAST(NULL AS {t}) AS {quote(c)}"
        for c, t in columns
    )
    con.register(view, frame.to_arrow())
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {target} AS SELECT {select} FROM {quote(view)}")
    finally:
        con.unregister(view)


def drop_inputs(con: duckdb.DuckDBPyConnection, tables: Iterable[str]) -> None:
    """Drop the input temp tables (ignored after a failed statement: DuckDB refuses
    everything until the caller rolls back, and a rollback drops them)."""
    for table in tables:
        for side in ("before", "after"):
            try:
                con.execute(f"DROP TABLE IF EXISTS {quote(input_name(side, table))}")
            except duckdb.Error:
                return
