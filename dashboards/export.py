"""Query results as downloadable files: CSV (nested values as JSON text) and Parquet."""

from __future__ import annotations

import io
import json

import polars as pl


def to_csv(frame: pl.DataFrame) -> bytes:
    """CSV with a header; lists and structs as JSON text (CSV holds flat values only)."""
    nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
    flat = frame.with_columns(
        pl.Series(
            name,
            [None if v is None else json.dumps(v, default=str) for v in frame[name].to_list()],
            dtype=pl.String,
        )
        for name in nested
    )
    return flat.write_csv().encode()


def to_parquet(frame: pl.DataFrame) -> bytes:
    """Parquet keeps every type (decimals, time zones, lists) as it is."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()
