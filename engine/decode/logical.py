"""Connect schemas to column specs: the constant table of Debezium logical types.

A Connect JSON schema field (`{"type": "bytes", "name":
"org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "2"}, ...}`)
becomes a `ColumnSpec`: the DuckDB type of the mirror column and the `kind` of
conversion the decoder applies to the JSON value. `raw_dtype` gives the polars
type the JSON value is parsed as before that conversion.

Kinds:
  int, float, bool, string  JSON scalars kept as they are (narrowed to the column type)
  bytes       base64 text -> BLOB
  decimal     base64 big-endian two's complement unscaled value + fixed scale -> DECIMAL(p,s)
  decimal_text  the same, precision above 38 -> exact text (VARCHAR)
  vdecimal    io.debezium.data.VariableScaleDecimal {scale, value} -> exact text (VARCHAR)
  date        days since the epoch -> DATE
  time_ms / time_us / time_ns       time of day -> TIME / TIME / TIME_NS
  ts_ms / ts_us / ts_ns             epoch timestamps -> TIMESTAMP / TIMESTAMP / TIMESTAMP_NS
  tstz        ISO-8601 text with offset -> TIMESTAMPTZ (UTC)
  interval_us microseconds -> INTERVAL
  cast        text that DuckDB casts to `duck_type` (UUID, JSON, TIMETZ, ISO dates)
  list        JSON array; `element` converts the items
  struct      JSON object of known fields -> JSON text
  unsupported a type the decoder cannot parse (maps); the column stays NULL
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import polars as pl

from engine.core.errors import DecodeError
from engine.decode.model import ColumnSpec

#: DuckDB's DECIMAL holds at most 38 digits.
MAX_DECIMAL_PRECISION = 38

_INT_TYPES = {"int8": "TINYINT", "int16": "SMALLINT", "int32": "INTEGER", "int64": "BIGINT"}
#: The JSON converter writes float32/float64 as "float"/"double".
_FLOAT_TYPES = {"float": "FLOAT", "double": "DOUBLE", "float32": "FLOAT", "float64": "DOUBLE"}

#: Logical type name -> (kind, DuckDB type). Decimals and arrays are handled apart.
_LOGICAL: dict[str, tuple[str, str]] = {
    "org.apache.kafka.connect.data.Date": ("date", "DATE"),
    "org.apache.kafka.connect.data.Time": ("time_ms", "TIME"),
    "org.apache.kafka.connect.data.Timestamp": ("ts_ms", "TIMESTAMP"),
    "io.debezium.time.Date": ("date", "DATE"),
    "io.debezium.time.Time": ("time_ms", "TIME"),
    "io.debezium.time.MicroTime": ("time_us", "TIME"),
    "io.debezium.time.NanoTime": ("time_ns", "TIME_NS"),
    "io.debezium.time.Timestamp": ("ts_ms", "TIMESTAMP"),
    "io.debezium.time.MicroTimestamp": ("ts_us", "TIMESTAMP"),
    "io.debezium.time.NanoTimestamp": ("ts_ns", "TIMESTAMP_NS"),
    "io.debezium.time.ZonedTimestamp": ("tstz", "TIMESTAMPTZ"),
    "io.debezium.time.ZonedTime": ("cast", "TIMETZ"),
    "io.debezium.time.IsoDate": ("cast", "DATE"),
    "io.debezium.time.IsoTime": ("cast", "TIME"),
    "io.debezium.time.IsoTimestamp": ("cast", "TIMESTAMP"),
    "io.debezium.time.MicroDuration": ("interval_us", "INTERVAL"),
    "io.debezium.time.Year": ("int", "INTEGER"),
    "io.debezium.data.Uuid": ("cast", "UUID"),
    "io.debezium.data.Json": ("cast", "JSON"),
    "io.debezium.data.Enum": ("string", "VARCHAR"),
    "io.debezium.data.EnumSet": ("string", "VARCHAR"),
    "io.debezium.data.Xml": ("string", "VARCHAR"),
    "io.debezium.data.Ltree": ("string", "VARCHAR"),
}
DECIMAL = "org.apache.kafka.connect.data.Decimal"
VARIABLE_SCALE_DECIMAL = "io.debezium.data.VariableScaleDecimal"


def column_spec(field: Mapping[str, Any], name: str | None = None) -> ColumnSpec:
    """The column spec of one Connect schema field. Raises DecodeError if malformed."""
    if not isinstance(field, Mapping) or "type" not in field:
        raise DecodeError(f"schema field {field!r} has no type")
    col = name if name is not None else field.get("field")
    if not isinstance(col, str):
        raise DecodeError(f"schema field {field!r} has no name")
    ctype = field["type"]
    logical = field.get("name")
    optional = bool(field.get("optional", True))
    params = field.get("parameters") or {}
    common: dict[str, Any] = {"name": col, "optional": optional, "logical": logical}

    if logical == DECIMAL:
        scale = _int_param(params, "scale", col)
        precision = params.get("connect.decimal.precision")
        prec = int(precision) if precision is not None else MAX_DECIMAL_PRECISION
        if prec > MAX_DECIMAL_PRECISION or scale > prec:
            return ColumnSpec(duck_type="VARCHAR", kind="decimal_text", scale=scale, **common)
        return ColumnSpec(
            duck_type=f"DECIMAL({prec},{scale})",
            kind="decimal",
            precision=prec,
            scale=scale,
            **common,
        )
    if logical == VARIABLE_SCALE_DECIMAL:
        return ColumnSpec(duck_type="VARCHAR", kind="vdecimal", **common)
    if isinstance(logical, str) and logical in _LOGICAL:
        kind, duck = _LOGICAL[logical]
        if kind == "int":
            duck = _INT_TYPES.get(ctype, duck)
        return ColumnSpec(duck_type=duck, kind=kind, **common)
    if ctype in _INT_TYPES:
        return ColumnSpec(duck_type=_INT_TYPES[ctype], kind="int", **common)
    if ctype in _FLOAT_TYPES:
        return ColumnSpec(duck_type=_FLOAT_TYPES[ctype], kind="float", **common)
    if ctype == "boolean":
        return ColumnSpec(duck_type="BOOLEAN", kind="bool", **common)
    if ctype == "string":
        return ColumnSpec(duck_type="VARCHAR", kind="string", **common)
    if ctype == "bytes":
        return ColumnSpec(duck_type="BLOB", kind="bytes", **common)
    if ctype == "array":
        items = field.get("items")
        if not isinstance(items, Mapping):
            raise DecodeError(f"array column {col!r} has no items schema")
        element = column_spec(items, name="item")
        if element.kind in ("list", "unsupported"):
            return ColumnSpec(duck_type="JSON", kind="unsupported", **common)
        return ColumnSpec(
            duck_type=f"{element.duck_type}[]", kind="list", element=element, **common
        )
    if ctype == "struct":
        subfields = tuple(column_spec(f) for f in field.get("fields") or ())
        return ColumnSpec(duck_type="JSON", kind="struct", fields=subfields, **common)
    if ctype == "map":
        return ColumnSpec(duck_type="JSON", kind="unsupported", **common)
    raise DecodeError(f"column {col!r} has an unknown Connect type {ctype!r}")


def _int_param(params: Mapping[str, Any], key: str, col: str) -> int:
    try:
        return int(params[key])
    except (KeyError, TypeError, ValueError):
        raise DecodeError(f"decimal column {col!r} has no valid {key!r} parameter") from None


def raw_dtype(spec: ColumnSpec) -> pl.DataType | None:
    """The polars type the column's JSON value is parsed as (None: not parsed)."""
    kind = spec.kind
    if kind in ("int", "date", "time_ms", "time_us", "time_ns", "ts_ms", "ts_us", "ts_ns"):
        return pl.Int64()
    if kind == "interval_us":
        return pl.Int64()
    if kind == "float":
        return pl.Float64()
    if kind == "bool":
        return pl.Boolean()
    if kind in ("string", "bytes", "decimal", "decimal_text", "tstz", "cast"):
        return pl.String()
    if kind == "vdecimal":
        return pl.Struct({"scale": pl.Int64(), "value": pl.String()})
    if kind == "list":
        assert spec.element is not None
        inner = raw_dtype(spec.element)
        return None if inner is None else pl.List(inner)
    if kind == "struct":
        parts = {f.name: raw_dtype(f) for f in spec.fields}
        if any(v is None for v in parts.values()):
            return None
        return pl.Struct({k: v for k, v in parts.items() if v is not None})
    return None


def row_struct(columns: tuple[ColumnSpec, ...]) -> pl.Struct:
    """The polars struct a row object (`before`/`after`) is parsed as."""
    fields: dict[str, pl.DataType] = {}
    for col in columns:
        dtype = raw_dtype(col)
        if dtype is not None:
            fields[col.name] = dtype
    return pl.Struct(fields)


def fingerprint(schema: Any) -> str:
    """A stable digest of a JSON schema (key order does not matter)."""
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
