"""The records the fold consumes: decoded table changes, dead letters, positions.

The decoder produces them and the fold (engine.state) applies them; positions
live in engine.core.positions, the fold's before/after rows in engine.state.deltas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

#: Columns of a `TableChanges.frame` that describe the event, not the row.
PARTITION = "__partition"
OFFSET = "__offset"
OP = "__op"
SOURCE_TS_MS = "__source_ts_ms"
#: `source.lsn` of the change. A TRUNCATE locks its table, so for one table the
#: LSN orders every change against a truncate, across partitions.
LSN = "__lsn"
META_COLUMNS = (PARTITION, OFFSET, OP, SOURCE_TS_MS, LSN)
#: Prefix of the per-column flag "this event did not provide a value" (TOAST
#: placeholder, or the column is not part of the event's schema version).
ABSENT_PREFIX = "__absent_"


def absent_flag(column: str) -> str:
    return ABSENT_PREFIX + column


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column of a mirror table: its DuckDB type and how its JSON value decodes.

    `kind` names the conversion from the Connect JSON representation (see
    engine.decode.logical); `duck_type` is the DuckDB column type.
    """

    name: str
    duck_type: str
    kind: str
    optional: bool = True
    precision: int | None = None
    scale: int | None = None
    #: Element of an array column.
    element: ColumnSpec | None = None
    #: Fields of a struct column (kept as JSON text).
    fields: tuple[ColumnSpec, ...] = ()
    #: Connect schema name (logical type), e.g. io.debezium.time.MicroTimestamp.
    logical: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "duck_type": self.duck_type, "kind": self.kind}
        if not self.optional:
            out["optional"] = False
        for key in ("precision", "scale", "logical"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.element is not None:
            out["element"] = self.element.to_dict()
        if self.fields:
            out["fields"] = [f.to_dict() for f in self.fields]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        element = data.get("element")
        return cls(
            name=data["name"],
            duck_type=data["duck_type"],
            kind=data["kind"],
            optional=data.get("optional", True),
            precision=data.get("precision"),
            scale=data.get("scale"),
            element=cls.from_dict(element) if element else None,
            fields=tuple(cls.from_dict(f) for f in data.get("fields", ())),
            logical=data.get("logical"),
        )


@dataclass(frozen=True, slots=True)
class MirrorName:
    """Where a captured table lives in DuckDB: `<topic prefix>.<source table>`."""

    schema: str
    table: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True, slots=True)
class TableSchema:
    """One version of a captured table's value schema, as the decoder understood it."""

    topic: str
    mirror: MirrorName
    #: Primary key columns, from the message key's schema.
    key: tuple[ColumnSpec, ...]
    #: All value columns, in source order.
    columns: tuple[ColumnSpec, ...]
    #: Stable digest of the value schema; one recorded version per distinct digest.
    fingerprint: str
    #: The Connect schema of the row (JSON text), kept with the recorded version.
    connect_schema: str = ""

    def column(self, name: str) -> ColumnSpec | None:
        for col in self.columns:
            if col.name == name:
                return col
        return None


@dataclass(frozen=True, slots=True)
class SchemaSeen:
    """A schema version met in a batch, with the first event that carried it."""

    schema: TableSchema
    partition: int
    offset: int


@dataclass(frozen=True)
class TableChanges:
    """Every decodable change of one table in a batch, in one frame.

    `frame` holds the META_COLUMNS, the key columns and the value columns (the
    union over the schema versions in `versions`), typed for DuckDB, and an
    ABSENT_PREFIX flag for each column that some event did not provide.
    Truncate events are rows with op 't' and null key columns.
    """

    topic: str
    mirror: MirrorName
    key: tuple[str, ...]
    #: Union of the value columns over the versions, latest spec per name.
    columns: tuple[ColumnSpec, ...]
    versions: tuple[SchemaSeen, ...]
    frame: pl.DataFrame = field(repr=False)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that could not be decoded or applied, with the reason."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    error: str
    stage: str = "decode"
