"""A query result as JSON (columns, rows, row count, truncated flag) or as Arrow IPC.

JSON keeps every value exact: DECIMAL and HUGEINT values are strings (a JSON
number would go through a float in most readers), timestamps ISO 8601 strings
(with the offset for TIMESTAMPTZ), INTERVAL an ISO 8601 duration, BLOB base64,
NaN and infinities the strings "NaN", "Infinity", "-Infinity"; lists, structs
and maps become arrays and objects.

Arrow IPC is DuckDB's own Arrow export as a stream, but with INTERVAL columns
as `duration[us]` (a month counted as 30 days, DuckDB's convention; exact for
the state's intervals, which Debezium sends as microseconds): polars and some
other readers cannot import Arrow's month-day-nano intervals.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import math
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from engine.serve.query import QueryResult

#: Media type of an Arrow IPC stream.
ARROW_STREAM = "application/vnd.apache.arrow.stream"
#: Response headers that carry the JSON payload's extra fields with Arrow output.
ROW_COUNT_HEADER = "X-Changefold-Row-Count"
TRUNCATED_HEADER = "X-Changefold-Truncated"
ELAPSED_HEADER = "X-Changefold-Elapsed-Ms"
#: The human consistency line (`consistent as of ...`); the frontier itself is in the
#: Arrow schema metadata, key `changefold.consistent_as_of` (JSON, or null).
CONSISTENCY_HEADER = "X-Changefold-Consistency"

_US_PER_DAY = 86_400_000_000


def to_payload(result: QueryResult) -> dict[str, Any]:
    """The JSON body of a query answer."""
    columns = [column.to_pylist() for column in result.table.columns]
    rows = [[jsonable(v) for v in row] for row in zip(*columns, strict=True)]
    return {
        "columns": [{"name": c.name, "type": c.type} for c in result.columns],
        "rows": rows,
        "row_count": result.row_count,
        "truncated": result.truncated,
        "elapsed_ms": round(result.elapsed_ms, 3),
        **(result.consistency.to_json() if result.consistency is not None else {}),
    }


def to_json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def to_arrow_stream(result: QueryResult) -> bytes:
    """The rows as an Arrow IPC stream; truncation is in the schema metadata too."""
    table = portable(result.table)
    metadata = dict(table.schema.metadata or {})
    metadata[b"changefold.truncated"] = b"true" if result.truncated else b"false"
    if result.consistency is not None:
        fields = result.consistency.to_json()
        metadata[b"changefold.consistent_as_of"] = json.dumps(fields["consistent_as_of"]).encode()
        metadata[b"changefold.consistency"] = fields["consistency"].encode()
    table = table.replace_schema_metadata(metadata)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def portable(table: pa.Table) -> pa.Table:
    """INTERVAL (month_day_nano) columns as duration[us], which every Arrow reader knows."""
    for index, field in enumerate(table.schema):
        if pa.types.is_interval(field.type):
            table = table.set_column(
                index,
                pa.field(field.name, pa.duration("us"), field.nullable, field.metadata),
                _interval_to_duration(table.column(index)),
            )
    return table


def _interval_to_duration(column: pa.ChunkedArray) -> pa.Array:
    values = [
        None if v is None else (v.months * 30 + v.days) * _US_PER_DAY + v.nanoseconds // 1000
        for v in column.to_pylist()
    ]
    return pc.cast(pa.array(values, pa.int64()), pa.duration("us"))


def jsonable(value: Any) -> Any:
    """One DuckDB value (as pyarrow gives it) as a JSON-ready Python value."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return iso_duration(0, value.days, value.seconds * 10**9 + value.microseconds * 1000)
    if isinstance(value, pa.MonthDayNano):
        return iso_duration(value.months, value.days, value.nanoseconds)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        if value and all(isinstance(p, tuple) and len(p) == 2 for p in value):
            # a MAP: pairs; an object when every key is a string
            if all(isinstance(k, str) for k, _ in value):
                return {k: jsonable(v) for k, v in value}
            return [[jsonable(k), jsonable(v)] for k, v in value]
        return [jsonable(v) for v in value]
    return str(value)


def iso_duration(months: int, days: int, nanoseconds: int) -> str:
    """An ISO 8601 duration, e.g. P1M2DT3H4M5.5S; negative parts keep their sign."""
    date = ""
    if months:
        years, rest = divmod(abs(months), 12)
        sign = "-" if months < 0 else ""
        date += f"{sign}{years}Y" if years else ""
        date += f"{sign}{rest}M" if rest else ""
    if days:
        date += f"{days}D"
    time = ""
    if nanoseconds:
        sign = "-" if nanoseconds < 0 else ""
        total = abs(nanoseconds)
        hours, total = divmod(total, 3600 * 10**9)
        minutes, total = divmod(total, 60 * 10**9)
        seconds = Decimal(total) / Decimal(10**9)
        time += f"{sign}{hours}H" if hours else ""
        time += f"{sign}{minutes}M" if minutes else ""
        if seconds:
            time += f"{sign}{seconds.normalize():f}S"
    if not date and not time:
        return "PT0S"
    return "P" + date + ("T" + time if time else "")
