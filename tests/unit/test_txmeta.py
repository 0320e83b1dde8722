"""engine.decode.txmeta over captured and edited Debezium records.

`event_xid` reads a data event's transaction by bytes (the last `"transaction":`
of the message); every captured envelope of tests/fixtures/*.jsonl is checked
against a plain JSON parse, and edited envelopes try to fool the byte search.
`parse_marker` reads the BEGIN/END records of `<prefix>.transaction`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from engine_helpers import FIXTURES, load_fixture

from engine.decode import txmeta
from engine.decode.records import RawRecord
from engine.lab.synthetic import BankTransactions, SourceTransactions

FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.jsonl"))


def _payload(value: bytes) -> Any:
    """A message's payload, with or without an embedded schema."""
    message = json.loads(value)
    if isinstance(message, dict) and set(message) == {"schema", "payload"}:
        return message["payload"]
    return message


def _expected_xid(value: bytes) -> str | None:
    txn = _payload(value).get("transaction")
    if txn is None:
        return None
    head, _sep, _tail = txn["id"].partition(":")
    return head


def _data_events(name: str) -> list[RawRecord]:
    return [
        r
        for r in load_fixture(name)
        if r.value is not None and not txmeta.is_transaction_topic(r.topic)
    ]


def _markers(name: str) -> list[RawRecord]:
    return [r for r in load_fixture(name) if txmeta.is_transaction_topic(r.topic)]


def _edit(value: bytes, edit: Any) -> bytes:
    """The message with its payload changed by `edit(payload)` (field order kept)."""
    message = json.loads(value)
    payload = message.get("payload", message)
    edit(payload)
    return json.dumps(message, separators=(",", ":")).encode()


def _captured_update() -> RawRecord:
    """labdbl.lab.everything[1]@8: an update inside transaction 875 (its 2nd event)."""
    (record,) = [
        r
        for r in load_fixture("lab_double")
        if (r.topic, r.partition, r.offset) == ("labdbl.lab.everything", 1, 8)
    ]
    return record


# -- event_xid ------------------------------------------------------------------------------


def test_the_fixtures_hold_events_inside_and_outside_transactions() -> None:
    assert len(FIXTURE_NAMES) >= 4
    for name in FIXTURE_NAMES:
        expected = [_expected_xid(r.value) for r in _data_events(name) if r.value is not None]
        assert None in expected, name  # snapshot rows
        assert len({x for x in expected if x is not None}) >= 8, name


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_event_xid_agrees_with_the_parsed_envelope_on_every_captured_event(name: str) -> None:
    events = _data_events(name)
    assert events
    for r in events:
        assert r.value is not None
        assert txmeta.event_xid(r.value) == _expected_xid(r.value), (r.topic, r.offset)


def test_event_xid_agrees_on_synthetic_events_with_and_without_a_transaction() -> None:
    meta = SourceTransactions("bank", first_xid=4242)
    generator = BankTransactions("bank.bank.transactions", keys=50, seed=3)
    txn = meta.begin()
    inside = [m for k in (1, 2, 3) for m in generator.change(k, transaction=txn)]
    outside = [m for k in (4, 5) for m in generator.change(k)]
    for m in inside:
        assert m.value is not None
        assert txmeta.event_xid(m.value) == "4242" == _expected_xid(m.value)
    for m in outside:
        assert m.value is not None
        assert txmeta.event_xid(m.value) is None is _expected_xid(m.value)


def test_a_null_transaction_is_none() -> None:
    snapshot = [r for r in _data_events("lab_double") if _payload(r.value or b"")["op"] == "r"]
    assert snapshot
    for r in snapshot:
        assert r.value is not None and b'"transaction":null' in r.value
        assert txmeta.event_xid(r.value) is None
    # A message without any transaction field (metadata from before Debezium had it).
    assert txmeta.event_xid(b'{"before":null,"after":{"id":1},"op":"c"}') is None


def _fool(payload: dict[str, Any], *, txn: Any) -> None:
    """Put the text `"transaction":{"id":"999:1"}` into column values: escaped in a
    text column, and unescaped as a map column named `transaction` (hstore as a map,
    a column of that name), in both before and after; then set the envelope's own."""
    decoy_text = '{"transaction":{"id":"999:1","total_order":1}}'
    row = dict(payload["after"])
    row["note"] = decoy_text
    row["transaction"] = {"id": "998:5", "total_order": 1, "data_collection_order": 1}
    payload["before"] = dict(row)
    payload["after"] = row
    payload["transaction"] = txn


def test_a_column_holding_transaction_text_does_not_fool_event_xid() -> None:
    record = _captured_update()
    assert record.value is not None
    real = _payload(record.value)["transaction"]
    assert real["id"] == "875:28040416"

    edited = _edit(record.value, lambda p: _fool(p, txn=real))
    assert edited.count(b'"transaction":') >= 3  # the decoys are there, unescaped too
    assert b'"transaction":{"id":"998:5"' in edited
    assert txmeta.event_xid(edited) == "875"

    outside = _edit(record.value, lambda p: _fool(p, txn=None))
    assert txmeta.event_xid(outside) is None


def test_event_xid_reads_other_layouts_by_parsing() -> None:
    record = _captured_update()
    assert record.value is not None
    # A schemaless message written with spaces (`"transaction": {`): the byte search
    # gives up, the parse finds it.
    pretty = json.dumps(_payload(record.value), indent=1).encode()
    assert b'"transaction": {' in pretty
    assert txmeta.event_xid(pretty) == "875"

    # Debezium 1.x wrote `transaction` last, after ts_ms.
    def last(p: dict[str, Any]) -> None:
        p["transaction"] = p.pop("transaction")

    assert txmeta.event_xid(_edit(record.value, last)) == "875"

    # Ids of other connectors (no <xid>:<lsn>) are kept whole.
    def other(p: dict[str, Any]) -> None:
        p["transaction"]["id"] = "file=binlog.000003,pos=1234"

    assert txmeta.event_xid(_edit(record.value, other)) == "file=binlog.000003,pos=1234"


def test_xid_of_id() -> None:
    assert txmeta.xid_of_id("877:28044168") == "877"
    assert txmeta.xid_of_id("00000025:00000d78:0003") == "00000025:00000d78:0003"
    assert txmeta.xid_of_id("abc:12") == "abc:12"
    assert txmeta.xid_of_id("877") == "877"


# -- parse_marker ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_parse_marker_reads_every_captured_begin_and_end(name: str) -> None:
    markers = _markers(name)
    ends = 0
    for r in markers:
        assert r.value is not None
        data = _payload(r.value)
        got = txmeta.parse_marker(r.topic, r.partition, r.offset, r.value)
        if data["status"] == "BEGIN":
            assert got is None
            continue
        ends += 1
        assert got is not None
        prefix = r.topic.removesuffix(".transaction")
        xid, lsn = data["id"].split(":")
        assert (got.xid, got.lsn, got.ts_ms) == (xid, int(lsn), data["ts_ms"])
        assert (got.topic, got.partition, got.offset) == (r.topic, r.partition, r.offset)
        assert dict(got.counts) == {
            f"{prefix}.{c['data_collection']}": c["event_count"] for c in data["data_collections"]
        }
        assert sum(n for _t, n in got.counts) == data["event_count"]
    assert ends == 11


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_an_end_laid_out_otherwise_reads_the_same(name: str) -> None:
    """Captured ENDs are read by bytes; the same END with its fields in another order
    (another converter's layout) takes the JSON parse and must give the same TxnEnd."""
    compared = 0
    for r in _markers(name):
        assert r.value is not None
        message = json.loads(r.value)
        if _payload(r.value)["status"] != "END":
            continue
        if "payload" in message:
            message["payload"] = dict(reversed(list(message["payload"].items())))
        else:
            message = dict(reversed(list(message.items())))
        other = json.dumps(message, separators=(",", ":")).encode()
        fast = txmeta.parse_marker(r.topic, r.partition, r.offset, r.value)
        parsed = txmeta.parse_marker(r.topic, r.partition, r.offset, other)
        assert fast is not None
        assert parsed == fast
        compared += 1
    assert compared == 11


def test_an_end_of_several_tables_counts_each_topic() -> None:
    meta = SourceTransactions("bank")
    legs = BankTransactions("bank.bank.transactions", keys=50, seed=1)
    ledger = BankTransactions("bank.bank.ledger", keys=50, seed=2)
    txn = meta.begin()
    for generator, key in ((legs, 1), (ledger, 7), (legs, 2), (legs, 3)):
        generator.change(key, transaction=txn)
    begin, end = txn.begin(), txn.end()
    assert txmeta.parse_marker(meta.topic, 0, 0, begin.value) is None
    got = txmeta.parse_marker(meta.topic, 1, 5, end.value)
    assert got is not None
    assert got.counts == (("bank.bank.ledger", 1), ("bank.bank.transactions", 3))
    assert got.needed(frozenset({"bank.bank.ledger"})) == {"bank.bank.ledger": 1}
    assert got.needed(None) == {"bank.bank.ledger": 1, "bank.bank.transactions": 3}
    assert (got.xid, got.lsn, got.partition, got.offset) == (str(txn.xid), txn.end_lsn, 1, 5)


def test_a_tombstone_on_the_transaction_topic_is_nothing() -> None:
    assert txmeta.parse_marker("labdbl.transaction", 0, 3, None) is None


def _captured_end() -> bytes:
    for r in _markers("lab_double"):
        if r.value is not None and b'"status":"END"' in r.value:
            return r.value
    raise AssertionError("no END captured")


def _end_with(edit: Any) -> bytes:
    return _edit(_captured_end(), edit)


@pytest.mark.parametrize(
    ("what", "value"),
    [
        ("not JSON", b"BEGIN 871"),
        ("cut off", _captured_end()[:-1]),
        ("a schema and no payload", b'{"schema":{"type":"struct"}}'),
        ("a JSON array", b"[1, 2]"),
        ("no status", _end_with(lambda p: p.pop("status"))),
        ("no id", _end_with(lambda p: p.pop("id"))),
        ("an unknown status", _end_with(lambda p: p.update(status="COMMIT"))),
        ("a commit time that is no number", _end_with(lambda p: p.update(ts_ms="soon"))),
        (
            "a count that is no number",
            _end_with(
                lambda p: p.update(
                    data_collections=[{"data_collection": "lab.everything", "event_count": "one"}]
                )
            ),
        ),
    ],
)
def test_a_malformed_transaction_record_raises_value_error(what: str, value: bytes) -> None:
    with pytest.raises(ValueError):
        txmeta.parse_marker("labdbl.transaction", 0, 0, value)


def test_a_data_event_on_the_transaction_topic_raises_value_error() -> None:
    record = _captured_update()
    with pytest.raises(ValueError, match="no status or id"):
        txmeta.parse_marker("labdbl.transaction", 0, 0, record.value)


@pytest.mark.parametrize(
    "collections", [[{"event_count": 1}], "lab.everything", [["lab.everything", 1]]]
)
def test_an_end_with_malformed_collections_raises_value_error(collections: Any) -> None:
    value = _end_with(lambda p: p.update(data_collections=collections))
    with pytest.raises(ValueError):
        txmeta.parse_marker("labdbl.transaction", 0, 0, value)
