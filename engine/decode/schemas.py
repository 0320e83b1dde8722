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
from engine.decode.logical import column_spec, fingerprint, raw_dtype, row_struct
from engine.decode.model import ColumnSpec

_CACHE_LIMIT = 512


@dataclass(frozen=True, slots=True)
class Shape:
    """How many JSON keys the JsonConverter writes for an event of one envelope schema.

    The converter writes every field of every non-null struct, nulls included, so
    an event's key count follows from the schema and the null-ness of its optional
    structs; a payload with more keys carries a field the schema does not declare.
    `exact` is False when the count depends on more than that (maps, arrays of
    structs, optional structs nested deeper); the decoder then compares the payload's
    keys with `names` instead.
    """

    #: Keys every event has: the envelope's fields and those of its non-optional structs.
    fixed: int
    #: Optional top-level structs besides before/after (e.g. `transaction`):
    #: (field, keys when not null, a field of it and its polars type, to see it is null).
    optional: tuple[tuple[str, int, str, pl.DataType], ...]
    #: Keys of a non-null before/after object.
    row: int
    #: Row columns whose non-null value is an object: (column, its keys).
    nested: tuple[tuple[str, int], ...]
    exact: bool
    #: Every field name anywhere in the envelope schema.
    names: frozenset[str]


@dataclass(frozen=True, slots=True)
class RowSchema:
    """The columns of a row struct and the polars struct it is parsed as."""

    columns: tuple[ColumnSpec, ...]
    struct: pl.Struct
    fingerprint: str
    connect: str
    #: Of an embedded envelope schema only (None for keys, stored and inferred schemas).
    shape: Shape | None = None


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
    base = from_fields(row.get("fields") or ())
    return RowSchema(
        base.columns, base.struct, base.fingerprint, base.connect, _shape(schema, fields)
    )


def _shape(envelope: Mapping[str, Any], top: Mapping[Any, Mapping[str, Any]]) -> Shape:
    fixed = len(envelope.get("fields") or ())
    optional: list[tuple[str, int, str, pl.DataType]] = []
    exact = True
    for name, spec in top.items():
        if name in ("before", "after"):
            continue
        keys, ok = _struct_keys(spec)
        if not ok:
            exact = False
        elif keys and spec.get("optional", True):
            probe = _probe(spec)
            if probe is None:
                exact = False
            else:
                optional.append((str(name), keys, *probe))
        else:
            fixed += keys
    rows = [top[n] for n in ("before", "after") if n in top]
    row_fields = rows[-1].get("fields") or ()
    if len(rows) == 2 and (rows[0].get("fields") or ()) != row_fields:
        exact = False
    nested: list[tuple[str, int]] = []
    for spec in row_fields:
        if not isinstance(spec, Mapping):
            continue
        keys, ok = _struct_keys(spec)
        if not ok or (keys and not _flat(spec)):
            exact = False
        elif keys:
            nested.append((str(spec.get("field")), keys))
    return Shape(
        fixed=fixed,
        optional=tuple(optional),
        row=len(row_fields),
        nested=tuple(nested),
        exact=exact,
        names=frozenset(_names(envelope)),
    )


def _struct_keys(spec: Mapping[str, Any]) -> tuple[int, bool]:
    """(keys a non-null value of this field writes, whether that number is fixed)."""
    ctype = spec.get("type")
    if ctype == "map":
        return 0, False
    if ctype == "array":
        items = spec.get("items")
        return 0, not (isinstance(items, Mapping) and items.get("type") in ("struct", "map"))
    if ctype != "struct":
        return 0, True
    fields = [f for f in spec.get("fields") or () if isinstance(f, Mapping)]
    keys = len(fields)
    for f in fields:
        sub, ok = _struct_keys(f)
        if not ok or (sub and f.get("optional", True)):
            return 0, False
        keys += sub
    return keys, True


def _flat(spec: Mapping[str, Any]) -> bool:
    """A struct column of scalar fields that the after row is parsed with."""
    fields = [f for f in spec.get("fields") or () if isinstance(f, Mapping)]
    if any(f.get("type") in ("struct", "map", "array") for f in fields):
        return False
    try:
        return raw_dtype(column_spec(spec)) is not None
    except DecodeError:
        return False


def _probe(spec: Mapping[str, Any]) -> tuple[str, pl.DataType] | None:
    """A scalar field of an optional struct, parsed to tell whether the struct is null."""
    for f in spec.get("fields") or ():
        if not isinstance(f, Mapping) or f.get("type") in ("struct", "map", "array"):
            continue
        try:
            dtype = raw_dtype(column_spec(f))
        except DecodeError:
            continue
        if dtype is not None:
            return str(f["field"]), dtype
    return None


def _names(schema: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(schema, Mapping):
        name = schema.get("field")
        if isinstance(name, str):
            out.add(name)
        for f in schema.get("fields") or ():
            out |= _names(f)
        for part in ("items", "keys", "values"):
            out |= _names(schema.get(part))
    return out


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
