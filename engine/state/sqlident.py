"""The one helper that puts identifiers into SQL text. Values are always bound parameters."""

from __future__ import annotations

from engine.state.model import MirrorName

#: Schema of the engine's own tables (offsets, dead letters, schema versions, metrics).
INTERNAL_SCHEMA = "_changefold"


def quote(name: str) -> str:
    """A DuckDB identifier, double-quoted with embedded quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def qualified(mirror: MirrorName) -> str:
    return f"{quote(mirror.schema)}.{quote(mirror.table)}"
