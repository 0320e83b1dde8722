"""What the state file knows about its mirror tables: columns, types, schema versions.

Kept in memory per store so a batch does not query information_schema; the
cache is reset whenever a transaction rolls back (its DDL was undone).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import duckdb

from engine.core.errors import StateError
from engine.decode.model import ColumnSpec, MirrorName, SchemaSeen, TableSchema
from engine.state.sqlident import INTERNAL_SCHEMA, qualified, quote


class Catalog:
    def __init__(self) -> None:
        self._columns: dict[MirrorName, dict[str, str]] = {}
        self._fingerprints: dict[MirrorName, set[str]] = {}
        self._canonical: dict[str, str] = {}
        self._database: str | None = None

    def reset(self) -> None:
        """Forget cached mirror facts (after a rollback)."""
        self._columns.clear()
        self._fingerprints.clear()

    def target(self, conn: duckdb.DuckDBPyConnection, mirror: MirrorName) -> str:
        """The mirror's fully qualified name (database.schema.table) for SQL text."""
        return qualified(mirror, self._database_name(conn))

    def _database_name(self, conn: duckdb.DuckDBPyConnection) -> str:
        if self._database is None:
            (row,) = conn.execute("SELECT current_database()").fetchall()
            self._database = str(row[0])
        return self._database

    # -- mirror DDL -------------------------------------------------------------------

    def ensure_mirror(
        self,
        conn: duckdb.DuckDBPyConnection,
        mirror: MirrorName,
        key: Iterable[ColumnSpec],
        columns: Iterable[ColumnSpec],
    ) -> None:
        """Create the mirror table, add new columns, widen changed column types."""
        key = list(key)
        columns = [c for c in columns if c.name not in {k.name for k in key}]
        existing = self._mirror_columns(conn, mirror)
        if existing is None:
            table = self.target(conn, mirror)
            schema = f"{quote(self._database_name(conn))}.{quote(mirror.schema)}"
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            defs = [f"{quote(c.name)} {c.duck_type} NOT NULL" for c in key]
            defs += [f"{quote(c.name)} {c.duck_type}" for c in columns]
            pk = ", ".join(quote(c.name) for c in key)
            body = ", ".join([*defs, f"PRIMARY KEY ({pk})"])
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({body})")
            self._columns[mirror] = {
                c.name: self.canonical(conn, c.duck_type) for c in [*key, *columns]
            }
            return
        for col in key:
            if col.name not in existing:
                raise StateError(
                    f"the key of {mirror} changed: column {col.name!r} is not in the mirror's "
                    "primary key; rebuild the state (changefold replay) after a key change"
                )
        for col in columns:
            wanted = self.canonical(conn, col.duck_type)
            have = existing.get(col.name)
            if have is None:
                conn.execute(
                    f"ALTER TABLE {self.target(conn, mirror)} ADD COLUMN {quote(col.name)} "
                    f"{col.duck_type}"
                )
                existing[col.name] = wanted
            elif have != wanted:
                name = quote(col.name)
                conn.execute(
                    f"ALTER TABLE {self.target(conn, mirror)} ALTER COLUMN {name} "
                    f"SET DATA TYPE {col.duck_type} USING CAST({name} AS {col.duck_type})"
                )
                existing[col.name] = wanted

    def mirror_types(self, conn: duckdb.DuckDBPyConnection, mirror: MirrorName) -> dict[str, str]:
        return dict(self._mirror_columns(conn, mirror) or {})

    def canonical(self, conn: duckdb.DuckDBPyConnection, duck_type: str) -> str:
        """DuckDB's own spelling of a type (TIMESTAMPTZ -> TIMESTAMP WITH TIME ZONE)."""
        hit = self._canonical.get(duck_type)
        if hit is None:
            (row,) = conn.execute(f"SELECT typeof(CAST(NULL AS {duck_type}))").fetchall()
            hit = self._canonical[duck_type] = str(row[0])
        return hit

    def _mirror_columns(
        self, conn: duckdb.DuckDBPyConnection, mirror: MirrorName
    ) -> dict[str, str] | None:
        if mirror in self._columns:
            return self._columns[mirror]
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position",
            [mirror.schema, mirror.table],
        ).fetchall()
        if not rows:
            return None
        cols = {str(name): str(dtype) for name, dtype in rows}
        self._columns[mirror] = cols
        return cols

    # -- schema versions --------------------------------------------------------------

    def record_versions(self, conn: duckdb.DuckDBPyConnection, seen: Iterable[SchemaSeen]) -> int:
        """Record each schema version not recorded yet; returns how many were new."""
        added = 0
        for item in seen:
            schema = item.schema
            mirror = schema.mirror
            known = self._known_fingerprints(conn, mirror)
            if schema.fingerprint in known:
                continue
            conn.execute(
                f"INSERT INTO {INTERNAL_SCHEMA}.schema_versions "
                "SELECT ?, ?, coalesce(max(version), 0) + 1, ?, ?, ?, ?, ?, ?, ?, now() "
                f"FROM {INTERNAL_SCHEMA}.schema_versions WHERE table_schema = ? AND table_name = ?",
                [
                    mirror.schema,
                    mirror.table,
                    schema.fingerprint,
                    schema.topic,
                    json.dumps([c.to_dict() for c in schema.key]),
                    json.dumps([c.to_dict() for c in schema.columns]),
                    schema.connect_schema or None,
                    item.partition,
                    item.offset,
                    mirror.schema,
                    mirror.table,
                ],
            )
            known.add(schema.fingerprint)
            added += 1
        return added

    def _known_fingerprints(self, conn: duckdb.DuckDBPyConnection, mirror: MirrorName) -> set[str]:
        if mirror not in self._fingerprints:
            rows = conn.execute(
                f"SELECT fingerprint FROM {INTERNAL_SCHEMA}.schema_versions "
                "WHERE table_schema = ? AND table_name = ?",
                [mirror.schema, mirror.table],
            ).fetchall()
            self._fingerprints[mirror] = {str(r[0]) for r in rows}
        return self._fingerprints[mirror]


def latest_schemas(conn: duckdb.DuckDBPyConnection) -> dict[str, TableSchema]:
    """The newest recorded schema version per topic (types schemaless events)."""
    rows = conn.execute(
        f"SELECT topic, table_schema, table_name, fingerprint, key_columns, columns "
        f"FROM {INTERNAL_SCHEMA}.schema_versions "
        "QUALIFY row_number() OVER (PARTITION BY topic ORDER BY version DESC) = 1"
    ).fetchall()
    out: dict[str, TableSchema] = {}
    for topic, schema, table, fp, key_json, cols_json in rows:
        out[str(topic)] = TableSchema(
            topic=str(topic),
            mirror=MirrorName(str(schema), str(table)),
            key=tuple(ColumnSpec.from_dict(c) for c in json.loads(key_json)),
            columns=tuple(ColumnSpec.from_dict(c) for c in json.loads(cols_json)),
            fingerprint=str(fp),
        )
    return out
