"""Decoding Debezium envelopes built in the documented JsonConverter format.

Captured real envelopes are tested in test_decode_captured.py; these cover
what a capture cannot easily show (every decimal mode, garbage, schema
changes within one batch, schemaless payloads).
"""

from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal

import polars as pl
import pytest
from envelopes import Table, decimal_b64, field

from engine.decode.convert import TOAST_PLACEHOLDER
from engine.decode.decoder import Decoder
from engine.decode.model import OP, absent_flag
from engine.decode.records import RawRecord

TOPIC = "lab.lab.things"
KEY = [field("int64", "id", optional=False)]


def _table(*row_fields: dict, schemas: bool = True) -> Table:
    return Table(TOPIC, KEY, [field("int64", "id", optional=False), *row_fields], schemas=schemas)


def _one(table: Table, after: dict, op: str = "c") -> pl.DataFrame:
    batch = Decoder().decode([table.event(op, {"id": after["id"]}, after=after)])
    assert batch.dead_letters == ()
    (changes,) = batch.tables
    return changes.frame


def test_ops_tombstones_and_positions() -> None:
    t = _table(field("string", "name"))
    records = [
        t.event("r", {"id": 1}, after={"id": 1, "name": "snap"}),
        t.event("c", {"id": 2}, after={"id": 2, "name": "new"}),
        t.event("u", {"id": 2}, after={"id": 2, "name": "newer"}, before={"id": 2, "name": "new"}),
        t.event("d", {"id": 1}, before={"id": 1, "name": "snap"}),
        t.tombstone({"id": 1}),
        t.event("t", None),
        t.event("c", {"id": 7}, after={"id": 7, "name": "p1"}, partition=1),
    ]
    batch = Decoder().decode(records)
    assert batch.dead_letters == ()
    assert batch.tombstones == 1
    (changes,) = batch.tables
    assert str(changes.mirror) == "lab.things"
    assert changes.key == ("id",)
    frame = changes.frame.sort(["__partition", "__offset"])
    assert frame.get_column(OP).to_list() == ["r", "c", "u", "d", "t", "c"]
    assert frame.get_column("id").to_list() == [1, 2, 2, 1, None, 7]
    assert frame.get_column("name").to_list() == ["snap", "new", "newer", None, None, "p1"]
    positions = {(p.partition, p.first_offset, p.next_offset, p.records) for p in batch.progress}
    assert positions == {(0, 0, 6, 6), (1, 0, 1, 1)}


def test_decimal_modes() -> None:
    t = _table(
        field(
            "bytes",
            "precise",
            logical="org.apache.kafka.connect.data.Decimal",
            params={"scale": "2", "connect.decimal.precision": "14"},
        ),
        field(
            "struct",
            "variable",
            logical="io.debezium.data.VariableScaleDecimal",
            fields=[
                field("int32", "scale", optional=False),
                field("bytes", "value", optional=False),
            ],
        ),
        field(
            "bytes",
            "huge",
            logical="org.apache.kafka.connect.data.Decimal",
            params={"scale": "3", "connect.decimal.precision": "60"},
        ),
        field("string", "as_string"),
        field("double", "as_double"),
    )
    big = 123456789012345678901234567890123456789012345678901
    frame = _one(
        t,
        {
            "id": 1,
            "precise": decimal_b64(-123456),
            "variable": {"scale": 7, "value": decimal_b64(31415926535)},
            "huge": decimal_b64(big),
            "as_string": "12.50",
            "as_double": 12.5,
        },
    )
    row = frame.row(0, named=True)
    assert frame.schema["precise"] == pl.Decimal(14, 2)
    assert row["precise"] == Decimal("-1234.56")
    assert row["variable"] == "3141.5926535"
    assert row["huge"] == "123456789012345678901234567890123456789012345678.901"
    assert row["as_string"] == "12.50"
    assert row["as_double"] == 12.5


@pytest.mark.parametrize(
    "unscaled",
    [0, 1, -1, 127, 128, -128, -129, 255, 256, 10**17, -(10**17), 10**37 - 1, -(10**37) + 1],
)
def test_precise_decimal_edges(unscaled: int) -> None:
    t = _table(
        field(
            "bytes",
            "v",
            logical="org.apache.kafka.connect.data.Decimal",
            params={"scale": "4", "connect.decimal.precision": "38"},
        )
    )
    frame = _one(t, {"id": 1, "v": decimal_b64(unscaled)})
    assert frame.get_column("v")[0] == Decimal(f"{unscaled}E-4")


def test_time_types() -> None:
    t = _table(
        field("int32", "d", logical="io.debezium.time.Date"),
        field("int32", "t_ms", logical="io.debezium.time.Time"),
        field("int64", "t_us", logical="io.debezium.time.MicroTime"),
        field("int64", "t_ns", logical="io.debezium.time.NanoTime"),
        field("int64", "ts_ms", logical="io.debezium.time.Timestamp"),
        field("int64", "ts_us", logical="io.debezium.time.MicroTimestamp"),
        field("int64", "ts_ns", logical="io.debezium.time.NanoTimestamp"),
        field("string", "tstz", logical="io.debezium.time.ZonedTimestamp"),
        field("string", "ttz", logical="io.debezium.time.ZonedTime"),
        field("int64", "dur", logical="io.debezium.time.MicroDuration"),
    )
    frame = _one(
        t,
        {
            "id": 1,
            "d": 19_783,  # 2024-03-01
            "t_ms": 45_296_789,
            "t_us": 45_296_789_012,
            "t_ns": 45_296_789_012_345,
            "ts_ms": 1_709_296_496_789,
            "ts_us": 1_709_296_496_789_012,
            "ts_ns": 1_709_296_496_789_012_345,
            "tstz": "2024-03-01T12:34:56.789012Z",
            "ttz": "12:34:56.789012Z",
            "dur": 90_061_000_001,
        },
    )
    row = frame.row(0, named=True)
    assert row["d"] == dt.date(2024, 3, 1)
    assert row["t_ms"] == dt.time(12, 34, 56, 789_000)
    assert row["t_us"] == dt.time(12, 34, 56, 789_012)
    assert row["t_ns"] == dt.time(12, 34, 56, 789_012)
    assert row["ts_ms"] == dt.datetime(2024, 3, 1, 12, 34, 56, 789_000)
    assert row["ts_us"] == dt.datetime(2024, 3, 1, 12, 34, 56, 789_012)
    assert frame.schema["ts_ns"] == pl.Datetime("ns")
    assert frame.get_column("ts_ns").cast(pl.Int64)[0] == 1_709_296_496_789_012_345
    assert row["tstz"] == dt.datetime(2024, 3, 1, 12, 34, 56, 789_012, tzinfo=dt.UTC)
    assert row["ttz"] == "12:34:56.789012Z"  # cast to TIMETZ by DuckDB
    assert row["dur"] == dt.timedelta(days=1, hours=1, minutes=1, seconds=1, microseconds=1)


def test_uuid_json_enum_bytes_arrays() -> None:
    t = _table(
        field("string", "u", logical="io.debezium.data.Uuid"),
        field("string", "j", logical="io.debezium.data.Json"),
        field("string", "e", logical="io.debezium.data.Enum", params={"allowed": "a,b"}),
        field("bytes", "b"),
        field("boolean", "flag"),
        field("array", "tags", items={"type": "string", "optional": True}),
        field("array", "nums", items={"type": "int32", "optional": True}),
        field(
            "array",
            "amounts",
            items={
                "type": "bytes",
                "optional": True,
                "name": "org.apache.kafka.connect.data.Decimal",
                "parameters": {"scale": "1"},
            },
        ),
    )
    frame = _one(
        t,
        {
            "id": 1,
            "u": "0b9e4bb8-2f1c-4c7e-9a57-7a4c3f7c6d1e",
            "j": '{"a": [1, 2]}',
            "e": "b",
            "b": base64.b64encode(b"\x00\xffbin").decode(),
            "flag": True,
            "tags": ["x", None, "z"],
            "nums": [3, 1],
            "amounts": [decimal_b64(15), decimal_b64(-5)],
        },
    )
    row = frame.row(0, named=True)
    assert row["u"] == "0b9e4bb8-2f1c-4c7e-9a57-7a4c3f7c6d1e"
    assert row["j"] == '{"a": [1, 2]}'
    assert row["e"] == "b"
    assert row["b"] == b"\x00\xffbin"
    assert row["flag"] is True
    assert row["tags"] == ["x", None, "z"]
    assert frame.schema["nums"] == pl.List(pl.Int32)
    assert row["nums"] == [3, 1]
    assert row["amounts"] == [Decimal("1.5"), Decimal("-0.5")]


def test_toast_placeholder_is_flagged_absent() -> None:
    t = _table(
        field("string", "big"),
        field("bytes", "blob"),
        field("array", "tags", items={"type": "string", "optional": True}),
    )
    placeholder_b64 = base64.b64encode(TOAST_PLACEHOLDER.encode()).decode()
    frame = _one(
        t,
        {"id": 1, "big": TOAST_PLACEHOLDER, "blob": placeholder_b64, "tags": [TOAST_PLACEHOLDER]},
        op="u",
    )
    for col in ("big", "blob", "tags"):
        assert frame.get_column(col)[0] is None
        assert frame.get_column(absent_flag(col))[0] is True


def test_bad_messages_become_dead_letters_and_the_rest_survives() -> None:
    t = _table(field("string", "name"), field("string", "u", logical="io.debezium.data.Uuid"))
    good = t.event("c", {"id": 1}, after={"id": 1, "name": "ok"})
    records = [
        good,
        t.raw({"id": 2}, b"\x00\xff garbage bytes"),
        t.raw({"id": 3}, good.value[:-40]),  # truncated JSON
        t.raw({"id": 4}, good.value.replace(b',"op":"c"', b"")),  # no op
        t.raw(b"not json", good.value),  # key is not JSON
        t.event("x", {"id": 5}, after={"id": 5}),
        t.event("c", None, after={"id": 6}),  # no key
        t.event("c", {"id": 7}, after={"id": 7, "u": "not-a-uuid"}),
        RawRecord("weird-topic", 0, 0, None, b"{}"),
        t.event("u", {"id": 8}, after={"id": 8, "name": "ok too"}),
    ]
    batch = Decoder().decode(records)
    reasons = {(d.topic, d.offset): d.error for d in batch.dead_letters}
    assert "malformed JSON" in reasons[(TOPIC, 1)]
    assert reasons[(TOPIC, 2)]
    assert reasons[(TOPIC, 3)] == "the envelope has no op"
    assert "key" in reasons[(TOPIC, 4)]
    assert reasons[(TOPIC, 5)] == "unknown op 'x'"
    assert "no key" in reasons[(TOPIC, 6)]
    assert "cannot convert 'not-a-uuid' to UUID" in reasons[(TOPIC, 7)]
    assert "topic name" in reasons[("weird-topic", 0)]
    assert len(batch.dead_letters) == 8
    dead = next(d for d in batch.dead_letters if d.offset == 1)
    assert dead.value == b"\x00\xff garbage bytes" and dead.key is not None
    (changes,) = batch.tables
    assert changes.frame.get_column("id").to_list() == [1, 8]


def test_transaction_and_heartbeat_topics_are_skipped() -> None:
    records = [
        RawRecord("lab.transaction", 0, 0, b'{"id":"1"}', b'{"status":"BEGIN","id":"1"}'),
        RawRecord("__debezium-heartbeat.lab", 0, 0, b'{"serverName":"lab"}', b'{"ts_ms":1}'),
    ]
    batch = Decoder().decode(records)
    assert batch.skipped == 2 and batch.tables == () and batch.dead_letters == ()
    assert {p.topic for p in batch.progress} == {"lab.transaction", "__debezium-heartbeat.lab"}


def test_schema_change_within_a_batch_flags_missing_columns() -> None:
    old = _table(field("string", "name"))
    new = _table(field("string", "name"), field("int32", "score"))
    new.offsets = old.offsets
    records = [
        old.event("c", {"id": 1}, after={"id": 1, "name": "a"}),
        new.event("c", {"id": 2}, after={"id": 2, "name": "b", "score": 5}),
        old.event("u", {"id": 1}, after={"id": 1, "name": "a2"}),
    ]
    batch = Decoder().decode(records)
    (changes,) = batch.tables
    assert [c.name for c in changes.columns] == ["name", "score"]
    assert len(changes.versions) == 2
    frame = changes.frame.sort("__offset")
    assert frame.get_column("score").to_list() == [None, 5, None]
    assert frame.get_column(absent_flag("score")).to_list() == [True, False, True]


def test_schemaless_payloads_infer_types_or_use_the_known_schema() -> None:
    typed = _table(
        field(
            "bytes",
            "amount",
            logical="org.apache.kafka.connect.data.Decimal",
            params={"scale": "2", "connect.decimal.precision": "10"},
        )
    )
    decoder = Decoder()
    first = decoder.decode(
        [typed.event("c", {"id": 1}, after={"id": 1, "amount": decimal_b64(250)})]
    )
    known = {TOPIC: first.tables[0].versions[0].schema}

    plain = _table(field("bytes", "amount"), schemas=False)
    plain.offsets = {0: 1}
    record = plain.event("c", {"id": 2}, after={"id": 2, "amount": decimal_b64(-99), "note": "x"})
    batch = decoder.decode([record], known)
    (changes,) = batch.tables
    row = changes.frame.row(0, named=True)
    assert row["amount"] == Decimal("-0.99")
    assert row["note"] == "x"  # a column the stored schema does not know: JSON type

    unknown = decoder.decode([record])
    row = unknown.tables[0].frame.row(0, named=True)
    assert row["amount"] == decimal_b64(-99)  # no schema anywhere: the JSON string
    assert row["id"] == 2
