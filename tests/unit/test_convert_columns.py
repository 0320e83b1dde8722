"""convert_columns and placeholder_masks (one polars pass over a table's columns) give
what convert and placeholder_mask give column by column, bad values included."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_series_equal

from engine.decode.convert import (
    TOAST_PLACEHOLDER,
    TOAST_PLACEHOLDER_B64,
    convert,
    convert_columns,
    placeholder_mask,
    placeholder_masks,
)
from engine.decode.model import ColumnSpec

_S = pl.String()

#: (spec, raw values, raw dtype): each kind with a good value, a NULL and a bad value.
CASES: list[tuple[ColumnSpec, list[object], pl.DataType]] = [
    (ColumnSpec("i", "INTEGER", "int"), ["1", None, "x"], _S),
    (ColumnSpec("s", "SMALLINT", "int"), [7, None, 70_000], pl.Int64()),
    (ColumnSpec("f", "FLOAT", "float"), [1.5, None, 2.0], pl.Float64()),
    (ColumnSpec("b", "BOOLEAN", "bool"), [True, None, False], pl.Boolean()),
    (ColumnSpec("t", "VARCHAR", "string"), ["a", None, TOAST_PLACEHOLDER], _S),
    (ColumnSpec("y", "BLOB", "bytes"), ["AAE=", None, "!!"], _S),
    (ColumnSpec("y2", "BLOB", "bytes"), [TOAST_PLACEHOLDER_B64, None, "AA=="], _S),
    (ColumnSpec("d", "DATE", "date"), [19000, None, 1], pl.Int64()),
    (ColumnSpec("tm", "TIME", "time_us"), [1_000, None, 90_000_000_000], pl.Int64()),
    (ColumnSpec("tn", "TIME", "time_ms"), [1_000, None, -1], pl.Int64()),
    (ColumnSpec("ts", "TIMESTAMP", "ts_ms"), [1_700_000_000_000, None, 0], pl.Int64()),
    (ColumnSpec("tu", "TIMESTAMP", "ts_us"), [1_700_000_000_000_000, None, 0], pl.Int64()),
    (ColumnSpec("tz", "TIMESTAMPTZ", "tstz"), ["2024-01-02T03:04:05Z", None, "nope"], _S),
    (ColumnSpec("iv", "INTERVAL", "interval_us"), [5_000_000, None, 1], pl.Int64()),
    (
        ColumnSpec("u", "UUID", "cast"),
        ["0f8fad5b-d9cb-469f-a165-70867728950e", None, "not-a-uuid"],
        _S,
    ),
    (ColumnSpec("j", "JSON", "cast"), ['{"a": 1}', None, "[]"], _S),
    (ColumnSpec("dec", "DECIMAL(10,2)", "decimal", precision=10, scale=2), ["AQ==", None, "!"], _S),
    (
        ColumnSpec("l", "VARCHAR[]", "list", element=ColumnSpec("item", "VARCHAR", "string")),
        [["a"], None, [TOAST_PLACEHOLDER]],
        pl.List(_S),
    ),
    (ColumnSpec("z", "VARCHAR", "unsupported"), ["a", None, "b"], _S),
]


def _frame() -> pl.DataFrame:
    return pl.DataFrame([pl.Series(spec.name, values, dtype=dt) for spec, values, dt in CASES])


def test_convert_columns_equals_convert_per_column() -> None:
    raw = _frame()
    specs = [spec for spec, _v, _d in CASES]
    typed, bad = convert_columns(raw, specs)
    assert list(typed) == [s.name for s in specs]
    for spec in specs:
        want, want_bad = convert(raw.get_column(spec.name), spec)
        assert_series_equal(typed[spec.name], want.alias(spec.name))
        if want_bad is None:
            assert spec.name not in bad, spec.name
        else:
            assert_series_equal(bad[spec.name], want_bad, check_names=False)
    # The bad values above are caught (the test would pass trivially without them).
    assert {"i", "s", "y", "tm", "tn", "tz", "u", "dec"} <= set(bad)


def test_placeholder_masks_equal_placeholder_mask_per_column() -> None:
    raw = _frame()
    specs = [spec for spec, _v, _d in CASES]
    masks = placeholder_masks(raw, specs)
    for spec in specs:
        want = placeholder_mask(raw.get_column(spec.name), spec)
        if want is None or not want.any():
            assert spec.name not in masks, spec.name
        else:
            assert_series_equal(masks[spec.name], want, check_names=False)
    assert set(masks) == {"t", "y2", "l"}
