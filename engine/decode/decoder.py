"""Decode a polled batch of Debezium change events into per-table frames.

Pure and vectorized: messages are grouped by (topic, value schema, key
schema) with byte operations only, each group's payloads are parsed by one
bulk JSON read, and the columns are converted with polars/numpy expressions.
An event that cannot be decoded, or that contradicts its envelope's schema or
its topic (engine.decode.violations), becomes a `DeadLetter` with the reason;
the rest of the batch is unaffected.

Confluent-framed Avro messages (format=avro; told apart by their first byte, 0,
where a JSON message has "{") are grouped by the Connect schema rebuilt from their
writer's schema (engine.decode.avro); a group's values are read at once
(engine.decode.avro_block, one by one when that cannot be), its payload columns built
from them (engine.decode.avro_columns) in the form the bulk JSON parse gives, and
decoded from there on as JSON messages are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from engine.core.errors import DecodeError
from engine.core.positions import PartitionProgress
from engine.decode import avro_block, avro_columns, bulkjson, violations
from engine.decode.avro import MAGIC_BYTE, AvroSplitter, Schema, SchemaRegistry
from engine.decode.convert import convert, convert_columns, placeholder_masks
from engine.decode.envelope import MalformedEnvelope, Splitter, mirror_of, topic_kind
from engine.decode.logical import fingerprint, raw_dtype
from engine.decode.model import (
    LSN,
    OFFSET,
    OP,
    PARTITION,
    SOURCE_TS_MS,
    ColumnSpec,
    DeadLetter,
    SchemaSeen,
    TableChanges,
    TableSchema,
    absent_flag,
)
from engine.decode.records import DecodedBatch, RecordLike, raw_lookup
from engine.decode.schemas import RowSchema, SchemaCache, Shape, from_specs, infer_columns

log = logging.getLogger(__name__)

OPS = ("c", "u", "d", "r", "t")
_KEYED_OPS = ("c", "u", "d", "r")
_ROW_OPS = ("c", "u", "r")
_SOURCE = pl.Struct(
    {"ts_ms": pl.Int64(), "lsn": pl.Int64(), "schema": pl.String(), "table": pl.String()}
)
_UNKNOWN_TOPIC = (
    "cannot tell the table from the topic name {topic!r}: a captured table's topic is "
    "<prefix>.<schema>.<table>"
)
_NO_KEY = (
    "the message has no key, so the row cannot be identified: give the table a primary key "
    "(or set message.key.columns in the connector)"
)


@dataclass
class _Group:
    """Messages of one topic that share their value and key schema bytes (and format)."""

    topic: str
    value_schema: bytes | None
    key_schema: bytes | None
    #: Avro messages read directly: `values` / `keys` hold the Avro messages, not JSON
    #: payload bytes; `readers` are the writer schemas of the first one's value and key,
    #: `mixed` tells that a later one has others (the same Connect schema, another id).
    avro: bool = False
    readers: tuple[Schema | None, Schema | None] = (None, None)
    mixed: bool = False
    index: list[int] = field(default_factory=list)
    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    keys: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class _GroupResult:
    schema: TableSchema
    frame: pl.DataFrame
    first_partition: int
    first_offset: int


class Decoder:
    """Decodes batches; remembers parsed schemas between batches (nothing else)."""

    def __init__(self, registry: SchemaRegistry | None = None, *, avro_direct: bool = True) -> None:
        """`registry`: where Avro messages' schemas are read (None: the process's,
        engine.decode.avro.default_registry, asked only when an Avro message comes).

        `avro_direct=False` decodes Avro messages the former way, rebuilt as Connect
        JSON messages (AvroSplitter) and parsed as JSON: the reference the direct path
        is compared with in tests and benchmarks."""
        self._avro = AvroSplitter(registry)
        self._avro_direct = avro_direct
        self._schemas = SchemaCache()
        self._splitters: dict[str, Splitter] = {}
        self._key_splitters: dict[str, Splitter] = {}

    def _avro_key(self, key: bytes) -> tuple[bytes | None, bytes]:
        """An Avro message's key split as its value is; a key that cannot be read is
        named as the key in the dead letter's reason."""
        try:
            return self._avro.split(key)
        except MalformedEnvelope as exc:
            raise MalformedEnvelope(f"the key cannot be read: {exc}") from None

    def _avro_key_schema(self, key: bytes) -> Schema:
        """The writer schema of an Avro message's key (see `_avro_key`)."""
        try:
            return self._avro.schema(key)
        except MalformedEnvelope as exc:
            raise MalformedEnvelope(f"the key cannot be read: {exc}") from None

    @staticmethod
    def _splitter(topic: str, cache: dict[str, Splitter]) -> Splitter:
        found = cache.get(topic)
        if found is None:
            found = cache[topic] = Splitter()
        return found

    def decode(
        self, records: Sequence[RecordLike], known: Mapping[str, TableSchema] | None = None
    ) -> DecodedBatch:
        """Decode `records` (one poll, any topics and partitions, in offset order per partition).

        `known` maps a topic to the latest recorded schema of its table; it types
        events that carry no schema of their own.
        """
        known = known or {}
        # Avro is read only when a registry is set (format=avro): a JSON stack's
        # message that starts with a 0 byte stays what it is, malformed JSON.
        avro = self._avro.registry is not None
        direct = self._avro_direct
        progress: dict[tuple[str, int], list[int]] = {}
        groups: dict[tuple[str, bytes | None, bytes | None, bool], _Group] = {}
        dead: list[DeadLetter] = []
        tombstones = skipped = nbytes = 0

        # The per-record loop is the engine's only Python work per message: keep it to
        # attribute reads, memcmp/slices and list appends. Records of one partition
        # arrive together, so the per-topic state is looked up once per run.
        last_topic: str | None = None
        last_partition = -1
        seen: list[int] = []
        kind = ""
        splitter = key_splitter = Splitter()
        for i, rec in enumerate(records):
            topic, partition, offset = rec.topic, rec.partition, rec.offset
            if topic is not last_topic or partition != last_partition:
                if topic != last_topic:
                    kind = topic_kind(topic)
                    splitter = self._splitter(topic, self._splitters)
                    key_splitter = self._splitter(topic, self._key_splitters)
                last_topic, last_partition = topic, partition
                seen = progress.setdefault((topic, partition), [offset, offset, 0])
            if offset > seen[1]:
                seen[1] = offset
            elif offset < seen[0]:
                seen[0] = offset
            seen[2] += 1
            value = rec.value
            if value is None:
                tombstones += 1
                continue
            nbytes += len(value)
            if kind != "table":
                if kind == "skip":
                    skipped += 1
                else:
                    dead.append(_dead(rec, _UNKNOWN_TOPIC.format(topic=topic)))
                continue
            key = rec.key
            is_avro = False
            readers: tuple[Schema | None, Schema | None] = (None, None)
            value_schema: bytes | None
            key_schema: bytes | None
            payload: Any
            key_payload: Any
            try:
                if avro and value[:1] == MAGIC_BYTE and direct:
                    # Read later, a group at a time (_avro_columns); here only the
                    # schemas, to group by.
                    is_avro = True
                    reader = self._avro.schema(value)
                    value_schema, payload, key_payload = reader.connect_json, value, key
                    if key is None:
                        key_schema = None
                        readers = (reader, None)
                    else:
                        key_reader = self._avro_key_schema(key)
                        key_schema = key_reader.connect_json
                        readers = (reader, key_reader)
                elif avro and value[:1] == MAGIC_BYTE:
                    value_schema, payload = self._avro.split(value)
                    key_schema, key_payload = (None, None) if key is None else self._avro_key(key)
                else:
                    value_schema, payload = splitter.split(value)
                    key_schema, key_payload = (
                        (None, None) if key is None else key_splitter.split(key)
                    )
            except MalformedEnvelope as exc:
                dead.append(_dead(rec, str(exc)))
                continue
            gkey = (topic, value_schema, key_schema, is_avro)
            group = groups.get(gkey)
            if group is None:
                group = groups[gkey] = _Group(topic, value_schema, key_schema, is_avro, readers)
            elif is_avro and readers != group.readers:
                group.mixed = True
            group.index.append(i)
            group.partitions.append(partition)
            group.offsets.append(offset)
            group.values.append(payload)
            group.keys.append(key_payload)

        # A truncate has no key; its group borrows the key schema of its table's other events.
        key_schemas: dict[str, bytes] = {}
        for topic, _value_schema, key_schema, _avro in groups:
            if key_schema is not None:
                key_schemas.setdefault(topic, key_schema)
        by_topic: dict[str, list[_GroupResult]] = {}
        for group in groups.values():
            if group.key_schema is None and group.topic in key_schemas:
                group.key_schema = key_schemas[group.topic]
            result = self._decode_group(group, records, known.get(group.topic), dead)
            if result is not None:
                by_topic.setdefault(group.topic, []).append(result)

        tables = tuple(_merge_versions(topic, results) for topic, results in by_topic.items())
        newest: list[int] = []
        for t in tables:
            top = t.frame.get_column(SOURCE_TS_MS).max()
            if isinstance(top, int):
                newest.append(top)
        newest_ts = max(newest, default=None)
        return DecodedBatch(
            tables=tables,
            dead_letters=tuple(dead),
            progress=tuple(
                PartitionProgress(topic, part, first, last + 1, count)
                for (topic, part), (first, last, count) in progress.items()
            ),
            records=len(records),
            bytes=nbytes,
            tombstones=tombstones,
            skipped=skipped,
            newest_source_ts_ms=newest_ts,
            raw=raw_lookup(records),
        )

    # -- one group ------------------------------------------------------------------

    def _decode_group(
        self,
        group: _Group,
        records: Sequence[RecordLike],
        known: TableSchema | None,
        dead: list[DeadLetter],
    ) -> _GroupResult | None:
        try:
            value_row, key_row = self._row_schemas(group, known)
        except DecodeError as exc:
            dead.extend(_dead(records[i], exc.reason) for i in group.index)
            return None

        n = len(group.index)
        reasons: dict[int, str] = {}
        payload_schema: dict[str, pl.DataType] = {
            "op": pl.String(),
            "ts_ms": pl.Int64(),
            "source": _SOURCE,
            "after": value_row.struct,
        }
        # Only an embedded schema says which columns are optional and which exist. The
        # writer's schema of an Avro message already holds its rows to it: no undeclared
        # field, no null where the field is not a union with null.
        shape = value_row.shape if group.value_schema is not None else None
        if shape is not None and not group.avro:
            before_type = violations.before_struct(value_row)
            if before_type is not None:
                payload_schema["before"] = before_type
            if shape.exact:
                for name, _keys, probe, dtype in shape.optional:
                    payload_schema.setdefault(name, pl.Struct({probe: dtype}))
        key_frame: pl.DataFrame | None = None
        if group.avro:
            payloads, key_frame, key_present = self._avro_columns(
                group, value_row, key_row, reasons
            )
        else:
            payloads, errors = bulkjson.parse_lines(group.values, payload_schema)
            reasons.update(errors)
            key_lines = [k for k in group.keys if k is not None]
            key_present = np.fromiter((k is not None for k in group.keys), dtype=bool, count=n)
            if key_row.columns and key_lines:
                parsed, key_errors = bulkjson.parse_lines(key_lines, _struct_schema(key_row.struct))
                positions = np.flatnonzero(key_present)
                for j, reason in key_errors.items():
                    reasons.setdefault(int(positions[j]), f"the key cannot be read: {reason}")
                key_frame = _spread(parsed, key_present)

        ops = payloads.get_column("op")
        op_null = ops.is_null().to_numpy()
        op_known = ops.is_in(OPS).fill_null(False).to_numpy()
        keyed = ops.is_in(_KEYED_OPS).fill_null(False).to_numpy()
        row_op = ops.is_in(_ROW_OPS).fill_null(False).to_numpy()
        after = payloads.get_column("after")
        after_null = after.is_null().to_numpy()

        key_cols: dict[str, pl.Series] = {}
        key_null = ~key_present
        for spec in key_row.columns:
            raw = (
                key_frame.get_column(spec.name)
                if key_frame is not None and spec.name in key_frame.columns
                else pl.Series(spec.name, [None] * n, dtype=raw_dtype(spec) or pl.String())
            )
            key_null = key_null | raw.is_null().to_numpy()
            typed, bad = convert(raw, spec)
            _note(reasons, bad, lambda j, s=spec, r=raw: _cannot(s, r, j, "key column"))
            key_cols[spec.name] = typed.alias(spec.name)
        if not key_row.columns:
            key_null = np.ones(n, dtype=bool)

        for j in np.flatnonzero(op_null).tolist():
            reasons.setdefault(j, "the envelope has no op")
        for j in np.flatnonzero(~op_null & ~op_known).tolist():
            reasons.setdefault(j, f"unknown op {ops[j]!r}")
        for j in np.flatnonzero(keyed & key_null).tolist():
            reasons.setdefault(j, _NO_KEY)
        for j in np.flatnonzero(row_op & after_null).tolist():
            reasons.setdefault(j, f"a {ops[j]!r} event without an after image")
        source = payloads.get_column("source")
        for j, reason in violations.routing(group.topic, source).items():
            reasons.setdefault(j, reason)
        if shape is not None and not group.avro:
            _check_rows(group, value_row, shape, payloads, row_op & ~after_null, reasons)

        key_names = {c.name for c in key_row.columns}
        specs = [spec for spec in value_row.columns if spec.name not in key_names]
        raw_values = _raw_columns(after, specs, n)
        flags: dict[str, pl.Series] = {}
        holders = placeholder_masks(raw_values, specs)
        if holders:
            raw_values = raw_values.with_columns(
                pl.when(~pl.Series(holder)).then(pl.col(name)).alias(name)
                for name, holder in holders.items()
            )
            flags = {
                absent_flag(name): holders[name]
                for name in (s.name for s in specs)
                if name in holders
            }
        value_cols, failed = convert_columns(raw_values, specs)
        for spec in specs:
            if spec.name in failed:
                raw = raw_values.get_column(spec.name)
                _note(
                    reasons, failed[spec.name], lambda j, s=spec, r=raw: _cannot(s, r, j, "column")
                )

        frame = pl.DataFrame(
            [
                pl.Series(PARTITION, group.partitions, dtype=pl.Int32()),
                pl.Series(OFFSET, group.offsets, dtype=pl.Int64()),
                ops.alias(OP),
                source.struct.field("ts_ms").alias(SOURCE_TS_MS),
                source.struct.field("lsn").alias(LSN),
                *key_cols.values(),
                *value_cols.values(),
                *(s.alias(name) for name, s in flags.items()),
            ]
        )
        if reasons:
            bad_rows = np.zeros(n, dtype=bool)
            bad_rows[list(reasons)] = True
            for j in sorted(reasons):
                dead.append(_dead(records[group.index[j]], reasons[j]))
            frame = frame.filter(pl.Series(~bad_rows))
            if frame.height == 0:
                return None
        table = TableSchema(
            topic=group.topic,
            mirror=mirror_of(group.topic),
            key=key_row.columns,
            columns=value_row.columns,
            fingerprint=fingerprint([value_row.fingerprint, key_row.fingerprint]),
            connect_schema=value_row.connect,
        )
        return _GroupResult(table, frame, group.partitions[0], group.offsets[0])

    def _avro_columns(
        self, group: _Group, value_row: RowSchema, key_row: RowSchema, reasons: dict[int, str]
    ) -> tuple[pl.DataFrame, pl.DataFrame | None, np.ndarray]:
        """(payload columns, key columns or None, which events have a key) of a group of
        Avro messages, in the form the JSON path's parse gives; a message that cannot be
        read gets its reason in `reasons` (and null columns).

        All at once (engine.decode.avro_block) when every message reads so on its own
        bytes; else one by one with fastavro, which tells the bad ones apart."""
        n = len(group.values)
        key_present = np.fromiter((k is not None for k in group.keys), dtype=bool, count=n)
        fast = _avro_block_columns(group, value_row, key_row, key_present)
        if fast is not None:
            return fast[0], fast[1], key_present
        values: list[Any] = []
        keys: list[Any] = []
        for j, (data, key) in enumerate(zip(group.values, group.keys, strict=True)):
            try:
                values.append(self._avro.read(data)[1])
            except MalformedEnvelope as exc:
                reasons.setdefault(j, str(exc))
                values.append(_NO_ENVELOPE)
            if key is not None:
                try:
                    key = self._avro.read(key)[1]
                except MalformedEnvelope as exc:
                    reasons.setdefault(j, f"the key cannot be read: {exc}")
                    key = None
            keys.append(key)
        payloads, errors = avro_columns.isolated(
            lambda rows: avro_columns.payload_frame(rows, value_row.columns), values, _avro_misfit
        )
        for j, reason in errors.items():
            reasons.setdefault(j, reason)
        key_present = np.fromiter((k is not None for k in keys), dtype=bool, count=n)
        key_lines = [k for k in keys if k is not None]
        if not (key_row.columns and key_lines):
            return payloads, None, key_present
        parsed, key_errors = avro_columns.isolated(
            lambda rows: avro_columns.key_frame(rows, key_row.columns), key_lines, _avro_misfit
        )
        positions = np.flatnonzero(key_present)
        for j, reason in key_errors.items():
            reasons.setdefault(int(positions[j]), f"the key cannot be read: {reason}")
        return payloads, _spread(parsed, key_present), key_present

    def _row_schemas(self, group: _Group, known: TableSchema | None) -> tuple[RowSchema, RowSchema]:
        """(value row schema, key schema) of a group: embedded, else known, else inferred."""
        if group.value_schema is not None:
            value_row = self._schemas.value(group.value_schema)
        else:
            value_row = _inferred_value_row(group.values, known)
        if group.key_schema is not None:
            key_row = self._schemas.key(group.key_schema)
        elif known is not None and known.key:
            key_row = from_specs(known.key)
        else:
            lines = [k for k in group.keys if k is not None]
            dtypes = bulkjson.infer_schema(lines)
            key_row = from_specs(infer_columns(dtypes, {}))
        return value_row, key_row


def _check_rows(
    group: _Group,
    value_row: RowSchema,
    shape: Shape,
    payloads: pl.DataFrame,
    after_rows: np.ndarray,
    reasons: dict[int, str],
) -> None:
    """Reasons for the group's events whose rows contradict the embedded schema."""
    n = payloads.height
    after = payloads.get_column("after")
    before = payloads.get_column("before") if "before" in payloads.columns else None
    candidates = np.ones(n, dtype=bool)
    candidates[list(reasons)] = False
    text, counts = violations.key_counts(group.values)
    expected = violations.expected_keys(shape, payloads, after, before) if shape.exact else None
    names = [c.name for c in value_row.columns]
    for j in violations.suspects(shape, text, counts, expected, candidates).tolist():
        reason = violations.unknown_fields_reason(group.values[j], names)
        if reason is not None:
            reasons.setdefault(j, reason)
    missing = violations.not_optional(after, after_rows & candidates, value_row.columns)
    for j, columns in missing.items():
        reasons.setdefault(j, violations.not_optional_reason("after", columns, group.values[j]))


def _inferred_value_row(values: list[bytes], known: TableSchema | None) -> RowSchema:
    """Schemaless events: the stored schema types the columns it knows, JSON types the rest."""
    dtypes = bulkjson.infer_schema(values)
    after = dtypes.get("after")
    fields = _struct_schema(after) if isinstance(after, pl.Struct) else {}
    known_cols = {c.name: c for c in known.columns} if known is not None else {}
    columns = infer_columns(fields, known_cols)
    # Keep the stored column order, then the new columns.
    ordered = [c for c in known_cols.values() if c.name in fields] + [
        c for c in columns if c.name not in known_cols
    ]
    return from_specs(tuple(ordered) if ordered else columns)


def _raw_columns(after: pl.Series, specs: Sequence[ColumnSpec], n: int) -> pl.DataFrame:
    """The after-images' fields of `specs` as columns (a field the schema lacks: NULL)."""
    fields = {f.name for f in after.dtype.fields} if isinstance(after.dtype, pl.Struct) else set()
    unnested = after.struct.unnest() if fields else None
    return pl.DataFrame(
        [
            unnested.get_column(s.name)
            if unnested is not None and s.name in fields
            else pl.Series(s.name, [None] * n, dtype=pl.String())
            for s in specs
        ]
    )


def _struct_schema(struct: pl.Struct) -> dict[str, pl.DataType]:
    return {f.name: _instance(f.dtype) for f in struct.fields}


def _instance(dtype: Any) -> pl.DataType:
    """A polars dtype instance (struct fields may hold the bare class)."""
    return dtype() if isinstance(dtype, type) else dtype


def _spread(parsed: pl.DataFrame, present: np.ndarray) -> pl.DataFrame:
    """Rows of `parsed` placed at the positions where `present` is true, nulls elsewhere."""
    if bool(present.all()):
        return parsed
    count = int(present.sum())
    # Row `count` of the extended frame is all nulls.
    index = np.full(len(present), count, dtype=np.int64)
    index[present] = np.arange(count)
    return pl.concat([parsed, parsed.clear(1)])[pl.Series(index)]


def _merge_versions(topic: str, results: list[_GroupResult]) -> TableChanges:
    """One frame per table: the union of its schema versions' columns.

    A column that an event's version lacks is flagged absent for that event
    (the fold keeps the stored value, like a TOAST placeholder).
    """
    results = sorted(results, key=lambda r: (r.first_partition, r.first_offset))
    latest = results[-1].schema
    columns: dict[str, ColumnSpec] = {}
    for result in reversed(results):
        for col in result.schema.columns:
            columns.setdefault(col.name, col)
    ordered = [c for c in latest.columns] + [
        c for name, c in columns.items() if latest.column(name) is None
    ]
    key_names = tuple(c.name for c in latest.key)
    value_cols = [c for c in ordered if c.name not in key_names]
    versions = tuple(SchemaSeen(r.schema, r.first_partition, r.first_offset) for r in results)

    if len(results) == 1:
        return TableChanges(
            topic, latest.mirror, key_names, tuple(value_cols), versions, results[0].frame
        )

    needs_flag = {
        c.name
        for c in value_cols
        if any(
            c.name not in r.frame.columns or absent_flag(c.name) in r.frame.columns for r in results
        )
    }
    frames = []
    for r in results:
        frame = r.frame
        extra = []
        for col in value_cols:
            if col.name not in frame.columns:
                extra.append(pl.lit(None).alias(col.name))
                extra.append(pl.lit(True).alias(absent_flag(col.name)))
            elif col.name in needs_flag and absent_flag(col.name) not in frame.columns:
                extra.append(pl.lit(False).alias(absent_flag(col.name)))
        if extra:
            frame = frame.with_columns(extra)
        frames.append(frame)
    names = list(frames[-1].columns)
    for f in frames[:-1]:
        names.extend(c for c in f.columns if c not in names)
    frame = pl.concat([f.select(names) for f in frames], how="vertical_relaxed")
    return TableChanges(topic, latest.mirror, key_names, tuple(value_cols), versions, frame)


def _note(reasons: dict[int, str], bad: pl.Series | None, describe: object) -> None:
    if bad is None:
        return
    for j in np.flatnonzero(bad.to_numpy()):
        reasons.setdefault(int(j), describe(int(j)))  # type: ignore[operator]


def _cannot(spec: ColumnSpec, raw: pl.Series, j: int, what: str) -> str:
    value = repr(raw[j])
    if len(value) > 80:
        value = value[:77] + "..."
    return f"{what} {spec.name!r}: cannot convert {value} to {spec.duck_type}"


#: What stands for an Avro envelope that cannot be read (its event is a dead letter).
_NO_ENVELOPE: dict[str, Any] = {"op": None, "source": None, "after": None}


def _avro_block_columns(
    group: _Group, value_row: RowSchema, key_row: RowSchema, key_present: np.ndarray
) -> tuple[pl.DataFrame, pl.DataFrame | None] | None:
    """`Decoder._avro_columns` read all at once; None when it cannot be (a message that
    does not read on its own bytes, writer schemas that differ, a type polars' reader
    does not take): the caller then reads the messages one by one."""
    value_reader, key_reader = group.readers
    if group.mixed or value_reader is None:
        return None
    values = avro_block.read(value_reader.block_schema, [v[5:] for v in group.values])
    if values is None:
        return None
    key_frame: pl.DataFrame | None = None
    try:
        if key_row.columns and bool(key_present.any()):
            if key_reader is None:
                return None
            keys = avro_block.read(
                key_reader.block_schema, [k[5:] for k in group.keys if k is not None]
            )
            if keys is None:
                return None
            key_frame = _spread(avro_columns.block_key_frame(keys, key_row.columns), key_present)
        payloads = avro_columns.block_payload_frame(values, value_row.columns)
    except Exception:  # a shape the columns are not built from: the values one by one
        log.debug("Avro group of %s read one by one", group.topic, exc_info=True)
        return None
    return payloads, key_frame


def _avro_misfit(exc: Exception) -> str:
    return f"the Avro value does not fit the columns of its schema: {avro_columns.first_line(exc)}"


def _dead(rec: RecordLike, reason: str) -> DeadLetter:
    return DeadLetter(rec.topic, rec.partition, rec.offset, rec.key, rec.value, reason)
