"""Compare two state files table by table: rows only in A, only in B, and changed.

Rows are matched on the table's primary key (mirror tables have one); a table
without a key is compared as a multiset of rows. The engine's internal tables
(`_changefold`) are not compared.

Bookkeeping columns of the views (schema `live`) are not compared by default: they
record which batch wrote a row and when (wall clock), which depends on how the
history was cut into batches, not on the history. The rule is by name, in schema
`live` only: `batch_id`, `updated`, `updated_batch`, `first_batch`, `last_batch`,
`detected_at` (the wall clock of the batch that raised an alert) and
`detected_event_time` (the stream's event-time clock at that batch). Every other
column of every view is data, equal for equal histories (sql/views/README.md,
"Batch boundaries"); `bookkeeping=True` compares these columns too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from engine.core.errors import ReplayError
from engine.state.sqlident import INTERNAL_SCHEMA, quote

SAMPLE = 5

#: Schema of the views' tables, and the names of its bookkeeping columns (not compared
#: unless asked: see the module docstring).
VIEWS_SCHEMA = "live"
BOOKKEEPING_COLUMNS = frozenset(
    {
        "batch_id",
        "updated",
        "updated_batch",
        "first_batch",
        "last_batch",
        "detected_at",
        "detected_event_time",
    }
)


@dataclass
class TableDiff:
    table: str
    only_a: int = 0
    only_b: int = 0
    changed: int = 0
    note: str = ""
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def differs(self) -> bool:
        return bool(self.only_a or self.only_b or self.changed or self.note)


@dataclass
class StateDiff:
    a: Path
    b: Path
    tables: list[TableDiff]

    @property
    def differs(self) -> bool:
        return any(t.differs for t in self.tables)


def diff_states(
    a: Path,
    b: Path,
    *,
    exclude: tuple[str, ...] = (),
    ignore_columns: tuple[str, ...] = (),
    bookkeeping: bool = False,
) -> StateDiff:
    """Compare two state files; `bookkeeping`: compare the views' bookkeeping columns too."""
    for path in (a, b):
        if not path.is_file():
            raise ReplayError(f"no state file at {path}")
    conn = duckdb.connect()
    try:
        for alias, path in (("a", a), ("b", b)):
            try:
                conn.execute(f"ATTACH ? AS {alias} (READ_ONLY)", [str(path)])
            except duckdb.Error as exc:
                raise ReplayError(
                    f"cannot open {path} as a state file: {str(exc).splitlines()[0]} (a file "
                    "that the engine is writing must be compared through a copy, or with the "
                    "engine stopped)"
                ) from None
        tables_a, tables_b = _tables(conn, "a"), _tables(conn, "b")
        out = []
        for name in sorted(set(tables_a) | set(tables_b)):
            if name in exclude:
                continue
            if name not in tables_b:
                out.append(TableDiff(name, only_a=_count(conn, "a", name), note="only in A"))
            elif name not in tables_a:
                out.append(TableDiff(name, only_b=_count(conn, "b", name), note="only in B"))
            else:
                ignore = ignore_columns
                if not bookkeeping and name.split(".", 1)[0] == VIEWS_SCHEMA:
                    ignore = (*ignore_columns, *sorted(BOOKKEEPING_COLUMNS))
                out.append(_diff_table(conn, name, tables_a[name], tables_b[name], ignore))
        return StateDiff(a, b, out)
    finally:
        conn.close()


def _tables(conn: duckdb.DuckDBPyConnection, alias: str) -> dict[str, list[str]]:
    rows = conn.execute(
        "SELECT schema_name, table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = ? AND schema_name <> ? ORDER BY schema_name, table_name, "
        "column_index",
        [alias, INTERNAL_SCHEMA],
    ).fetchall()
    out: dict[str, list[str]] = {}
    for schema, table, column in rows:
        out.setdefault(f"{schema}.{table}", []).append(column)
    return out


def _ref(alias: str, name: str) -> str:
    schema, table = name.split(".", 1)
    return f"{alias}.{quote(schema)}.{quote(table)}"


def _count(conn: duckdb.DuckDBPyConnection, alias: str, name: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {_ref(alias, name)}").fetchone()
    return int(row[0]) if row else 0


def _key(conn: duckdb.DuckDBPyConnection, name: str) -> list[str]:
    schema, table = name.split(".", 1)
    row = conn.execute(
        "SELECT constraint_column_names FROM duckdb_constraints() WHERE database_name = 'a' "
        "AND schema_name = ? AND table_name = ? AND constraint_type = 'PRIMARY KEY'",
        [schema, table],
    ).fetchone()
    return list(row[0]) if row else []


def _diff_table(
    conn: duckdb.DuckDBPyConnection,
    name: str,
    cols_a: list[str],
    cols_b: list[str],
    ignore: tuple[str, ...],
) -> TableDiff:
    result = TableDiff(name)
    if set(cols_a) != set(cols_b):
        result.note = (
            f"columns differ: only in A {sorted(set(cols_a) - set(cols_b))}, "
            f"only in B {sorted(set(cols_b) - set(cols_a))}"
        )
    cols = [c for c in cols_a if c in cols_b and c not in ignore]
    key = [k for k in _key(conn, name) if k in cols]
    select = ", ".join(quote(c) for c in cols)
    ta, tb = _ref("a", name), _ref("b", name)
    if key:
        on = " AND ".join(f"x.{quote(k)} = y.{quote(k)}" for k in key)
        differs = (
            " OR ".join(f"x.{quote(c)} IS DISTINCT FROM y.{quote(c)}" for c in cols) or "false"
        )
        queries = {
            "only_a": f"SELECT x.* FROM (SELECT {select} FROM {ta}) x ANTI JOIN {tb} y ON {on}",
            "only_b": f"SELECT y.* FROM (SELECT {select} FROM {tb}) y ANTI JOIN {ta} x ON {on}",
            "changed": (
                f"SELECT x.* FROM (SELECT {select} FROM {ta}) x "
                f"JOIN (SELECT {select} FROM {tb}) y ON {on} WHERE {differs}"
            ),
        }
    else:
        queries = {
            "only_a": f"SELECT {select} FROM {ta} EXCEPT ALL SELECT {select} FROM {tb}",
            "only_b": f"SELECT {select} FROM {tb} EXCEPT ALL SELECT {select} FROM {ta}",
        }
    if key:
        # A changed row is shown with both versions: {"a": {...}, "b": {...}}.
        keys = ", ".join(f"x.{quote(k)}" for k in key)
        samples = {
            **queries,
            "changed": (
                f"SELECT {keys}, x AS a, y AS b FROM (SELECT {select} FROM {ta}) x "
                f"JOIN (SELECT {select} FROM {tb}) y ON {on} WHERE {differs}"
            ),
        }
    else:
        samples = queries
    for kind, query in queries.items():
        row = conn.execute(f"SELECT count(*) FROM ({query})").fetchone()
        count = int(row[0]) if row else 0
        setattr(result, kind, count)
        if count:
            rel = conn.execute(f"{samples[kind]} LIMIT {SAMPLE}")
            names = [d[0] for d in rel.description or ()]
            result.samples[kind] = [dict(zip(names, r, strict=True)) for r in rel.fetchall()]
    return result
