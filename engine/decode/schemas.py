"""Table schemas from Connect key/value schemas, or inferred from schemaless JSON.

Parsed Connect schemas are cached by their bytes: a table version's schema is
read once, however many events carry it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl

from engine.core.errors import DecodeError
from engine.decode.logical import column_spec, fingerprint, row_struct
from engine.decode.model import ColumnSpec

_CACHE_LIMIT = 512


@dataclass(frozen=True, slots=True)
class RowSchema:
    """The columns of a row struct and the polars struct it is parsed as."""

    columns: tuple[ColumnSpec, ...]
    struct: pl.Struct
    fingerprint: str
    connect: str


class SchemaCache:
    """Parses value (envelope) and key schemas once per distinct bytes."""

    def __init__(self) -> None:
        self._values: dict[bytes, RowSchema | DecodeError] = {}
        self._keys: dict[bytes, RowSchema | DecodeError] = {}

    def value(self, raw: bytes) -> RowSchema:
        return self._get(self._values, raw, _envelope_row)

    def key(self, raw: bytes) -> RowSchema:
        return self._get(self._keys, raw, _key_row)

    @staticmethod
    def _get(cache: dict[bytes, RowSchema | DecodeError], raw: bytes, build: Any) -> RowSchema:
        hit = cache.get(raw)
        if hit is None:
            try:
                hit = build(_load(raw))
            except DecodeError as exc:
                hit = exc
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[raw] = hit
        if isinstance(hit, DecodeError):
            raise hit
        return hit


def _load(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise DecodeError(f"the embedded schema is not valid JSON: {exc}") from None


def _envelope_row(schema: Any) -> RowSchema:
    if not isinstance(schema, Mapping) or schema.get("type") != "struct":
        raise DecodeError("the value schema is not a struct: not a Debezium change event")
    fields = {f.get("field"): f for f in schema.get("fields") or () if isinstance(f, Mapping)}
    row = fields.get("after") or fields.get("before")
    if row is None or "op" not in fields:
        raise DecodeError(
            "the value schema has no before/after/op fields: not a Debezium change event envelope"
        )
    return from_fields(row.get("fields") or ())


def _key_row(schema: Any) -> RowSchema:
    if not isinstance(schema, Mapping) or schema.get("type") != "struct":
        raise DecodeError("the key schema is not a struct of primary key columns")
    return from_fields(schema.get("fields") or ())


def from_fields(fields: Any) -> RowSchema:
    columns = tuple(column_spec(f) for f in fields)
    return RowSchema(
        columns=columns,
        struct=row_struct(columns),
        fingerprint=fingerprint(list(fields)),
        connect=json.dumps(list(fields), separators=(",", ":")),
    )


def from_specs(columns: tuple[ColumnSpec, ...]) -> RowSchema:
    """A row schema from known (stored or inferred) column specs."""
    specs = [c.to_dict() for c in columns]
    return RowSchema(
        columns=columns,
        struct=row_struct(columns),
        fingerprint=fingerprint(specs),
        connect=json.dumps(specs, separators=(",", ":")),
    )


def infer_columns(
    dtypes: Mapping[str, pl.DataType], known: Mapping[str, ColumnSpec]
) -> tuple[ColumnSpec, ...]:
    """Column specs for schemaless JSON: known columns keep their spec, new ones get JSON types."""
    return tuple(known.get(name) or _spec_from_dtype(name, dtype) for name, dtype in dtypes.items())


def _spec_from_dtype(name: str, dtype: pl.DataType) -> ColumnSpec:
    if dtype == pl.Boolean():
        return ColumnSpec(name=name, duck_type="BOOLEAN", kind="bool", logical="inferred")
    if dtype.is_integer():
        return ColumnSpec(name=name, duck_type="BIGINT", kind="int", logical="inferred")
    if dtype.is_float():
        return ColumnSpec(name=name, duck_type="DOUBLE", kind="float", logical="inferred")
    if isinstance(dtype, pl.List):
        element = _spec_from_dtype("item", _instance(dtype.inner))
        if element.kind in ("list", "struct"):
            return ColumnSpec(name=name, duck_type="JSON", kind="unsupported", logical="inferred")
        return ColumnSpec(
            name=name,
            duck_type=f"{element.duck_type}[]",
            kind="list",
            element=element,
            logical="inferred",
        )
    if isinstance(dtype, pl.Struct):
        fields = tuple(_spec_from_dtype(f.name, _instance(f.dtype)) for f in dtype.fields)
        return ColumnSpec(
            name=name, duck_type="JSON", kind="struct", fields=fields, logical="inferred"
        )
    return ColumnSpec(name=name, duck_type="VARCHAR", kind="string", logical="inferred")


def _instance(dtype: Any) -> pl.DataType:
    """A polars dtype instance (struct fields may hold the bare class)."""
    return dtype() if isinstance(dtype, type) else dtype
