"""A consistent copy of a state into a new DuckDB file, read in one transaction.

DuckDB lets one process open a state file, and a plain copy of the file misses
its WAL; so the engine writes a snapshot on request (`POST /snapshot`, `changefold
snapshot --into FILE`). Every row is read through one cursor inside one
read-only transaction (`StateReader.cursor()`, the read path of every query):
the frontier is read first, which fixes the transaction's MVCC snapshot
(DuckDB starts it at the first read, not at BEGIN), and each batch of the
engine commits whole, so the copy is the state as of one committed batch and
the frontier in it says which source transaction. The writer is not locked:
it keeps folding while the copy is read.

What is copied: every schema of the database (mirrors, `live`, `_changefold`
with offsets, dead letters, frontier and metrics), ENUM types, sequences (at
their current value), tables (their DDL from `duckdb_tables()`, keys and
defaults included) with their rows, indexes and views. Rows travel as Arrow
batches into a separate DuckDB instance that writes the target (the engine's
own instance has file access switched off: engine.state.reader); columns of
the types Arrow would change (BIT, TIME WITH TIME ZONE) travel as text.
Temporary tables (the views' scratch tables) are the writer's own and are not
part of the state. Macros and non-ENUM user types cannot be rebuilt from the
catalog exactly (parameter defaults are not listed) and are named in `skipped`.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from engine.core.errors import StateError
from engine.state import frontier
from engine.state.sqlident import quote

#: Rows per Arrow batch between the two instances.
BATCH_ROWS = 122_880
_SOURCE = "_changefold_snapshot_source"
_LOSSY = re.compile(r"\bBIT\b|TIME WITH TIME ZONE")


@dataclass(frozen=True)
class Snapshot:
    """A written snapshot: where, what it holds, and the frontier it is consistent as of."""

    path: Path
    consistency: frontier.Consistency
    tables: int
    rows: int
    views: int
    seconds: float
    size_bytes: int
    skipped: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "tables": self.tables,
            "rows": self.rows,
            "views": self.views,
            "seconds": round(self.seconds, 3),
            "size_bytes": self.size_bytes,
            "skipped": list(self.skipped),
            **self.consistency.to_json(),
        }


def copy_state(
    cur: duckdb.DuckDBPyConnection,
    target: Path,
    *,
    scope: frontier.Scope | None = None,
    check: Callable[[], None] | None = None,
) -> Snapshot:
    """Copy the database `cur` reads into the new file `target`.

    `cur` must be inside a transaction (a read cursor of StateReader): everything
    is read in it. `target` must not exist. `check` is called between tables (a
    shutdown raises there). On any failure the partial target is removed.
    """
    started = time.perf_counter()
    target = Path(target)
    if target.exists() or _wal(target).exists():
        raise StateError(f"the snapshot target {target} exists already: name a new file")
    # The first read: it fixes the transaction's snapshot, and names it.
    consistency = frontier.read(cur, scope or frontier.Scope())
    catalog = _Catalog.read(cur)
    # Written under a neutral name, then linked to `target`: DuckDB names a database
    # after its file, and a file named like a schema (bank.duckdb) would make the
    # tables' DDL (`CREATE TABLE bank.accounts`) ambiguous.
    partial = target.with_name(f".changefold-snapshot-{os.getpid()}-{time.monotonic_ns()}.duckdb")
    out = duckdb.connect(
        str(partial),
        config={"autoinstall_known_extensions": False, "autoload_known_extensions": False},
    )
    try:
        # No transaction: a failed CREATE (retried in dependency order) would abort it;
        # the file is private until returned, and removed on failure.
        for schema in catalog.schemas:
            out.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        for sql in catalog.types:
            out.execute(sql)
        for sql in catalog.sequences:
            out.execute(sql)
        tables = _in_dependency_order(out, [(t.name, t.sql) for t in catalog.tables])
        order = {name: i for i, name in enumerate(tables)}
        rows = 0
        for table in sorted(catalog.tables, key=lambda t: order[t.name]):
            if check is not None:
                check()
            rows += _copy_rows(cur, out, table)
        for sql in catalog.indexes:
            out.execute(sql)
        _in_dependency_order(out, catalog.views)
        out.execute("CHECKPOINT")
    except BaseException:
        out.close()
        remove(partial)
        raise
    out.close()
    try:
        os.link(partial, target)  # never over a file that appeared meanwhile
    except FileExistsError:
        raise StateError(f"the snapshot target {target} exists already: name a new file") from None
    finally:
        remove(partial)
    return Snapshot(
        path=target,
        consistency=consistency,
        tables=len(catalog.tables),
        rows=rows,
        views=len(catalog.views),
        seconds=time.perf_counter() - started,
        size_bytes=target.stat().st_size,
        skipped=tuple(catalog.skipped),
    )


def held(path: Path | str) -> bool:
    """Whether another process holds `path` (DuckDB's lock error on a read-only open)."""
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            return True
        raise StateError(f"cannot open the state file {path}: {exc}") from None
    con.close()
    return False


def remove(path: Path) -> None:
    """Delete a snapshot file and its WAL, if there."""
    for p in (path, _wal(path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


@dataclass(frozen=True)
class _Table:
    schema: str
    table: str
    sql: str
    columns: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return f"{quote(self.schema)}.{quote(self.table)}"


@dataclass
class _Catalog:
    schemas: list[str]
    types: list[str]
    sequences: list[str]
    tables: list[_Table]
    indexes: list[str]
    views: list[tuple[str, str]]
    skipped: list[str]

    @classmethod
    def read(cls, cur: duckdb.DuckDBPyConnection) -> _Catalog:
        here = "database_name = current_database()"
        schemas = [
            str(r[0])
            for r in cur.execute(
                f"SELECT schema_name FROM duckdb_schemas() WHERE {here} AND NOT internal "
                "ORDER BY schema_name"
            ).fetchall()
        ]
        types, skipped = [], []
        for schema, name, logical, labels in cur.execute(
            f"SELECT schema_name, type_name, logical_type, labels FROM duckdb_types() "
            f"WHERE {here} AND NOT internal ORDER BY schema_name, type_name"
        ).fetchall():
            qualified = f"{quote(schema)}.{quote(name)}"
            if logical == "ENUM" and labels is not None:
                values = ", ".join("'" + str(v).replace("'", "''") + "'" for v in labels)
                types.append(f"CREATE TYPE {qualified} AS ENUM ({values})")
            else:
                skipped.append(f"type {schema}.{name} ({logical})")
        sequences = []
        for schema, name, start, lo, hi, inc, cycle, last in cur.execute(
            "SELECT schema_name, sequence_name, start_value, min_value, max_value, "
            f"increment_by, cycle, last_value FROM duckdb_sequences() WHERE {here} "
            "AND NOT temporary ORDER BY schema_name, sequence_name"
        ).fetchall():
            nxt = start if last is None else last + inc
            if not cycle:
                nxt = max(lo, min(hi, nxt))
            sequences.append(
                f"CREATE SEQUENCE {quote(schema)}.{quote(name)} INCREMENT BY {inc} "
                f"MINVALUE {lo} MAXVALUE {hi} START {nxt} {'CYCLE' if cycle else 'NO CYCLE'}"
            )
        columns: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for schema, table, column, dtype in cur.execute(
            "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() "
            f"WHERE {here} ORDER BY schema_name, table_name, column_index"
        ).fetchall():
            columns.setdefault((str(schema), str(table)), []).append((str(column), str(dtype)))
        tables = [
            _Table(str(s), str(t), str(sql), tuple(columns.get((str(s), str(t)), ())))
            for s, t, sql in cur.execute(
                f"SELECT schema_name, table_name, sql FROM duckdb_tables() WHERE {here} "
                "AND NOT temporary ORDER BY schema_name, table_name"
            ).fetchall()
        ]
        indexes = [
            str(r[0])
            for r in cur.execute(
                f"SELECT sql FROM duckdb_indexes() WHERE {here} "
                "AND sql IS NOT NULL ORDER BY schema_name, index_name"
            ).fetchall()
        ]
        views = [
            (f"{quote(str(s))}.{quote(str(v))}", str(sql))
            for s, v, sql in cur.execute(
                f"SELECT schema_name, view_name, sql FROM duckdb_views() WHERE {here} "
                "AND NOT internal AND NOT temporary ORDER BY schema_name, view_name"
            ).fetchall()
        ]
        skipped += [
            f"macro {s}.{f}"
            for s, f in cur.execute(
                f"SELECT DISTINCT schema_name, function_name FROM duckdb_functions() WHERE {here} "
                "AND NOT internal AND function_type IN ('macro', 'table_macro') ORDER BY ALL"
            ).fetchall()
        ]
        return cls(schemas, types, sequences, tables, indexes, views, skipped)


def _in_dependency_order(out: duckdb.DuckDBPyConnection, items: list[tuple[str, str]]) -> list[str]:
    """Run each (name, CREATE ...) statement, retrying those that name one not made yet
    (a view over a view, a foreign key); the names in the order they were made."""
    done: list[str] = []
    pending = list(items)
    while pending:
        failed: list[tuple[str, str]] = []
        error: duckdb.Error | None = None
        for name, sql in pending:
            try:
                out.execute(sql)
            except duckdb.CatalogException as exc:
                failed.append((name, sql))
                error = exc
                continue
            done.append(name)
        if len(failed) == len(pending):
            raise StateError(f"cannot recreate {failed[0][0]} in the snapshot: {error}")
        pending = failed
    return done


def _copy_rows(cur: duckdb.DuckDBPyConnection, out: duckdb.DuckDBPyConnection, t: _Table) -> int:
    if not t.columns:
        return 0
    select = ", ".join(
        f"{quote(c)}::VARCHAR AS {quote(c)}" if _LOSSY.search(d) else quote(c) for c, d in t.columns
    )
    names = ", ".join(quote(c) for c, _ in t.columns)
    reader = cur.sql(f"SELECT {select} FROM {t.name}").to_arrow_reader(BATCH_ROWS)
    out.register(_SOURCE, reader)
    try:
        row = out.execute(f"INSERT INTO {t.name} ({names}) SELECT * FROM {_SOURCE}").fetchone()
    finally:
        out.unregister(_SOURCE)
    return int(row[0]) if row else 0
