"""Events that contradict their own envelope or their topic, found per group in bulk.

Three checks, each a few polars expressions over a group's parsed payloads (and
one byte count over its payload text); Python runs only for the events they flag,
to word the reason:

- routing: `source.table` (and `source.schema`, where the source has one) must be
  the table (and schema) the topic `<prefix>.<schema>.<table>` names. A name with
  characters a Kafka topic cannot hold is not compared: topic naming strategies
  rewrite those in different ways.
- non-optional columns: a column the envelope's schema marks `"optional": false`
  must have a value in the after row of a create, update or snapshot read.
  Debezium's TOAST placeholder is a value. Before rows are not checked: the fold
  does not read them, Debezium writes a type default (never null) for a
  non-optional column it has no value for (e.g. the non-key columns of a delete's
  before row under REPLICA IDENTITY DEFAULT), and parsing every before column of
  REPLICA IDENTITY FULL events would cost about a fifth of the group's JSON parse.
- unknown fields: every field of a before/after row must be declared by the
  envelope's schema (the JSON reader would otherwise drop it silently).

The last two need the embedded schema: events without one (`schemas.enable=false`)
are checked for routing only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl

from engine.decode.model import ColumnSpec
from engine.decode.schemas import RowSchema, Shape

#: A name Debezium's default topic naming keeps as it is (and that holds no dot).
_TOPIC_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_KEY_END = '":'
_ESCAPED_KEY_END = '\\":'
_LISTED_FIELDS = 30


def routing(topic: str, source: pl.Series) -> dict[int, str]:
    """{row: reason} for events whose source names another table than the topic does.

    `source` is the parsed `payload.source` struct with `schema` and `table` fields.
    A group's events name one table or a few, so the names are judged once each.
    """
    _prefix, schema, table = topic.rsplit(".", 2)
    out: dict[int, str] = {}
    for part, expected in (("table", table), ("schema", schema)):
        names = source.struct.field(part)
        wrong = [
            name
            for name in names.unique().to_list()
            if name is not None and name != expected and _TOPIC_SAFE.fullmatch(name)
        ]
        if not wrong:
            continue
        for j in np.flatnonzero(names.is_in(wrong).fill_null(False).to_numpy()).tolist():
            out.setdefault(
                j,
                f"source.{part} {names[j]!r} does not match the topic's {part} {expected!r} "
                f"(topic {topic}): check the connector's routing (RegexRouter / topic.prefix)",
            )
    return out


def before_struct(row: RowSchema) -> pl.Struct | None:
    """What the key count needs of the before row: whether it is null, and whether its
    object-valued columns are."""
    shape = row.shape
    if shape is None or not shape.exact or not row.struct.fields:
        return None
    wanted = {name for name, _keys in shape.nested}
    fields = [f for f in row.struct.fields if f.name in wanted] or [row.struct.fields[0]]
    return pl.Struct(fields)


def not_optional(
    rows: pl.Series, present: np.ndarray, columns: Sequence[ColumnSpec]
) -> dict[int, list[str]]:
    """{row: non-optional columns with no value} over the rows where `present` is true."""
    parsed = set(rows.struct.fields)
    names = [c.name for c in columns if not c.optional and c.name in parsed]
    if not names or not bool(present.any()):
        return {}
    nulls = rows.struct.unnest().select(pl.col(names).is_null())
    any_null = nulls.select(pl.any_horizontal(pl.all())).to_series().to_numpy()
    bad = np.flatnonzero(any_null & present)
    if bad.size == 0:
        return {}
    flagged = nulls[bad.tolist()]
    return {
        int(j): [name for name, null in zip(names, flagged.row(i), strict=True) if null]
        for i, j in enumerate(bad)
    }


def not_optional_reason(side: str, names: list[str], payload: bytes) -> str:
    """The reason for non-optional columns of the `side` row without a value."""
    try:
        doc = json.loads(payload)
        image = doc.get(side) if isinstance(doc, dict) else None
    except ValueError:
        image = None
    absent = [n for n in names if isinstance(image, dict) and n not in image]
    quoted = ", ".join(repr(n) for n in names)
    if len(names) == 1:
        has = "no value for it (the field is missing)" if absent else "null"
        return (
            f"column {quoted} is not optional in the envelope's schema but the {side} row has {has}"
        )
    return (
        f"columns {quoted} are not optional in the envelope's schema "
        f"but the {side} row has null or no value for them"
    )


def key_counts(values: Sequence[bytes]) -> tuple[pl.Series, np.ndarray]:
    """The payloads as text and the number of `":` (JSON key ends) in each."""
    text = pl.Series(values, dtype=pl.Binary()).cast(pl.String(), strict=False)
    counts = text.str.count_matches(_KEY_END, literal=True).fill_null(0).to_numpy()
    return text, counts.astype(np.int64)


def expected_keys(
    shape: Shape,
    payloads: pl.DataFrame,
    after: pl.Series,
    before: pl.Series | None,
) -> np.ndarray:
    """Keys the JsonConverter writes for each event of an exact `shape`."""
    n = payloads.height
    total = np.full(n, shape.fixed, dtype=np.int64)
    for name, keys, _probe, _dtype in shape.optional:
        total += keys * payloads.get_column(name).is_not_null().to_numpy()
    for image in (after, before):
        if image is None:
            continue
        present = image.is_not_null().to_numpy()
        row_keys = np.full(n, shape.row, dtype=np.int64)
        for column, count in shape.nested:
            row_keys += count * image.struct.field(column).is_not_null().to_numpy()
        total += np.where(present, row_keys, 0)
    return total


def suspects(
    shape: Shape,
    text: pl.Series,
    counts: np.ndarray,
    expected: np.ndarray | None,
    candidates: np.ndarray,
) -> np.ndarray:
    """Rows among `candidates` whose payload may carry a key the schema does not declare.

    Inside a JSON string a `":` is always escaped (`\\":`), so the key ends are
    the `":` that are not; rows whose count differs from the expected one (or,
    when the shape is not exact, from the count of declared names used as keys)
    are looked at again in Python.
    """
    rows = np.flatnonzero(candidates)
    if expected is not None:
        rows = rows[counts[rows] != expected[rows]]
    if rows.size == 0:
        return rows
    subset = text.gather(rows)
    keys = counts[rows] - subset.str.count_matches(_ESCAPED_KEY_END, literal=True).fill_null(
        0
    ).to_numpy().astype(np.int64)
    if expected is not None:
        target = expected[rows]
    else:
        target = subset.str.count_matches(_declared_pattern(shape)).fill_null(0).to_numpy()
    return rows[keys != target]


def unknown_fields_reason(payload: bytes, row_fields: Sequence[str]) -> str | None:
    """The reason for fields of before/after that `row_fields` does not have (None: none)."""
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    declared = set(row_fields)
    for side in ("after", "before"):
        image = doc.get(side)
        if not isinstance(image, Mapping):
            continue
        extra = [k for k in image if k not in declared]
        if not extra:
            continue
        listed = ", ".join(row_fields[:_LISTED_FIELDS])
        if len(row_fields) > _LISTED_FIELDS:
            listed += f", ... ({len(row_fields)} in all)"
        if len(extra) == 1:
            what = f"field {extra[0]!r} in {side} is not"
        else:
            what = f"fields {', '.join(repr(k) for k in extra)} in {side} are not"
        return f"{what} in the envelope's schema (value schema fields: {listed})"
    return None


def _declared_pattern(shape: Shape) -> str:
    names = sorted(shape.names, key=len, reverse=True)
    return '"(?:' + "|".join(_literal(n) for n in names) + ')":'


def _literal(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else f"\\x{{{ord(c):X}}}" for c in name)
