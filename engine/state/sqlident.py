"""The one helper that puts identifiers into SQL text. Values are always bound parameters."""

from __future__ import annotations

from engine.decode.model import MirrorName

#: Schema of the engine's own tables (offsets, dead letters, schema versions, metrics).
INTERNAL_SCHEMA = "_changefold"


def quote(name: str) -> str:
    """A DuckDB identifier, double-quoted with embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def qualified(mirror: MirrorName, database: str | None = None) -> str:
    """`"schema"."table"`, or `"database"."schema"."table"` when the database is given.

    Give the database when the schema name could equal the database name (DuckDB
    names a file's database after the file: state file bank.duckdb and schema bank
    make `bank.accounts` ambiguous).
    """
    name = f"{quote(mirror.schema)}.{quote(mirror.table)}"
    return f"{quote(database)}.{name}" if database else name
