"""Decode and fold change events captured from the real stack (tests/fixtures/capture.py).

The `lab.everything` table has a column of every type the engine maps; the
fixtures hold its snapshot, inserts, updates with and without TOASTed columns,
a delete with its tombstone, a truncate and an ADD COLUMN, as Debezium wrote
them in each decimal mode, and without embedded schemas.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import replace
from decimal import Decimal

import pytest
from engine_helpers import fold, load_fixture, memory_writer, rows

from engine.decode.decoder import Decoder
from engine.decode.model import MirrorName
from engine.decode.records import RawRecord

COLUMNS = (
    "id, small, num, big, real_v, dbl, amount, anynum, flag, d, t, t3, ttz, ts, ts3, tstz, iv, "
    "u, j, jb, mood, tags, nums, raw, ch, vc, big_text, big_nums, big_json"
)


def _payload(record: RawRecord) -> dict:
    assert record.value is not None
    doc = json.loads(record.value)
    return doc.get("payload", doc)


def _event(records: list[RawRecord], op: str, row_id: int, nth: int = 0) -> RawRecord:
    found = [
        r
        for r in records
        if r.topic.endswith(".lab.everything")
        and r.value is not None
        and _payload(r)["op"] == op
        and (_payload(r)["after"] or _payload(r)["before"] or {}).get("id") == row_id
    ]
    return found[nth]


def _upto(records: list[RawRecord], last: RawRecord) -> list[RawRecord]:
    """Records of `last`'s partition up to it, and every other topic/partition's records
    that Debezium wrote before it (by LSN), as one poll could return them."""
    lsn = _payload(last)["source"]["lsn"]
    out = []
    for r in records:
        if r.topic != last.topic:
            continue
        if r.value is None or _payload(r)["source"]["lsn"] <= lsn:
            out.append(r)
    return out


@pytest.fixture(scope="module")
def precise() -> list[RawRecord]:
    return load_fixture("lab_precise")


def test_every_captured_event_decodes(precise: list[RawRecord]) -> None:
    batch = Decoder().decode(precise)
    ops = sorted(r for t in batch.tables for r in t.frame.get_column("__op").to_list())
    assert ops == sorted("rrccuuucudtcc")[:0] or ops  # filled below
    assert sorted(ops) == sorted(["r", "r", "c", "c", "u", "u", "d", "c", "u", "t", "c", "c", "u"])
    assert batch.tombstones == 1
    assert batch.skipped == sum(r.topic == "lab.transaction" for r in precise) > 0
    # lab.nokey has no primary key: its events have no key and become dead letters.
    assert {d.topic for d in batch.dead_letters} == {"lab.lab.nokey"}
    assert all("no key" in d.error for d in batch.dead_letters)


def test_all_types_fold_exactly(precise: list[RawRecord]) -> None:
    writer = memory_writer()
    insert = _event(precise, "c", 3)
    fold(writer, _upto(precise, insert))
    (row,) = rows(writer, f"SELECT {COLUMNS} FROM lab.everything WHERE id = 3")
    values = dict(zip([c.strip() for c in COLUMNS.split(",")], row, strict=True))
    sent = _payload(insert)["after"]
    assert values["small"] == -32768
    assert values["num"] == 2147483647
    assert values["big"] == -9223372036854775808
    assert values["real_v"] == 1.5
    assert values["dbl"] == -2.25e-300
    assert values["amount"] == Decimal("-123456789.123")
    assert Decimal(values["anynum"]) == Decimal(
        "3.14159265358979323846264338327950288419716939937510"
    )
    assert values["flag"] is True
    assert values["d"] == dt.date(2024, 2, 29)
    assert values["t"] == dt.time(23, 59, 59, 999999)
    assert values["t3"] == dt.time(12, 34, 56, 789000)
    assert values["ttz"] == dt.time(8, 15, 30, 123456, tzinfo=dt.UTC)
    assert values["ts"] == dt.datetime(2024, 2, 29, 23, 59, 59, 999999)
    assert values["ts3"] == dt.datetime(1999, 12, 31, 23, 59, 59, 999000)
    assert values["tstz"] == dt.datetime(2024, 3, 1, 11, 34, 56, 789012, tzinfo=dt.UTC)
    assert values["iv"] == dt.timedelta(microseconds=sent["iv"])
    assert values["u"] == uuid.UUID("0b9e4bb8-2f1c-4c7e-9a57-7a4c3f7c6d1e")
    assert json.loads(values["j"]) == {"a": [1, 2.5, "x"]}
    assert json.loads(values["jb"]) == {"k": {"nested": True}}
    assert values["mood"] == "happy"
    assert values["tags"] == ["x", None, "a,b", 'quote"d']
    assert values["nums"] == [3, -1, None]
    assert values["raw"] == b"\x00\xff\x7f\x80"
    assert values["ch"] == "ab "
    assert values["vc"] == "varchar"
    assert values["big_text"] == sent["big_text"] and len(values["big_text"]) == 20000
    assert values["big_nums"] == sent["big_nums"] and len(values["big_nums"]) == 3000
    assert values["big_json"] == sent["big_json"]
    types = dict(
        rows(
            writer,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'lab' AND table_name = 'everything'",
        )
    )
    assert types["amount"] == "DECIMAL(12,3)"
    assert types["anynum"] == "VARCHAR"
    assert types["real_v"] == "FLOAT" and types["dbl"] == "DOUBLE"
    assert types["t3"] == "TIME" and types["ttz"] == "TIME WITH TIME ZONE"
    assert types["ts3"] == "TIMESTAMP" and types["tstz"] == "TIMESTAMP WITH TIME ZONE"
    assert types["iv"] == "INTERVAL" and types["u"] == "UUID" and types["j"] == "JSON"
    assert types["tags"] == "VARCHAR[]" and types["nums"] == "INTEGER[]"
    assert types["raw"] == "BLOB"


def test_toast_placeholders_keep_stored_values(precise: list[RawRecord]) -> None:
    writer = memory_writer()
    insert = _event(precise, "c", 3)
    first_update = _event(precise, "u", 3, 0)
    second_update = _event(precise, "u", 3, 1)
    assert _payload(first_update)["after"]["big_text"] == "__debezium_unavailable_value"
    assert _payload(second_update)["after"]["big_nums"][:2] == [95, 95]  # the placeholder's bytes
    fold(writer, _upto(precise, insert))
    fold(writer, [first_update])
    original = _payload(insert)["after"]
    (row,) = rows(
        writer, "SELECT num, mood, big_text, big_nums, big_json FROM lab.everything WHERE id = 3"
    )
    assert row == (
        2147483646,
        "sad",
        original["big_text"],
        original["big_nums"],
        original["big_json"],
    )
    fold(writer, [second_update])
    (row,) = rows(writer, "SELECT big_text, big_nums, anynum FROM lab.everything WHERE id = 3")
    assert row[0] == "short now"
    assert row[1] == original["big_nums"]
    assert Decimal(row[2]) == Decimal("1e-20")


def test_whole_capture_folds_to_the_final_table(precise: list[RawRecord]) -> None:
    writer = memory_writer()
    fold(writer, precise)
    got = rows(writer, "SELECT id, vc, extra FROM lab.everything ORDER BY id")
    # Rows 1, 2, 3 and 5 were truncated, 4 deleted; 6 was updated after the ADD COLUMN.
    assert got == [(6, "after truncate", 9), (7, "varchar", 8)]
    versions = rows(
        writer,
        "SELECT version FROM _changefold.schema_versions "
        "WHERE table_schema = 'lab' AND table_name = 'everything'",
    )
    assert sorted(v for (v,) in versions) == [1, 2]


def test_capture_folded_in_one_batch_per_message_gives_the_same_state(
    precise: list[RawRecord],
) -> None:
    whole = memory_writer()
    fold(whole, precise)
    by_one = memory_writer()
    # Interleave the partitions in source (LSN) order; a tombstone follows its delete.
    lsn: dict[RawRecord, int] = {}
    last = 0
    for r in sorted(precise, key=lambda r: (r.topic, r.partition, r.offset)):
        payload = _payload(r) if r.value is not None else {}
        last = payload.get("source", {}).get("lsn", last)
        lsn[r] = last
    for record in sorted(precise, key=lambda r: (lsn[r], r.topic, r.partition, r.offset)):
        fold(by_one, [record])
    sql = f"SELECT {COLUMNS}, extra FROM lab.everything ORDER BY id"
    assert rows(by_one, sql) == rows(whole, sql)


@pytest.mark.parametrize(
    ("fixture", "amount", "anynum", "amount_type"),
    [
        (
            "lab_string",
            "-123456789.123",
            "3.14159265358979323846264338327950288419716939937510",
            "VARCHAR",
        ),
        ("lab_double", -123456789.123, 3.141592653589793, "DOUBLE"),
    ],
)
def test_string_and_double_decimal_modes(
    fixture: str, amount: object, anynum: object, amount_type: str
) -> None:
    records = load_fixture(fixture)
    writer = memory_writer()
    prefix = records[0].topic.split(".")[0]
    fold(writer, _upto(records, _event(records, "c", 3)))
    (row,) = rows(writer, f"SELECT amount, anynum FROM {prefix}.everything WHERE id = 3")
    assert row == (amount, anynum)
    (dtype,) = rows(
        writer,
        "SELECT data_type FROM information_schema.columns WHERE "
        "table_schema = ? AND column_name = 'amount'",
        [prefix],
    )[0]
    assert dtype == amount_type


def test_schemaless_capture_uses_json_types_or_the_known_schema(precise: list[RawRecord]) -> None:
    plain = load_fixture("lab_precise_schemaless")
    insert = _event(plain, "c", 3)
    decoded = Decoder().decode([insert])
    inferred = decoded.tables[0].frame.row(0, named=True)
    assert inferred["amount"] == _payload(insert)["after"]["amount"]  # base64 text, untyped
    assert inferred["num"] == 2147483647

    typed = Decoder().decode([_event(precise, "c", 3)]).tables[0].versions[0].schema
    known = {
        insert.topic: replace(
            typed, topic=insert.topic, mirror=MirrorName("labplain", "everything")
        )
    }
    batch = Decoder().decode([insert], known)
    row = batch.tables[0].frame.row(0, named=True)
    assert row["amount"] == Decimal("-123456789.123")
    assert row["d"] == dt.date(2024, 2, 29)
