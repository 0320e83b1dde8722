"""Parse many JSON objects at once, isolating the ones that cannot be read.

The happy path is one `polars.read_ndjson` call over the newline-joined
payloads. When that fails (malformed JSON, a value of the wrong type), the
input is bisected until each bad line stands alone, so one garbage message
costs a few extra parses instead of the batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import polars as pl

Schema = Mapping[str, pl.DataType]


def parse_lines(lines: Sequence[bytes], schema: Schema) -> tuple[pl.DataFrame, dict[int, str]]:
    """One row per line, typed by `schema`; unreadable lines give a null row and an error.

    Returns the frame and {line index: reason}.
    """
    errors: dict[int, str] = {}
    parts: list[pl.DataFrame] = []
    _parse_range(lines, 0, len(lines), dict(schema), parts, errors)
    if not parts:
        return pl.DataFrame(schema=dict(schema)), errors
    frame = parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical")
    return frame, errors


def infer_schema(lines: Sequence[bytes]) -> dict[str, pl.DataType]:
    """The polars schema of JSON objects without a declared schema (all lines looked at)."""
    readable = [line for line in lines if _loads_object(line) is not None]
    if not readable:
        return {}
    frame = pl.read_ndjson(b"\n".join(readable), infer_schema_length=None)
    return dict(frame.schema)


def _parse_range(
    lines: Sequence[bytes],
    start: int,
    stop: int,
    schema: dict[str, pl.DataType],
    parts: list[pl.DataFrame],
    errors: dict[int, str],
) -> None:
    count = stop - start
    if count <= 0:
        return
    chunk = lines[start:stop]
    try:
        frame = pl.read_ndjson(b"\n".join(chunk), schema=schema)
        problem = "" if frame.height == count else "the message is not one JSON object per line"
    except Exception as exc:  # polars raises several types for bad input
        frame, problem = None, _first_line(exc)
    if not problem and frame is not None:
        parts.append(frame)
        return
    if count == 1:
        single = _retry_single(chunk[0], schema)
        if single is not None:
            parts.append(single)
            return
        errors[start] = _describe(chunk[0], problem)
        parts.append(pl.DataFrame(schema=schema).clear(1))
        return
    middle = start + count // 2
    _parse_range(lines, start, middle, schema, parts, errors)
    _parse_range(lines, middle, stop, schema, parts, errors)


def _retry_single(line: bytes, schema: dict[str, pl.DataType]) -> pl.DataFrame | None:
    """A lone line may hold raw newlines between tokens (valid JSON, not NDJSON)."""
    if b"\n" not in line and b"\r" not in line:
        return None
    try:
        flat = line.replace(b"\r", b" ").replace(b"\n", b" ")
        frame = pl.read_ndjson(flat, schema=schema)
    except Exception:
        return None
    return frame if frame.height == 1 else None


def _loads_object(line: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _describe(line: bytes, problem: str) -> str:
    try:
        value = json.loads(line)
    except ValueError as exc:
        return f"malformed JSON: {exc}"
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    return f"unexpected JSON content: {problem}"


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
