"""The raw payload columns of a group of Avro change events, built from the Avro values.

The JSON path reads a group's payloads with one bulk JSON parse (engine.decode.bulkjson)
into polars columns typed by `engine.decode.logical.raw_dtype`; the shared conversions
(engine.decode.convert) take them from there. For Avro events the same columns are built
here from the Avro values, with no JSON in between: from the frame polars' Avro reader
gives for a whole group (`block_payload_frame`, `block_key_frame`; see
engine.decode.avro_block), or from the values fastavro reads one by one
(`payload_frame`, `key_frame`). Same names, same dtypes, same values, so everything
after (logical types, DuckDB types, the TOAST placeholder, the checks) is the JSON
path's own.

One difference of form: where Connect JSON carries base64 text (bytes, a Decimal's
unscaled value, a VariableScaleDecimal's value), Avro carries the bytes. Those columns
are built as Binary and turned into base64 text in bulk by polars, which is what the
conversions read.

Pure functions over lists of read values; no state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from engine.decode.model import ColumnSpec

#: The kinds whose Connect JSON value is base64 text of bytes that Avro carries as bytes.
_BYTES_KINDS = frozenset({"bytes", "decimal", "decimal_text"})
_INT_KINDS = frozenset(
    {"int", "date", "time_ms", "time_us", "time_ns", "ts_ms", "ts_us", "ts_ns", "interval_us"}
)
_TEXT_KINDS = frozenset({"string", "tstz", "cast"})
#: The fields of `payload.source` the decoder reads (as the JSON path parses them).
SOURCE = pl.Struct(
    {"ts_ms": pl.Int64(), "lsn": pl.Int64(), "schema": pl.String(), "table": pl.String()}
)

Rows = Sequence[Any]


def native_dtype(spec: ColumnSpec) -> pl.DataType | None:
    """The polars type a column's Avro value is built as: `raw_dtype`'s, with Binary where
    Connect JSON has base64 text (None: the column is not read, as in the JSON path)."""
    kind = spec.kind
    if kind in _INT_KINDS:
        return pl.Int64()
    if kind == "float":
        return pl.Float64()
    if kind == "bool":
        return pl.Boolean()
    if kind in _TEXT_KINDS:
        return pl.String()
    if kind in _BYTES_KINDS:
        return pl.Binary()
    if kind == "vdecimal":
        return pl.Struct({"scale": pl.Int64(), "value": pl.Binary()})
    if kind == "list":
        assert spec.element is not None
        inner = native_dtype(spec.element)
        return None if inner is None else pl.List(inner)
    if kind == "struct":
        parts = {f.name: native_dtype(f) for f in spec.fields}
        if any(v is None for v in parts.values()):
            return None
        return pl.Struct({k: v for k, v in parts.items() if v is not None})
    return None


def native_row(columns: Sequence[ColumnSpec]) -> pl.Struct:
    """The polars struct a row (`after`, a key) is built as, from the Avro record."""
    fields: dict[str, pl.DataType] = {}
    for col in columns:
        dtype = native_dtype(col)
        if dtype is not None:
            fields[col.name] = dtype
    return pl.Struct(fields)


def _has_bytes(spec: ColumnSpec) -> bool:
    if spec.kind in _BYTES_KINDS or spec.kind == "vdecimal":
        return True
    if spec.kind == "list":
        return spec.element is not None and _has_bytes(spec.element)
    return spec.kind == "struct" and any(_has_bytes(f) for f in spec.fields)


def json_form(expr: pl.Expr, spec: ColumnSpec) -> pl.Expr:
    """`expr` (a column built as `native_dtype(spec)`) in the JSON parse's form: bytes
    as base64 text, at any depth."""
    kind = spec.kind
    if kind in _BYTES_KINDS:
        return expr.bin.encode("base64")
    if kind == "vdecimal":
        return _rebuilt(expr, [("scale", None), ("value", "bytes")])
    if kind == "list" and spec.element is not None and _has_bytes(spec.element):
        return expr.list.eval(json_form(pl.element(), spec.element))
    if kind == "struct" and _has_bytes(spec):
        return _rebuilt(expr, [(f.name, f) for f in spec.fields])
    return expr


def _rebuilt(expr: pl.Expr, fields: Sequence[tuple[str, ColumnSpec | str | None]]) -> pl.Expr:
    """A struct with each field in JSON form; null where the struct is."""
    parts = []
    for name, spec in fields:
        field = expr.struct.field(name)
        if isinstance(spec, ColumnSpec):
            field = json_form(field, spec)
        elif spec == "bytes":
            field = field.bin.encode("base64")
        parts.append(field.alias(name))
    return pl.when(expr.is_null()).then(None).otherwise(pl.struct(parts))


def row_column(name: str, rows: Rows, columns: Sequence[ColumnSpec]) -> pl.Series:
    """One row struct per record (`rows`: the Avro row records, None where there is no
    row), typed as the JSON path parses it: `raw_dtype`s, bytes as base64 text."""
    return _in_json_form(pl.Series(name, rows, dtype=native_row(columns)), columns)


def _in_json_form(series: pl.Series, columns: Sequence[ColumnSpec]) -> pl.Series:
    """A row struct built as `native_row(columns)` in the JSON parse's form."""
    dtype = series.dtype
    assert isinstance(dtype, pl.Struct)
    wanted = {f.name for f in dtype.fields}
    changed = [c for c in columns if c.name in wanted and _has_bytes(c)]
    if not changed:
        return series
    col = pl.col(series.name)
    return (
        series.to_frame()
        .select(
            col.struct.with_fields(json_form(pl.field(c.name), c).alias(c.name) for c in changed)
        )
        .to_series()
    )


def payload_frame(records: Rows, after: Sequence[ColumnSpec]) -> pl.DataFrame:
    """The payload columns the decoder reads of a group of Avro change events (`records`:
    the envelopes as fastavro read them): op, ts_ms, source and the after row."""
    return pl.DataFrame(
        [
            pl.Series("op", [r.get("op") for r in records], dtype=pl.String()),
            pl.Series("ts_ms", [r.get("ts_ms") for r in records], dtype=pl.Int64()),
            pl.Series("source", [r.get("source") for r in records], dtype=SOURCE),
            row_column("after", [r.get("after") for r in records], after),
        ]
    )


def key_frame(keys: Rows, columns: Sequence[ColumnSpec]) -> pl.DataFrame:
    """The key columns of a group's Avro keys (each a record of the key columns)."""
    return row_column("key", keys, columns).struct.unnest()


def isolated(
    build: Callable[[Rows], pl.DataFrame], rows: Rows, describe: Callable[[Exception], str]
) -> tuple[pl.DataFrame, dict[int, str]]:
    """`build(rows)`, and when that fails, the rows bisected until each one that cannot be
    built stands alone: (one frame row per input row, a null row for each that failed;
    {row: reason})."""
    errors: dict[int, str] = {}
    parts: list[pl.DataFrame] = []
    _build_range(build, rows, 0, len(rows), parts, errors, describe)
    frame = parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical")
    return frame, errors


def _build_range(
    build: Callable[[Rows], pl.DataFrame],
    rows: Rows,
    start: int,
    stop: int,
    parts: list[pl.DataFrame],
    errors: dict[int, str],
    describe: Callable[[Exception], str],
) -> None:
    try:
        parts.append(build(rows[start:stop]))
        return
    except Exception as exc:  # polars raises several types for a value it cannot take
        if stop - start == 1:
            errors[start] = describe(exc)
            parts.append(build([]).clear(1))
            return
    middle = start + (stop - start) // 2
    _build_range(build, rows, start, middle, parts, errors, describe)
    _build_range(build, rows, middle, stop, parts, errors, describe)


def first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# -- from a block read (engine.decode.avro_block) ---------------------------------------


def block_payload_frame(values: pl.Series, after: Sequence[ColumnSpec]) -> pl.DataFrame:
    """`payload_frame` from the envelopes as one struct Series, as polars' Avro reader
    gives them (Avro's own widths: Int32, Float32, enums): the same columns and values."""
    dtype = values.dtype
    assert isinstance(dtype, pl.Struct)
    fields = {f.name: f.dtype for f in dtype.fields}
    env = pl.col("envelope")

    def top(name: str, target: pl.DataType) -> pl.Expr:
        if name not in fields:
            return pl.lit(None, dtype=target).alias(name)
        return env.struct.field(name).cast(target).alias(name)

    def nested(name: str, target: pl.Struct) -> pl.Expr:
        have = fields.get(name)
        if not isinstance(have, pl.Struct):
            return pl.lit(None, dtype=target).alias(name)
        return _struct_of(env.struct.field(name), {f.name for f in have.fields}, target).alias(name)

    frame = (
        values.alias("envelope")
        .to_frame()
        .select(
            top("op", pl.String()),
            top("ts_ms", pl.Int64()),
            nested("source", SOURCE),
            nested("after", native_row(after)),
        )
    )
    return frame.with_columns(_in_json_form(frame.get_column("after"), after))


def block_key_frame(keys: pl.Series, columns: Sequence[ColumnSpec]) -> pl.DataFrame:
    """`key_frame` from the keys as one struct Series, as polars' Avro reader gives them."""
    dtype = keys.dtype
    assert isinstance(dtype, pl.Struct)
    native = native_row(columns)
    typed = (
        keys.alias("key")
        .to_frame()
        .select(_struct_of(pl.col("key"), {f.name for f in dtype.fields}, native).alias("key"))
        .to_series()
    )
    return _in_json_form(typed, columns).struct.unnest()


def _struct_of(expr: pl.Expr, present: set[str], target: pl.Struct) -> pl.Expr:
    """The struct `expr` with the fields of `target`, each cast to its type (a field the
    value lacks: null, as the JSON parse gives it); null where `expr` is."""
    parts = [
        (
            expr.struct.field(f.name).cast(f.dtype)
            if f.name in present
            else pl.lit(None, dtype=f.dtype)
        ).alias(f.name)
        for f in target.fields
    ]
    if not parts:
        raise ValueError("a row without columns the decoder reads")
    return pl.when(expr.is_null()).then(None).otherwise(pl.struct(parts))
