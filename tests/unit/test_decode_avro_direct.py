"""The direct Avro path gives what the JSON path gives for the same change events.

Two sources of the same events in both formats:
- the captured lab table (tests/fixtures/avro/lab.jsonl, REAL Avro messages, against the
  former path that rebuilt them as Connect JSON: `Decoder(avro_direct=False)`);
- the JSON captures (lab_precise, lab_double, lab_string: every column type, snapshot,
  inserts, TOASTed updates, deletes with before rows and tombstones, a transaction, a
  truncate, an ADD COLUMN) re-encoded as Connect's Avro converter writes them
  (engine.lab.avrowire), so each Avro record has the JSON record's very position and
  the decoded batches compare whole: columns, dtypes, values, flags, dead letters.
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest
from engine_helpers import load_fixture
from test_decode_avro import _avro_fixture, _schemas

from engine.decode import avro_block, avro_columns, bulkjson
from engine.decode.avro import AvroSplitter, Schema, SchemaRegistry
from engine.decode.decoder import Decoder
from engine.decode.records import DecodedBatch, RawRecord
from engine.decode.schemas import SchemaCache
from engine.lab.avrowire import SideEncoder


def as_avro(records: list[RawRecord]) -> tuple[list[RawRecord], SchemaRegistry]:
    """JSON messages with embedded schemas re-encoded as Confluent-framed Avro (one schema
    id per distinct Connect schema), at the same positions."""
    sides: dict[str, SideEncoder] = {}

    def encode(data: bytes | None) -> bytes | None:
        if data is None:
            return None
        doc = json.loads(data)
        text = json.dumps(doc["schema"], sort_keys=True)
        side = sides.get(text)
        if side is None:
            side = sides[text] = SideEncoder(doc["schema"])
            side.schema_id = 100 + len(sides)
        return side.encode(doc["payload"])

    out = [
        RawRecord(r.topic, r.partition, r.offset, encode(r.key), encode(r.value)) for r in records
    ]
    registry = SchemaRegistry.of({s.schema_id: s.text for s in sides.values() if s.schema_id})
    return out, registry


def assert_same(a: DecodedBatch, b: DecodedBatch) -> None:
    """Two decodes of the same events at the same positions are the same batch."""
    assert sorted((d.topic, d.partition, d.offset, d.error) for d in a.dead_letters) == sorted(
        (d.topic, d.partition, d.offset, d.error) for d in b.dead_letters
    )
    assert (a.records, a.tombstones, a.skipped, a.changes) == (
        b.records,
        b.tombstones,
        b.skipped,
        b.changes,
    )
    assert a.progress == b.progress and a.newest_source_ts_ms == b.newest_source_ts_ms
    assert [t.topic for t in a.tables] == [t.topic for t in b.tables]
    for ta, tb in zip(a.tables, b.tables, strict=True):
        assert (ta.mirror, ta.key, ta.columns) == (tb.mirror, tb.key, tb.columns)
        assert [v.schema for v in ta.versions] == [v.schema for v in tb.versions]
        assert ta.frame.schema == tb.frame.schema
        assert ta.frame.to_dicts() == tb.frame.to_dicts()


@pytest.mark.parametrize("name", ["lab_precise", "lab_double", "lab_string"])
def test_avro_of_the_json_captures_decodes_as_the_json(name: str) -> None:
    records = load_fixture(name)
    avro_records, registry = as_avro(records)
    from_json = Decoder(registry).decode(records)
    from_avro = Decoder(registry).decode(avro_records)
    assert from_avro.tables and from_avro.tombstones
    assert_same(from_avro, from_json)


def test_captured_avro_decodes_as_the_former_path() -> None:
    registry = SchemaRegistry.of(_schemas())
    direct = Decoder(registry).decode(_avro_fixture())
    former = Decoder(registry, avro_direct=False).decode(_avro_fixture())
    assert_same(direct, former)


def test_raw_columns_are_the_bulk_json_parse_of_the_rebuilt_payloads() -> None:
    """Before any conversion: the after struct built from the Avro values is the one the
    JSON parse reads from the same values as Connect JSON (dtypes and values, bytes as
    base64, decimals with fixed and variable scale, arrays, nulls)."""
    registry = SchemaRegistry.of(_schemas())
    splitter = AvroSplitter(registry)
    cache = SchemaCache()
    values = [
        r.value for r in _avro_fixture() if r.topic == "lab.lab.everything" and r.value is not None
    ]
    by_schema: dict[bytes, list[bytes]] = {}
    for v in values:
        by_schema.setdefault(splitter.split(v)[0] or b"", []).append(v)
    assert len(by_schema) == 2  # before and after the ADD COLUMN
    for connect, group in by_schema.items():
        row = cache.value(connect)
        payloads = [splitter.split(v)[1] for v in group]
        parsed, errors = bulkjson.parse_lines(payloads, {"op": pl.String(), "after": row.struct})
        assert not errors
        built = avro_columns.payload_frame([splitter.read(v)[1] for v in group], row.columns)
        assert built.get_column("after").dtype == row.struct
        assert built.get_column("after").to_list() == parsed.get_column("after").to_list()
        assert built.get_column("op").to_list() == parsed.get_column("op").to_list()


def _bad_batch(records: list[RawRecord]) -> list[RawRecord]:
    """The change events of `records` with three broken ones in the middle: a value cut
    short, a value of an unknown schema id and a key that is not Avro."""
    events = [r for r in records if r.topic == "lab.lab.everything" and r.value is not None]
    good = events[:6]
    cut, unknown, bad_key = events[6], events[7], events[8]
    assert cut.value is not None and unknown.value is not None
    return [
        *good[:3],
        RawRecord(cut.topic, cut.partition, cut.offset, cut.key, cut.value[:40]),
        RawRecord(
            unknown.topic,
            unknown.partition,
            unknown.offset,
            unknown.key,
            b"\x00\x00\x00\x03\xe7" + unknown.value[5:],
        ),
        RawRecord(bad_key.topic, bad_key.partition, bad_key.offset, b"\x00\x01", bad_key.value),
        *good[3:],
    ]


def test_a_bad_avro_message_is_a_dead_letter_and_the_rest_survives() -> None:
    registry = SchemaRegistry.of(_schemas())
    batch = _bad_batch(_avro_fixture())
    direct = Decoder(registry).decode(batch)
    former = Decoder(registry, avro_direct=False).decode(batch)
    assert_same(direct, former)
    assert sum(t.frame.height for t in direct.tables) == 6
    errors = {(d.partition, d.offset): d.error for d in direct.dead_letters}
    assert len(errors) == 3
    at = {(r.partition, r.offset): r for r in batch}
    cut, unknown, bad_key = ((r.partition, r.offset) for r in batch[3:6])
    assert errors[cut].startswith("the Avro value cannot be read with schema id 10:")
    assert "schema id 999 is not known" in errors[unknown]
    assert errors[bad_key].startswith("the key cannot be read:")
    for d in direct.dead_letters:
        assert d.topic == "lab.lab.everything"
        assert (d.key, d.value) == (at[d.partition, d.offset].key, at[d.partition, d.offset].value)


def _no_one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: Schema, data: bytes) -> Any:
        raise AssertionError("read one by one")

    monkeypatch.setattr(Schema, "value", refused)


@pytest.mark.parametrize("name", ["lab_precise", "lab_double", "lab_string"])
def test_good_groups_are_read_all_at_once(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No message of the captures (every column type) needs the one-by-one read."""
    avro_records, registry = as_avro(load_fixture(name))
    expected = Decoder(registry, avro_direct=False).decode(avro_records)
    _no_one_by_one(monkeypatch)
    assert_same(Decoder(registry).decode(avro_records), expected)


def test_captured_avro_is_read_all_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = SchemaRegistry.of(_schemas())
    expected = Decoder(registry, avro_direct=False).decode(_avro_fixture())
    _no_one_by_one(monkeypatch)
    assert_same(Decoder(registry).decode(_avro_fixture()), expected)


def test_one_schema_under_two_ids_decodes_as_one_version() -> None:
    """The same Connect schema from two schema ids: one group, read one by one."""
    schemas = _schemas()
    records = [r for r in _avro_fixture() if r.topic == "lab.lab.everything" and r.value]
    assert all(r.value is not None and r.value[1:5] == (10).to_bytes(4, "big") for r in records[:4])
    registry = SchemaRegistry.of({**schemas, 99: schemas[10]})
    renamed = [
        RawRecord(
            r.topic, r.partition, r.offset, r.key, b"\x00" + (99).to_bytes(4, "big") + r.value[5:]
        )
        if k % 2 and r.value is not None
        else r
        for k, r in enumerate(records[:4])
    ]
    batch = Decoder(registry).decode(renamed)
    assert_same(batch, Decoder(registry).decode(records[:4]))
    assert len(batch.tables[0].versions) == 1


def test_block_read_refuses_values_not_read_on_their_own_bytes() -> None:
    registry = SchemaRegistry.of(_schemas())
    bodies = [
        r.value[5:]
        for r in _avro_fixture()
        if r.value is not None and r.value[1:5] == (10).to_bytes(4, "big")
    ]
    text = registry.schema(10).block_schema
    whole = avro_block.read(text, bodies)
    assert whole is not None and whole.len() == len(bodies)
    longer = [*bodies[:2], bodies[2] + b"\x02", *bodies[3:]]
    shorter = [*bodies[:2], bodies[2][:-3], *bodies[3:]]
    swapped = [*bodies[:2], bodies[2][::-1], *bodies[3:]]
    for broken in (longer, shorter, swapped, [b""]):
        assert avro_block.read(text, broken) is None
    assert avro_block.read(text, []) is None


def test_transaction_blocks_read_at_once_are_the_ones_read_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The transaction planner reads a batch's Avro events' blocks a schema id at a time:
    the same (xid, place, LSN) as event_txn of each, a bad message (None) included."""
    from engine.decode import avro, txmeta

    registry = SchemaRegistry.of(_schemas())
    monkeypatch.setattr(avro, "_default", registry)
    monkeypatch.setattr(avro, "_configured", True)
    values = [
        r.value for r in _avro_fixture() if r.topic == "lab.lab.everything" and r.value is not None
    ]
    values.insert(3, values[3][:30])
    values.insert(5, b"\x00\x00\x00\x03\xe7" + values[5][5:])
    alone = [txmeta.event_txn(v) for v in values]
    assert sum(t is not None for t in alone) >= 3 and alone[3] is None and alone[5] is None
    assert txmeta.avro_event_txns(values) == alone
