"""Events that contradict their envelope's schema or their topic become dead letters.

Each case takes the captured capture of `lab.everything` (tests/fixtures), alters
one field of one event, and checks that only that event is dead-lettered, with a
reason a person can act on, while the rest of the batch decodes as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from engine_helpers import load_fixture
from envelopes import Table, field

from engine.decode.decoder import Decoder
from engine.decode.envelope import split
from engine.decode.model import OFFSET, PARTITION, absent_flag
from engine.decode.records import DecodedBatch, RawRecord

TOPIC = "lab.lab.everything"


@pytest.fixture(scope="module")
def precise() -> list[RawRecord]:
    return load_fixture("lab_precise")


def _rebuild(record: RawRecord, schema: bytes | None, payload: Any) -> RawRecord:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    value = body if schema is None else b'{"schema":' + schema + b',"payload":' + body + b"}"
    return RawRecord(record.topic, record.partition, record.offset, record.key, value)


def _payload_changed(record: RawRecord, change: Callable[[dict[str, Any]], None]) -> RawRecord:
    """The record with its payload altered; the schema bytes stay as captured."""
    assert record.value is not None
    schema, payload = split(record.value)
    doc = json.loads(payload)
    change(doc)
    return _rebuild(record, schema, doc)


def _schema_changed(record: RawRecord, change: Callable[[dict[str, Any]], None]) -> RawRecord:
    assert record.value is not None
    schema, payload = split(record.value)
    assert schema is not None
    doc = json.loads(schema)
    change(doc)
    return _rebuild(record, json.dumps(doc, separators=(",", ":")).encode(), json.loads(payload))


def _row_field(schema: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The `name` field of the before and after row schemas."""
    rows = [f for f in schema["fields"] if f["field"] in ("before", "after")]
    return [f for row in rows for f in row["fields"] if f["field"] == name]


def _not_optional(*names: str) -> Callable[[dict[str, Any]], None]:
    def change(schema: dict[str, Any]) -> None:
        for name in names:
            for f in _row_field(schema, name):
                f["optional"] = False

    return change


def _at(records: list[RawRecord], partition: int, offset: int) -> RawRecord:
    (found,) = [
        r for r in records if r.topic == TOPIC and r.partition == partition and r.offset == offset
    ]
    return found


def _replaced(records: list[RawRecord], altered: RawRecord) -> list[RawRecord]:
    return [
        altered
        if (r.topic, r.partition, r.offset) == (altered.topic, altered.partition, altered.offset)
        else r
        for r in records
    ]


def _positions(batch: DecodedBatch, topic: str = TOPIC) -> list[tuple[int, int]]:
    (changes,) = [t for t in batch.tables if t.topic == topic]
    frame = changes.frame.sort([PARTITION, OFFSET])
    return list(zip(frame.get_column(PARTITION), frame.get_column(OFFSET), strict=True))


def _only_dead(
    records: list[RawRecord], altered: RawRecord, topic: str = TOPIC
) -> tuple[str, DecodedBatch]:
    """Decode the batch with `altered` in place of its original: the reason of its dead
    letter, after checking that every other event decodes as in the unaltered batch."""
    clean = Decoder().decode(records)
    batch = Decoder().decode(_replaced(records, altered))
    new = [d for d in batch.dead_letters if d.topic == topic]
    assert [(d.partition, d.offset) for d in new] == [(altered.partition, altered.offset)]
    assert new[0].value == altered.value and new[0].key == altered.key
    others = [d for d in clean.dead_letters]
    assert [d for d in batch.dead_letters if d.topic != topic] == others
    expected = [p for p in _positions(clean, topic) if p != (altered.partition, altered.offset)]
    assert _positions(batch, topic) == expected
    return new[0].error, batch


def test_the_captured_batch_has_no_violations(precise: list[RawRecord]) -> None:
    batch = Decoder().decode(precise)
    # Only the table without a primary key is dead-lettered (for its missing key).
    assert {d.topic for d in batch.dead_letters} == {"lab.lab.nokey"}
    assert len(_positions(batch)) == 13


def test_null_in_a_non_optional_column_of_after(precise: list[RawRecord]) -> None:
    insert = _at(precise, 1, 1)
    altered = _payload_changed(insert, lambda p: p["after"].update(id=None))
    reason, _ = _only_dead(precise, altered)
    assert reason == (
        "column 'id' is not optional in the envelope's schema but the after row has null"
    )


def test_missing_value_of_a_non_optional_column(precise: list[RawRecord]) -> None:
    update = _at(precise, 1, 5)
    altered = _payload_changed(update, lambda p: p["after"].pop("id"))
    reason, _ = _only_dead(precise, altered)
    assert reason == (
        "column 'id' is not optional in the envelope's schema but the after row has "
        "no value for it (the field is missing)"
    )


def test_schema_marks_a_null_column_non_optional(precise: list[RawRecord]) -> None:
    snapshot = _at(precise, 0, 0)  # row 2: every column but the key is null
    reason, _ = _only_dead(precise, _schema_changed(snapshot, _not_optional("amount")))
    assert reason == (
        "column 'amount' is not optional in the envelope's schema but the after row has null"
    )
    reason, _ = _only_dead(precise, _schema_changed(snapshot, _not_optional("amount", "num")))
    assert reason == (
        "columns 'num', 'amount' are not optional in the envelope's schema "
        "but the after row has null or no value for them"
    )


def test_toast_placeholder_in_a_non_optional_column_is_a_value(
    precise: list[RawRecord],
) -> None:
    update = _at(precise, 1, 2)
    after = json.loads(split(update.value or b"")[1])["after"]
    assert after["big_text"] == "__debezium_unavailable_value"
    altered = _schema_changed(update, _not_optional("big_text", "num"))
    batch = Decoder().decode(_replaced(precise, altered))
    assert {d.topic for d in batch.dead_letters} == {"lab.lab.nokey"}
    (changes,) = [t for t in batch.tables if t.topic == TOPIC]
    row = changes.frame.filter((changes.frame[PARTITION] == 1) & (changes.frame[OFFSET] == 2))
    assert row.get_column(absent_flag("big_text")).to_list() == [True]


def test_before_rows_are_not_checked_for_non_optional_columns(
    precise: list[RawRecord],
) -> None:
    # Debezium writes a type default, never null, for a non-optional column of a
    # before row it has no value for; a null there does not stop the delete.
    delete = _at(precise, 0, 2)
    altered = _schema_changed(delete, _not_optional("amount"))
    batch = Decoder().decode(_replaced(precise, altered))
    assert {d.topic for d in batch.dead_letters} == {"lab.lab.nokey"}
    assert (0, 2) in _positions(batch)


def test_field_of_after_that_the_schema_lacks(precise: list[RawRecord]) -> None:
    update = _at(precise, 1, 9)
    altered = _payload_changed(update, lambda p: p["after"].update(foo=1))
    reason, _ = _only_dead(precise, altered)
    assert reason.startswith(
        "field 'foo' in after is not in the envelope's schema "
        "(value schema fields: id, small, num, big, real_v, dbl, amount,"
    )
    assert reason.endswith("big_nums, big_json, extra)")  # the column added before it


def test_object_valued_fields_that_the_schema_lacks(precise: list[RawRecord]) -> None:
    insert = _at(precise, 1, 7)

    def add(p: dict[str, Any]) -> None:
        p["after"]["foo"] = {"a": 1}
        p["after"]["bar"] = None

    reason, _ = _only_dead(precise, _payload_changed(insert, add))
    assert reason.startswith("fields 'foo', 'bar' in after are not in the envelope's schema")


def test_field_of_before_that_the_schema_lacks(precise: list[RawRecord]) -> None:
    delete = _at(precise, 0, 2)
    altered = _payload_changed(delete, lambda p: p["before"].update(foo="x"))
    reason, _ = _only_dead(precise, altered)
    assert reason.startswith("field 'foo' in before is not in the envelope's schema")


def test_json_text_that_looks_like_keys_is_not_a_field(precise: list[RawRecord]) -> None:
    insert = _at(precise, 1, 8)
    text = '{"foo": {"bar\\\\": 1}, "\\"baz": [2]}'
    altered = _payload_changed(insert, lambda p: p["after"].update(j=text, vc='x":'))
    batch = Decoder().decode(_replaced(precise, altered))
    assert {d.topic for d in batch.dead_letters} == {"lab.lab.nokey"}
    (changes,) = [t for t in batch.tables if t.topic == TOPIC]
    row = changes.frame.filter((changes.frame[PARTITION] == 1) & (changes.frame[OFFSET] == 8))
    assert row.get_column("j").to_list() == [text]


@pytest.mark.parametrize(
    ("part", "value", "reason"),
    [
        (
            "table",
            "accounts",
            "source.table 'accounts' does not match the topic's table 'everything' "
            "(topic lab.lab.everything): check the connector's routing "
            "(RegexRouter / topic.prefix)",
        ),
        (
            "schema",
            "public",
            "source.schema 'public' does not match the topic's schema 'lab' "
            "(topic lab.lab.everything): check the connector's routing "
            "(RegexRouter / topic.prefix)",
        ),
    ],
)
def test_source_table_other_than_the_topics(
    precise: list[RawRecord], part: str, value: str, reason: str
) -> None:
    update = _at(precise, 1, 3)
    altered = _payload_changed(update, lambda p: p["source"].update({part: value}))
    assert _only_dead(precise, altered)[0] == reason


def test_source_names_a_topic_cannot_hold_are_not_compared(precise: list[RawRecord]) -> None:
    # Topic naming strategies rewrite such names (e.g. 'Every Thing' -> 'Every_Thing').
    update = _at(precise, 1, 3)
    altered = _payload_changed(update, lambda p: p["source"].update(table="Every Thing"))
    batch = Decoder().decode(_replaced(precise, altered))
    assert {d.topic for d in batch.dead_letters} == {"lab.lab.nokey"}


def test_schemaless_events_are_checked_for_routing_only() -> None:
    plain = load_fixture("lab_precise_schemaless")
    topic = "labplain.lab.everything"
    insert = next(r for r in plain if r.topic == topic and r.offset == 1 and r.partition == 1)
    assert insert.value is not None and not insert.value.startswith(b'{"schema":')
    doc = json.loads(insert.value)
    doc["after"]["foo"] = 1
    doc["after"]["id"] = None
    extra = _rebuild(insert, None, doc)
    batch = Decoder().decode(_replaced(plain, extra))
    assert {d.topic for d in batch.dead_letters} == {"labplain.lab.nokey"}

    doc["source"]["table"] = "accounts"
    misrouted = _rebuild(insert, None, doc)
    batch = Decoder().decode(_replaced(plain, misrouted))
    (dead,) = [d for d in batch.dead_letters if d.topic == topic]
    assert dead.offset == 1 and dead.error.startswith("source.table 'accounts' does not match")


def test_unknown_field_next_to_a_map_column() -> None:
    # A map's keys are data, so the key count is not fixed: the declared names decide.
    topic = "lab.lab.attrs"
    t = Table(
        topic,
        [field("int64", "id", optional=False)],
        [
            field("int64", "id", optional=False),
            field("map", "attrs", keys={"type": "string"}, values={"type": "string"}),
        ],
    )
    records = [
        t.event("c", {"id": 1}, after={"id": 1, "attrs": {"colour": "red", "id": "x"}}),
        t.event("c", {"id": 2}, after={"id": 2, "attrs": {}, "foo": 3}),
        t.event("u", {"id": 1}, after={"id": 1, "attrs": None}),
    ]
    batch = Decoder().decode(records)
    (dead,) = batch.dead_letters
    assert dead.offset == 1
    assert dead.error == (
        "field 'foo' in after is not in the envelope's schema (value schema fields: id, attrs)"
    )
    (changes,) = batch.tables
    assert changes.frame.get_column(OFFSET).to_list() == [0, 2]
