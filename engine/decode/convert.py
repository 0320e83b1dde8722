"""Vectorized conversion of parsed JSON columns to their DuckDB-ready types.

Each function takes the raw polars Series the JSON reader produced for one
column (see engine.decode.logical.raw_dtype) and returns the typed Series plus
a mask of the rows whose value could not be converted (None when all could).
Pure functions: no I/O, no state.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from decimal import Decimal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from engine.decode.model import ColumnSpec

#: Debezium's value for a TOASTed column that the change did not carry.
TOAST_PLACEHOLDER = "__debezium_unavailable_value"
#: The same placeholder as a bytes column shows it (base64 of its UTF-8 bytes).
TOAST_PLACEHOLDER_B64 = base64.b64encode(TOAST_PLACEHOLDER.encode()).decode()
#: ... and as a numeric array shows it: one element per byte of the placeholder.
TOAST_PLACEHOLDER_CODES = ",".join(str(b) for b in TOAST_PLACEHOLDER.encode())

_UUID_PATTERN = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
_INT_DTYPES: dict[str, pl.DataType] = {
    "TINYINT": pl.Int8(),
    "SMALLINT": pl.Int16(),
    "INTEGER": pl.Int32(),
    "BIGINT": pl.Int64(),
}
_TIME_FACTOR = {"time_ms": 1_000_000, "time_us": 1_000, "time_ns": 1}
_TS_UNIT = {"ts_ms": "ms", "ts_us": "us", "ts_ns": "ns"}

Converted = tuple[pl.Series, pl.Series | None]


def convert(raw: pl.Series, spec: ColumnSpec) -> Converted:
    """Convert one raw column to the type `spec` describes."""
    kind = spec.kind
    if kind == "int":
        return _checked(raw, raw.cast(_INT_DTYPES.get(spec.duck_type, pl.Int64()), strict=False))
    if kind == "float":
        target = pl.Float32() if spec.duck_type == "FLOAT" else pl.Float64()
        return raw.cast(target), None
    if kind in ("bool", "string"):
        return raw, None
    if kind == "bytes":
        return _checked(raw, raw.str.decode("base64", strict=False))
    if kind == "decimal":
        assert spec.precision is not None and spec.scale is not None
        return decimal_from_base64(raw, spec.precision, spec.scale)
    if kind == "decimal_text":
        return _per_value(raw, lambda v: _decimal_text(v, spec.scale or 0))
    if kind == "vdecimal":
        return _variable_scale(raw)
    if kind == "date":
        return _checked(raw, raw.cast(pl.Int32(), strict=False).cast(pl.Date()))
    if kind in _TIME_FACTOR:
        nanos = raw * _TIME_FACTOR[kind]
        in_day = (nanos >= 0) & (nanos < 86_400_000_000_000)
        out = pl.select(pl.when(in_day).then(nanos).otherwise(None).cast(pl.Time())).to_series()
        return _checked(raw, out.alias(raw.name))
    if kind in _TS_UNIT:
        out = raw.cast(pl.Datetime(_TS_UNIT[kind]))  # type: ignore[arg-type]
        if kind == "ts_ms":
            out = out.cast(pl.Datetime("us"))
        return out, None
    if kind == "tstz":
        out = raw.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
        return _checked(raw, out)
    if kind == "interval_us":
        return raw.cast(pl.Duration("us")), None
    if kind == "cast":
        if spec.duck_type == "UUID":
            ok = raw.str.contains(_UUID_PATTERN)
            return raw, _mask(raw.is_not_null() & ~ok.fill_null(True))
        return raw, None
    if kind == "list":
        assert spec.element is not None
        return _convert_list(raw, spec.element)
    if kind == "struct":
        return raw.struct.json_encode(), None
    # unsupported: nothing parsed, the column stays NULL.
    return pl.Series(raw.name, [None] * len(raw), dtype=pl.String()), None


def placeholder_mask(raw: pl.Series, spec: ColumnSpec) -> pl.Series | None:
    """Rows whose raw value is Debezium's TOAST placeholder (None: the type cannot carry one)."""
    dtype = raw.dtype
    expr = _placeholder_expr(spec.name, spec, dtype)
    if expr is not None:
        return raw.to_frame(spec.name).select(expr).to_series().alias(raw.name)
    if isinstance(dtype, pl.List) and dtype.inner.is_numeric():
        candidate = raw.list.len() == len(TOAST_PLACEHOLDER.encode())
        if not candidate.any():
            return candidate.fill_null(False)
        joined = pl.select(
            pl.when(candidate).then(
                raw.list.eval(pl.element().cast(pl.String)).list.join(",")
                == TOAST_PLACEHOLDER_CODES
            )
        ).to_series()
        return joined.fill_null(False)
    return None


def decimal_from_base64(raw: pl.Series, precision: int, scale: int) -> Converted:
    """Connect Decimal: base64 of the big-endian two's complement unscaled value.

    Vectorized with numpy: the value bytes are sign-extended into 16-byte rows,
    which (reversed to little-endian) are exactly Arrow's decimal128 buffer.
    """
    binary = raw.str.decode("base64", strict=False)
    bad = raw.is_not_null() & binary.is_null()
    arr = binary.to_arrow()
    if not pa.types.is_large_binary(arr.type):
        arr = arr.cast(pa.large_binary())
    arr = pa.concat_arrays([arr]) if arr.offset else arr
    n = len(arr)
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64, count=n + 1) if n else np.zeros(1, np.int64)
    data = (
        np.frombuffer(buffers[2], dtype=np.uint8)
        if len(buffers) > 2 and buffers[2] is not None
        else np.zeros(0, dtype=np.uint8)
    )
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    # An empty value is not a two's complement number; more than 16 bytes overflow.
    too_long = (lengths > 16) | (lengths == 0)
    lengths = np.where(too_long, 0, lengths)
    rows16 = np.zeros((n, 16), dtype=np.uint8)
    has_bytes = lengths > 0
    negative = np.zeros(n, dtype=bool)
    negative[has_bytes] = data[starts[has_bytes]] >= 0x80
    rows16[negative] = 0xFF
    total = int(lengths.sum())
    if total:
        row_of = np.repeat(np.arange(n), lengths)
        first_flat = np.cumsum(lengths) - lengths
        within = np.arange(total) - np.repeat(first_flat, lengths)
        rows16[row_of, 16 - np.repeat(lengths, lengths) + within] = data[
            np.repeat(starts, lengths) + within
        ]
    little_endian = np.ascontiguousarray(rows16[:, ::-1])
    ok = valid & ~too_long
    validity = pa.py_buffer(np.packbits(ok, bitorder="little").tobytes())
    dec = pa.Array.from_buffers(
        pa.decimal128(38, scale), n, [validity, pa.py_buffer(little_endian.tobytes())]
    )
    wide = pl.Series(raw.name, dec)
    out = wide.cast(pl.Decimal(precision, scale), strict=False)
    bad_all = bad | pl.Series(too_long & valid) | (wide.is_not_null() & out.is_null())
    return out, _mask(bad_all)


def _unscaled(b64: str) -> int:
    return int.from_bytes(base64.b64decode(b64, validate=True), "big", signed=True)


def _decimal_text(b64: str, scale: int) -> str:
    return exact_decimal_text(_unscaled(b64), scale)


def exact_decimal_text(unscaled: int, scale: int) -> str:
    """`unscaled * 10**-scale` as plain decimal text, with no rounding at any size."""
    # Built from a string, a Decimal is exact; arithmetic would round to the context.
    return format(Decimal(f"{unscaled}E{-scale}"), "f")


def _variable_scale(raw: pl.Series) -> Converted:
    scales = raw.struct.field("scale").to_list()
    values = raw.struct.field("value").to_list()
    out: list[str | None] = []
    bad: list[bool] = []
    for scale, value in zip(scales, values, strict=True):
        if value is None:
            out.append(None)
            bad.append(False)
            continue
        try:
            out.append(exact_decimal_text(_unscaled(value), int(scale or 0)))
            bad.append(False)
        except (binascii.Error, ValueError, TypeError):
            out.append(None)
            bad.append(True)
    return pl.Series(raw.name, out, dtype=pl.String()), _mask(pl.Series(bad, dtype=pl.Boolean()))


def _per_value(raw: pl.Series, fn: object) -> Converted:
    out: list[str | None] = []
    bad: list[bool] = []
    for value in raw.to_list():
        if value is None:
            out.append(None)
            bad.append(False)
            continue
        try:
            out.append(fn(value))  # type: ignore[operator]
            bad.append(False)
        except (binascii.Error, ValueError, TypeError):
            out.append(None)
            bad.append(True)
    return pl.Series(raw.name, out, dtype=pl.String()), _mask(pl.Series(bad, dtype=pl.Boolean()))


def _convert_list(raw: pl.Series, element: ColumnSpec) -> Converted:
    arr = raw.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_large_list(arr.type):
        arr = arr.cast(pa.large_list(arr.type.value_type))
    arr = pa.concat_arrays([arr]) if arr.offset else arr
    flat = arr.values.slice(
        arr.offsets[0].as_py(), arr.offsets[-1].as_py() - arr.offsets[0].as_py()
    )
    offsets = pc.subtract(arr.offsets, arr.offsets[0])
    inner, inner_bad = convert(pl.Series("item", flat), element)
    inner_arrow = inner.to_arrow()
    if isinstance(inner_arrow, pa.ChunkedArray):
        inner_arrow = inner_arrow.combine_chunks()
    rebuilt = pa.LargeListArray.from_arrays(offsets, inner_arrow, mask=arr.is_null())
    out = pl.Series(raw.name, rebuilt)
    if inner_bad is None:
        return out, None
    # A row is bad when any of its items is.
    row_of_item = np.repeat(np.arange(len(arr)), np.diff(np.asarray(offsets)))
    bad_rows = np.zeros(len(arr), dtype=bool)
    bad_rows[row_of_item[inner_bad.to_numpy()]] = True
    return out, _mask(pl.Series(bad_rows))


def _checked(raw: pl.Series, out: pl.Series) -> Converted:
    """A conversion failed where the input had a value and the output has none."""
    return out, _mask(raw.is_not_null() & out.is_null())


def _mask(bad: pl.Series) -> pl.Series | None:
    return bad if bad.any() else None


# -- whole frames: one polars pass for many columns -------------------------------------
#
# A batch at the live tail holds a few rows per table, where each Series operation costs
# more than its rows: the columns of a table are converted in one `select` (the kinds an
# expression converts; the rest per column, as `convert` does).


def placeholder_masks(raw: pl.DataFrame, specs: Sequence[ColumnSpec]) -> dict[str, pl.Series]:
    """The rows of each column of `raw` (named as its spec) that hold Debezium's TOAST
    placeholder, for the columns where any does; what `placeholder_mask` gives per column."""
    exprs: list[pl.Expr] = []
    out: dict[str, pl.Series] = {}
    for spec in specs:
        dtype = raw.schema[spec.name]
        expr = _placeholder_expr(spec.name, spec, dtype)
        if expr is not None:
            exprs.append(expr.alias(spec.name))
        elif isinstance(dtype, pl.List) and dtype.inner.is_numeric():
            mask = placeholder_mask(raw.get_column(spec.name), spec)
            if mask is not None and mask.any():
                out[spec.name] = mask
    if exprs:
        masks = raw.select(exprs)
        hit = masks.select(pl.all().any()).row(0)
        for name, any_hit in zip(masks.columns, hit, strict=True):
            if any_hit:
                out[name] = masks.get_column(name)
    return out


def _placeholder_expr(name: str, spec: ColumnSpec, dtype: pl.DataType) -> pl.Expr | None:
    """Whether column `name` holds the placeholder, for the dtypes an expression checks
    (text, a list of text); None for the others."""
    column = pl.col(name)
    if dtype == pl.String():
        target = TOAST_PLACEHOLDER_B64 if spec.kind == "bytes" else TOAST_PLACEHOLDER
        return (column == target).fill_null(False)
    if isinstance(dtype, pl.List) and dtype.inner == pl.String():
        assert spec.element is not None
        target = TOAST_PLACEHOLDER_B64 if spec.element.kind == "bytes" else TOAST_PLACEHOLDER
        return ((column.list.len() == 1) & (column.list.first() == target)).fill_null(False)
    return None


def convert_columns(
    raw: pl.DataFrame, specs: Sequence[ColumnSpec]
) -> tuple[dict[str, pl.Series], dict[str, pl.Series]]:
    """Convert the columns of `raw` (one per spec, named as it) to their types, as
    `convert` does each: the typed columns by name, and for each column with a value
    that could not be converted, the mask of those rows."""
    exprs: list[pl.Expr] = []
    checks: list[pl.Expr] = []
    typed: dict[str, pl.Series] = {}
    bad: dict[str, pl.Series] = {}
    for spec in specs:
        converted = _expression(spec, pl.col(spec.name))
        if converted is None:
            out, mask = convert(raw.get_column(spec.name), spec)
            typed[spec.name] = out.alias(spec.name)
            if mask is not None:
                bad[spec.name] = mask
            continue
        expr, check = converted
        exprs.append(expr.alias(spec.name))
        if check is not None:
            checks.append(check.alias(spec.name))
    if exprs:
        frame = raw.select(exprs)
        typed.update((name, frame.get_column(name)) for name in frame.columns)
    if checks:
        masks = raw.select(checks)
        hit = masks.select(pl.all().any()).row(0)
        for name, any_bad in zip(masks.columns, hit, strict=True):
            if any_bad:
                bad[name] = masks.get_column(name)
    return {spec.name: typed[spec.name] for spec in specs}, bad


def _expression(spec: ColumnSpec, raw: pl.Expr) -> tuple[pl.Expr, pl.Expr | None] | None:
    """`convert` of one kind as an expression over the raw column: (typed, the rows
    that could not be converted or None when none can fail); None for the kinds only
    `convert` does (decimals, lists)."""
    kind = spec.kind
    if kind == "int":
        return _checked_expr(
            raw, raw.cast(_INT_DTYPES.get(spec.duck_type, pl.Int64()), strict=False)
        )
    if kind == "float":
        return raw.cast(pl.Float32() if spec.duck_type == "FLOAT" else pl.Float64()), None
    if kind in ("bool", "string"):
        return raw, None
    if kind == "bytes":
        return _checked_expr(raw, raw.str.decode("base64", strict=False))
    if kind == "date":
        return _checked_expr(raw, raw.cast(pl.Int32(), strict=False).cast(pl.Date()))
    if kind in _TIME_FACTOR:
        nanos = raw * _TIME_FACTOR[kind]
        in_day = (nanos >= 0) & (nanos < 86_400_000_000_000)
        return _checked_expr(raw, pl.when(in_day).then(nanos).otherwise(None).cast(pl.Time()))
    if kind in _TS_UNIT:
        out = raw.cast(pl.Datetime(_TS_UNIT[kind]))  # type: ignore[arg-type]
        return (out.cast(pl.Datetime("us")) if kind == "ts_ms" else out), None
    if kind == "tstz":
        return _checked_expr(
            raw, raw.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
        )
    if kind == "interval_us":
        return raw.cast(pl.Duration("us")), None
    if kind == "cast":
        if spec.duck_type == "UUID":
            ok = raw.str.contains(_UUID_PATTERN)
            return raw, raw.is_not_null() & ~ok.fill_null(True)
        return raw, None
    if kind == "struct":
        return raw.struct.json_encode(), None
    if kind in ("decimal", "decimal_text", "vdecimal", "list"):
        return None
    # unsupported: nothing parsed, the column stays NULL.
    return pl.repeat(None, pl.len(), dtype=pl.String()), None


def _checked_expr(raw: pl.Expr, out: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    return out, raw.is_not_null() & out.is_null()
