"""Postgres types for DuckDB columns and parameters, in the wire protocol's formats.

A result column gets the Postgres type OID that a client expects for its DuckDB
type (DECIMAL -> numeric, TIMESTAMP WITH TIME ZONE -> timestamptz, INTEGER[] ->
int4[], ...), and its Arrow values are written in the text format (the default
of every client) or, for the types that have one here, the binary format.
Values that Python cannot hold (DuckDB's infinite dates and timestamps) are
written as Postgres writes them, `infinity` / `-infinity`.

Parameters of the extended protocol arrive as text or binary values with the
type the client declared; `literal` turns one into a typed SQL literal, which
the caller puts into the statement before it goes through the query API's
checks (engine.serve.safety) like any typed SQL.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pyarrow as pa

from engine.core.errors import QueryError

# -- type OIDs (Postgres' pg_type.dat) --------------------------------------------------

BOOL, BYTEA, INT8, INT2, INT4, TEXT, JSON = 16, 17, 20, 21, 23, 25, 114
FLOAT4, FLOAT8, UNKNOWN, VARCHAR, DATE, TIME = 700, 701, 705, 1043, 1082, 1083
TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ, NUMERIC, UUID, JSONB = (
    1114, 1184, 1186, 1266, 1700, 2950, 3802,
)  # fmt: skip

#: Array type OID per element type OID.
ARRAY_OF = {
    BOOL: 1000, BYTEA: 1001, INT2: 1005, INT4: 1007, INT8: 1016, TEXT: 1009, JSON: 199,
    FLOAT4: 1021, FLOAT8: 1022, VARCHAR: 1015, DATE: 1182, TIME: 1183, TIMESTAMP: 1115,
    TIMESTAMPTZ: 1185, INTERVAL: 1187, NUMERIC: 1231, UUID: 2951,
}  # fmt: skip

#: Postgres type names, for messages and the catalog answers.
TYPE_NAMES = {
    BOOL: "boolean", BYTEA: "bytea", INT8: "bigint", INT2: "smallint", INT4: "integer",
    TEXT: "text", JSON: "json", FLOAT4: "real", FLOAT8: "double precision",
    VARCHAR: "character varying", DATE: "date", TIME: "time without time zone",
    TIMESTAMP: "timestamp without time zone", TIMESTAMPTZ: "timestamp with time zone",
    INTERVAL: "interval", TIMETZ: "time with time zone", NUMERIC: "numeric", UUID: "uuid",
    JSONB: "jsonb", UNKNOWN: "unknown",
}  # fmt: skip

#: Fixed sizes of the scalar types, as RowDescription carries them (-1: variable).
_SIZES = {
    BOOL: 1, INT2: 2, INT4: 4, INT8: 8, FLOAT4: 4, FLOAT8: 8, DATE: 4, TIME: 8,
    TIMESTAMP: 8, TIMESTAMPTZ: 8, INTERVAL: 16, TIMETZ: 12, UUID: 16,
}  # fmt: skip

#: DuckDB scalar type name -> Postgres OID.
_SCALARS = {
    "BOOLEAN": BOOL, "TINYINT": INT2, "SMALLINT": INT2, "UTINYINT": INT2,
    "INTEGER": INT4, "USMALLINT": INT4, "BIGINT": INT8, "UINTEGER": INT8,
    "UBIGINT": NUMERIC, "HUGEINT": NUMERIC, "UHUGEINT": NUMERIC, "BIGNUM": NUMERIC,
    "VARINT": NUMERIC, "FLOAT": FLOAT4, "DOUBLE": FLOAT8, "VARCHAR": TEXT, "BLOB": BYTEA,
    "DATE": DATE, "TIME": TIME, "TIME WITH TIME ZONE": TIMETZ, "TIMESTAMP": TIMESTAMP,
    "TIMESTAMP_S": TIMESTAMP, "TIMESTAMP_MS": TIMESTAMP, "TIMESTAMP_NS": TIMESTAMP,
    "TIMESTAMP WITH TIME ZONE": TIMESTAMPTZ, "INTERVAL": INTERVAL, "UUID": UUID,
    "JSON": JSON,
}  # fmt: skip

_PG_EPOCH = dt.datetime(2000, 1, 1)
_PG_EPOCH_DATE = dt.date(2000, 1, 1)
_UTC = dt.UTC


def oid_of(duckdb_type: str) -> int:
    """The Postgres type OID a client sees for a DuckDB type (text for the rest)."""
    kind = duckdb_type.strip().upper()
    if kind.startswith("DECIMAL"):
        return NUMERIC
    if kind.endswith("[]") and "[]" not in kind[:-2] and "(" not in kind:
        element = _SCALARS.get(kind[:-2])
        if element in ARRAY_OF:
            return ARRAY_OF[element]
        return TEXT
    if kind.startswith(("STRUCT", "MAP", "UNION")) or kind.endswith("]"):
        return JSON
    return _SCALARS.get(kind, TEXT)


def size_of(oid: int) -> int:
    return _SIZES.get(oid, -1)


# -- results: Arrow values to wire bytes ----------------------------------------------


def encode_column(values: pa.ChunkedArray | pa.Array, oid: int, binary: bool) -> list[bytes | None]:
    """Every value of one result column in the text (or binary) format of `oid`."""
    encode = _binary_encoder(oid) if binary else _text_encoder(oid)
    values = _micro_precision(values)
    out: list[bytes | None] = []
    for scalar in _scalars(values):
        if not scalar.is_valid:
            out.append(None)
            continue
        try:
            value = scalar.as_py()
        except (OverflowError, ValueError):
            out.append(_out_of_range(scalar, oid, binary))
            continue
        out.append(encode(value))
    return out


def has_binary(oid: int) -> bool:
    return oid in _BINARY


def _micro_precision(values: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Nanosecond timestamps and times cut to microseconds, Postgres' precision."""
    kind = values.type
    if pa.types.is_timestamp(kind) and kind.unit == "ns":
        return values.cast(pa.timestamp("us", kind.tz), safe=False)
    if pa.types.is_time64(kind) and kind.unit == "ns":
        return values.cast(pa.time64("us"), safe=False)
    return values


def _scalars(values: pa.ChunkedArray | pa.Array) -> Any:
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    for chunk in chunks:
        yield from chunk


def _out_of_range(scalar: pa.Scalar, oid: int, binary: bool) -> bytes:
    """DuckDB's infinite dates and timestamps (their type's extreme integers), as
    Postgres writes its own: `infinity` / `-infinity`, or the extreme binary value."""
    raw = getattr(scalar, "value", None)
    if not isinstance(raw, int):
        raise QueryError("failed", f"a value of type {scalar.type} cannot be sent: {scalar}")
    if binary:
        if oid == DATE:
            return struct.pack("!i", -(2**31) if raw < 0 else 2**31 - 1)
        return struct.pack("!q", -(2**63) if raw < 0 else 2**63 - 1)
    return b"-infinity" if raw < 0 else b"infinity"


def _text_encoder(oid: int) -> Callable[[Any], bytes]:
    if oid in _ARRAY_ELEMENT:
        element = _text_encoder(_ARRAY_ELEMENT[oid])
        return lambda v: _array_text(v, element)
    return lambda v: _text(v, oid).encode()


def _text(value: Any, oid: int) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, dt.datetime):
        return _timestamp_text(value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, pa.MonthDayNano):
        return _interval_text(value)
    if isinstance(value, dt.timedelta):
        return _interval_text(pa.MonthDayNano([0, value.days, _micros(value) * 1000]))
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(_jsonable(value), ensure_ascii=False, separators=(", ", ": "))
    if oid == JSON and not isinstance(value, str):
        return json.dumps(_jsonable(value))
    return str(value)


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _decimal_text(value: Decimal) -> str:
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "Infinity" if value > 0 else "-Infinity"
    return format(value, "f")


def _timestamp_text(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(_UTC)
        text = value.replace(tzinfo=None).isoformat(sep=" ")
        return text + "+00"
    return value.isoformat(sep=" ")


def _interval_text(value: pa.MonthDayNano) -> str:
    """Postgres' own interval style (IntervalStyle=postgres), which every client parses."""
    months, days, nanos = value.months, value.days, value.nanoseconds
    parts = []
    years, months = int(months / 12), months - int(months / 12) * 12
    if years:
        parts.append(f"{years} year{'s' if abs(years) != 1 else ''}")
    if months:
        parts.append(f"{months} mon{'s' if abs(months) != 1 else ''}")
    if days:
        parts.append(f"{days} day{'s' if abs(days) != 1 else ''}")
    micros = int(nanos / 1000)
    if micros or not parts:
        sign = "-" if micros < 0 else ""
        micros = abs(micros)
        hours, rest = divmod(micros, 3_600_000_000)
        minutes, rest = divmod(rest, 60_000_000)
        seconds, fraction = divmod(rest, 1_000_000)
        clock = f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"
        if fraction:
            clock += f".{fraction:06d}".rstrip("0")
        parts.append(clock)
    return " ".join(parts)


def _array_text(values: list[Any], element: Callable[[Any], bytes]) -> bytes:
    items = []
    for v in values:
        if v is None:
            items.append("NULL")
            continue
        text = element(v).decode()
        if text == "" or text.upper() == "NULL" or re.search(r'[{},"\\\s]', text):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        items.append(text)
    return ("{" + ",".join(items) + "}").encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, pa.MonthDayNano):
        return _interval_text(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # DuckDB MAPs come out of Arrow as lists of (key, value) pairs.
        if value and all(isinstance(i, tuple) and len(i) == 2 for i in value):
            return {str(k): _jsonable(v) for k, v in value}
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return _text(value, TEXT)


_ARRAY_ELEMENT = {array: element for element, array in ARRAY_OF.items()}


# -- binary results ---------------------------------------------------------------------


def _micros(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _timestamp_binary(value: dt.datetime) -> bytes:
    if value.tzinfo is not None:
        value = value.astimezone(_UTC).replace(tzinfo=None)
    return struct.pack("!q", _micros(value - _PG_EPOCH))


def _time_binary(value: dt.time) -> bytes:
    micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000
    return struct.pack("!q", micros + value.microsecond)


def _interval_binary(value: pa.MonthDayNano) -> bytes:
    return struct.pack("!qii", int(value.nanoseconds / 1000), value.days, value.months)


def _numeric_binary(value: Decimal) -> bytes:
    """Postgres' numeric: base-10000 digits with weight, sign and display scale."""
    if value.is_nan():
        return struct.pack("!hhHh", 0, 0, 0xC000, 0)
    if value.is_infinite():
        return struct.pack("!hhHh", 0, 0, 0xD000 if value > 0 else 0xF000, 0)
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    scale = max(0, -exponent)
    text = "".join(map(str, digits))
    integer, fraction = (
        (text[:exponent] or "0", text[exponent:].rjust(scale, "0"))
        if exponent < 0
        else (text + "0" * exponent, "")
    )
    integer = integer.lstrip("0")
    integer = integer.rjust((len(integer) + 3) // 4 * 4, "0")
    fraction = fraction.ljust((len(fraction) + 3) // 4 * 4, "0")
    groups = [int(integer[i : i + 4]) for i in range(0, len(integer), 4)]
    weight = len(groups) - 1
    groups += [int(fraction[i : i + 4]) for i in range(0, len(fraction), 4)]
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    head = struct.pack("!hhHh", len(groups), weight, 0x4000 if sign else 0, scale)
    return head + struct.pack(f"!{len(groups)}H", *groups)


_BINARY: dict[int, Callable[[Any], bytes]] = {
    BOOL: lambda v: b"\x01" if v else b"\x00",
    INT2: lambda v: struct.pack("!h", v),
    INT4: lambda v: struct.pack("!i", v),
    INT8: lambda v: struct.pack("!q", v),
    FLOAT4: lambda v: struct.pack("!f", v),
    FLOAT8: lambda v: struct.pack("!d", v),
    NUMERIC: lambda v: _numeric_binary(Decimal(v)),
    TEXT: lambda v: str(v).encode(),
    VARCHAR: lambda v: str(v).encode(),
    JSON: lambda v: (v if isinstance(v, str) else json.dumps(_jsonable(v))).encode(),
    BYTEA: bytes,
    UUID: lambda v: uuid.UUID(str(v)).bytes,
    DATE: lambda v: struct.pack("!i", (v - _PG_EPOCH_DATE).days),
    TIME: _time_binary,
    TIMESTAMP: _timestamp_binary,
    TIMESTAMPTZ: _timestamp_binary,
    INTERVAL: _interval_binary,
}


def _binary_encoder(oid: int) -> Callable[[Any], bytes]:
    encoder = _BINARY.get(oid)
    if encoder is None:
        raise QueryError(
            "invalid",
            f"the binary format of type {TYPE_NAMES.get(oid, oid)} is not supported by this "
            "endpoint: ask for text results (the default of psql, psycopg and JDBC)",
        )
    return encoder


# -- parameters ---------------------------------------------------------------------------

#: Declared parameter OID -> the DuckDB type its literal is cast to (absent: no cast,
#: DuckDB casts the string literal where it is used).
_PARAM_CASTS = {
    BOOL: "BOOLEAN", INT2: "SMALLINT", INT4: "INTEGER", INT8: "BIGINT", FLOAT4: "FLOAT",
    FLOAT8: "DOUBLE", TEXT: "VARCHAR", VARCHAR: "VARCHAR", DATE: "DATE", TIME: "TIME",
    TIMESTAMP: "TIMESTAMP", TIMESTAMPTZ: "TIMESTAMPTZ", INTERVAL: "INTERVAL", UUID: "UUID",
    JSON: "JSON", JSONB: "JSON", BYTEA: "BLOB",
}  # fmt: skip


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


@dataclass(frozen=True)
class Param:
    """One bound parameter: its declared type and its value in the format it came in."""

    oid: int
    value: bytes | None
    binary: bool


def literal(param: Param) -> str:
    """A SQL literal for `param` (a quoted string with a cast, or NULL)."""
    if param.value is None:
        return "NULL"
    text = _param_binary_text(param) if param.binary else _utf8(param.value)
    if "\x00" in text:
        raise QueryError("invalid", "a parameter value holds a NUL character")
    if param.oid == BYTEA and not param.binary:
        text = _bytea_text(text)
    if param.oid == NUMERIC and _NUMBER.fullmatch(text.strip()):
        return f"({text.strip()})"  # DuckDB reads it as an exact DECIMAL of its own scale
    quoted = "'" + text.replace("'", "''") + "'"
    if param.oid == NUMERIC:
        return f"CAST({quoted} AS DOUBLE)"  # NaN, Infinity
    if param.oid == BYTEA:
        return f"from_hex({quoted})"
    cast = _PARAM_CASTS.get(param.oid)
    return f"CAST({quoted} AS {cast})" if cast else quoted


def param_type_name(oid: int) -> str:
    return TYPE_NAMES.get(oid, str(oid))


def _utf8(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise QueryError("invalid", "a parameter value is not valid UTF-8") from None


def _bytea_text(text: str) -> str:
    """The hex digits of a bytea given in text form (`\\x...` or the escape form)."""
    if text.startswith("\\x"):
        return text[2:]
    return text.encode("latin-1", "backslashreplace").hex()


def _param_binary_text(param: Param) -> str:
    raw = param.value or b""
    oid = param.oid
    try:
        if oid == BOOL:
            return "true" if raw != b"\x00" else "false"
        if oid in (INT2, INT4, INT8):
            return str(int.from_bytes(raw, "big", signed=True))
        if oid == FLOAT4:
            return repr(struct.unpack("!f", raw)[0])
        if oid == FLOAT8:
            return repr(struct.unpack("!d", raw)[0])
        if oid in (TEXT, VARCHAR, UNKNOWN, JSON, 0):
            return _utf8(raw)
        if oid == JSONB:
            return _utf8(raw[1:])  # version byte 1, then the text
        if oid == BYTEA:
            return raw.hex()
        if oid == NUMERIC:
            return _numeric_from_binary(raw)
        if oid == UUID:
            return str(uuid.UUID(bytes=raw))
        if oid == DATE:
            return (_PG_EPOCH_DATE + dt.timedelta(days=struct.unpack("!i", raw)[0])).isoformat()
        if oid in (TIMESTAMP, TIMESTAMPTZ):
            moment = _PG_EPOCH + dt.timedelta(microseconds=struct.unpack("!q", raw)[0])
            return moment.isoformat(sep=" ") + ("+00" if oid == TIMESTAMPTZ else "")
    except (struct.error, ValueError, OverflowError):
        raise QueryError(
            "invalid", f"a binary parameter of type {param_type_name(oid)} is malformed"
        ) from None
    raise QueryError(
        "invalid",
        f"binary parameters of type {param_type_name(oid)} are not supported by this "
        "endpoint: send the parameter as text",
    )


def _numeric_from_binary(raw: bytes) -> str:
    count, weight, sign, scale = struct.unpack_from("!hhHh", raw)
    if sign == 0xC000:
        return "NaN"
    if sign in (0xD000, 0xF000):
        return "Infinity" if sign == 0xD000 else "-Infinity"
    digits = struct.unpack_from(f"!{count}H", raw, 8)
    value = sum(
        (Decimal(d) * Decimal(10000) ** (weight - i) for i, d in enumerate(digits)), Decimal(0)
    )
    value = value.quantize(Decimal(1).scaleb(-scale)) if scale else value
    return ("-" if sign == 0x4000 else "") + format(value, "f")
