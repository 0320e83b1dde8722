"""Apply one table's collapsed changes to its mirror, set-wise.

Frames are handed to DuckDB whole (registered Arrow data): one DELETE for the
batch's deleted keys, one INSERT ... ON CONFLICT DO UPDATE per group of rows
that keep the same stored columns. Runs inside the caller's transaction.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import ClassVar

import duckdb
import polars as pl

from engine.decode.model import TableChanges
from engine.state.catalog import Catalog
from engine.state.collapse import Collapsed, collapse
from engine.state.deltas import MirrorDelta
from engine.state.sqlident import quote

log = logging.getLogger(__name__)

_names = itertools.count()


@dataclass(frozen=True)
class TableResult:
    upserts: int
    deletes: int
    truncated: bool
    #: Schema versions recorded for the first time.
    new_versions: int
    #: Before/after rows of the changed keys (only when asked for).
    delta: MirrorDelta | None = None


def apply_changes(
    conn: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    changes: TableChanges,
    *,
    capture: bool = False,
) -> TableResult:
    """Fold one table's changes of a batch into its mirror (DDL first, then data).

    With `capture`, the result carries the changed keys' rows before and after.
    """
    latest = changes.versions[-1].schema
    if not latest.key:
        # Only keyless events: truncates (the decoder rejects keyless row changes).
        exists = bool(catalog.mirror_types(conn, changes.mirror))
        delta = None
        if exists:
            target = catalog.target(conn, changes.mirror)
            conn.execute(f"DELETE FROM {target}")
            if capture:
                types = catalog.mirror_types(conn, changes.mirror)
                empty = _rows_of(conn, target, None, [], types)
                delta = MirrorDelta(
                    changes.mirror, empty, empty, truncated=True, columns=tuple(types.items())
                )
        return TableResult(0, 0, exists, 0, delta)
    catalog.ensure_mirror(conn, changes.mirror, latest.key, changes.columns)
    new_versions = catalog.record_versions(conn, changes.versions)
    types = catalog.mirror_types(conn, changes.mirror)
    target = catalog.target(conn, changes.mirror)
    result = collapse(changes)
    key = list(changes.key)
    delta = None
    if not capture:
        _write_rows(conn, changes, result, target, key, types)
    else:
        # The touched keys are registered once, for the rows before and after the write.
        with _registered(conn, _touched_keys(result, key)) as touched:
            before = _rows_of(conn, target, touched, key, types)
            _write_rows(conn, changes, result, target, key, types)
            after = _rows_of(conn, target, touched, key, types)
        delta = MirrorDelta(
            changes.mirror, before, after, truncated=result.truncate, columns=tuple(types.items())
        )
    return TableResult(
        result.upsert_count, result.deletes.height, result.truncate, new_versions, delta
    )


def _write_rows(
    conn: duckdb.DuckDBPyConnection,
    changes: TableChanges,
    result: Collapsed,
    target: str,
    key: list[str],
    types: dict[str, str],
) -> None:
    """The batch's truncate, deletes and upserts of one mirror."""
    if result.truncate:
        conn.execute(f"DELETE FROM {target}")
        log.info("%s: truncated (topic %s)", changes.mirror, changes.topic)

    if result.deletes.height:
        with _registered(conn, result.deletes) as view:
            match = " AND ".join(
                f"{target}.{quote(k)} = CAST(d.{quote(k)} AS {types[k]})" for k in key
            )
            conn.execute(f"DELETE FROM {target} USING {view} AS d WHERE {match}")

    for part in result.upserts:
        columns = list(part.frame.columns)
        values = [c for c in columns if c not in key]
        select = ", ".join(_cast(c, types[c]) for c in columns)
        if values:
            updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in values)
            conflict = f"DO UPDATE SET {updates}"
        else:
            conflict = "DO NOTHING"
        with _registered(conn, part.frame) as view:
            conn.execute(
                f"INSERT INTO {target} ({', '.join(quote(c) for c in columns)}) "
                f"SELECT {select} FROM {view} "
                f"ON CONFLICT ({', '.join(quote(k) for k in key)}) {conflict}"
            )


def _touched_keys(result: Collapsed, key: list[str]) -> pl.DataFrame:
    frames = [u.frame.select(key) for u in result.upserts] + [result.deletes.select(key)]
    return pl.concat(frames, how="vertical_relaxed")


def _rows_of(
    conn: duckdb.DuckDBPyConnection,
    target: str,
    keys: str | None,
    key: list[str],
    types: dict[str, str],
) -> pl.DataFrame:
    """The mirror rows of the keys in the registered frame `keys` (a semi-join; None or
    no key columns: no row, in the mirror's shape)."""
    columns = ", ".join(_polars_safe(name, duck_type) for name, duck_type in types.items())
    if keys is None or not key:
        return conn.sql(f"SELECT {columns} FROM {target} AS m WHERE false").pl()
    # The keys are cast in a subquery, not in the join condition: with the cast in a
    # correlated EXISTS, DuckDB 2.0 took ~5x the CPU over the whole mirror (a semi-join of
    # 100 keys against 300k rows: 48 against 10 ms).
    cast = ", ".join(f"CAST({quote(k)} AS {types[k]}) AS {quote(k)}" for k in key)
    match = " AND ".join(f"m.{quote(k)} = k.{quote(k)}" for k in key)
    return conn.sql(
        f"SELECT {columns} FROM {target} AS m SEMI JOIN (SELECT {cast} FROM {keys}) AS k ON {match}"
    ).pl()


#: DuckDB types polars cannot hold: handed to observers as their text form.
_AS_TEXT = ("INTERVAL", "TIME WITH TIME ZONE")


def _polars_safe(name: str, duck_type: str) -> str:
    column = f"m.{quote(name)}"
    if duck_type in _AS_TEXT or any(duck_type.startswith(t + "[") for t in _AS_TEXT):
        text = "VARCHAR[]" if duck_type.endswith("[]") else "VARCHAR"
        return f"CAST({column} AS {text}) AS {quote(name)}"
    return column


def _cast(name: str, duck_type: str) -> str:
    """A frame column as the mirror column's type: `ensure_mirror` has just given each
    value column its latest spec's type (the key columns keep the mirror's), so the
    column's spec has nothing to add."""
    return f"CAST({quote(name)} AS {duck_type})"


class _registered:
    """Register a frame as a uniquely named view for the duration of a block.

    After a failed statement DuckDB refuses everything until ROLLBACK, so a
    view that cannot be unregistered then is dropped on the next registration.
    """

    _leftover: ClassVar[list[tuple[duckdb.DuckDBPyConnection, str]]] = []

    def __init__(self, conn: duckdb.DuckDBPyConnection, frame: pl.DataFrame) -> None:
        self.conn = conn
        self.frame = frame
        self.name = f"__changefold_frame_{next(_names)}"

    def __enter__(self) -> str:
        leftover, _registered._leftover = _registered._leftover, []
        for conn, name in leftover:
            try:
                conn.unregister(name)
            except duckdb.Error:
                _registered._leftover.append((conn, name))
        self.conn.register(self.name, self.frame.to_arrow())
        return quote(self.name)

    def __exit__(self, *exc: object) -> None:
        try:
            self.conn.unregister(self.name)
        except duckdb.Error:
            _registered._leftover.append((self.conn, self.name))
