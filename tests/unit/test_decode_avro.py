"""Confluent-framed Avro (format=avro) decodes to what the JSON path gives.

tests/fixtures/avro/lab.jsonl holds REAL messages: the `lab` table of capture.py
(every column type the engine maps, snapshot, inserts, TOASTed updates, a delete
with its tombstone, a transaction, a truncate, an ADD COLUMN) captured through a
stack started with CHANGEFOLD_FORMAT=avro (Apicurio Registry and its Connect Avro
converter); avro/lab_schemas.json holds the registry's schema of every id they
name. lab_precise.jsonl holds the same rows and changes as the JsonConverter wrote
them (same connector settings), so each decode is compared with it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import polars as pl
import pytest
from engine_helpers import FIXTURES, load_fixture

from engine.decode import avro, txmeta
from engine.decode.avro import AvroSplitter, RegistryUnavailable, SchemaRegistry
from engine.decode.decoder import Decoder
from engine.decode.envelope import split
from engine.decode.model import LSN, OFFSET, PARTITION, SOURCE_TS_MS
from engine.decode.records import RawRecord
from engine.state.transactions import TxnRules


def _schemas() -> dict[int, str]:
    raw = json.loads((FIXTURES / "avro/lab_schemas.json").read_text())
    return {int(k): v for k, v in raw.items()}


def _avro_fixture() -> list[RawRecord]:
    out = []
    for line in (FIXTURES / "avro/lab.jsonl").read_text().splitlines():
        r = json.loads(line)
        out.append(
            RawRecord(
                r["topic"],
                r["partition"],
                r["offset"],
                base64.b64decode(r["key"]) if r["key"] is not None else None,
                base64.b64decode(r["value"]) if r["value"] is not None else None,
            )
        )
    return out


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[SchemaRegistry]:
    """The captured schemas as the process's registry (txmeta reads through it)."""
    reg = SchemaRegistry.of(_schemas())
    monkeypatch.setattr(avro, "_default", reg)
    monkeypatch.setattr(avro, "_configured", True)
    yield reg


def test_every_message_is_confluent_framed() -> None:
    records = _avro_fixture()
    assert len(records) == len(load_fixture("lab_precise"))
    known = _schemas()
    for r in records:
        for data in (r.key, r.value):
            if data is not None:
                assert data[:1] == b"\x00"
                assert avro.schema_id(data) in known


def test_connect_schemas_are_rebuilt_byte_for_byte(registry: SchemaRegistry) -> None:
    """The Connect schema rebuilt from each Avro schema is the very JSON the
    JsonConverter embeds for the same table version (so fingerprints, recorded
    versions and the envelope checks are the JSON path's)."""
    json_schemas = set()
    for r in load_fixture("lab_precise"):
        for data in (r.key, r.value):
            if data is not None:
                schema, _payload = split(data)
                json_schemas.add(schema)
    splitter = AvroSplitter(registry)
    seen = set()
    for r in _avro_fixture():
        for data in (r.key, r.value):
            if data is not None:
                seen.add(splitter.split(data)[0])
    assert seen <= json_schemas
    assert len(seen) == len(_schemas())


def _ordered(frame: pl.DataFrame, key: str | None) -> pl.DataFrame:
    """Events in source order without what differs between two captures (positions,
    times, LSNs): sorted by LSN, then key."""
    by = [LSN, *([key] if key else []), "__op"]
    return frame.sort(by, nulls_last=True).drop(PARTITION, OFFSET, SOURCE_TS_MS, LSN)


def test_decode_equals_the_json_decode_of_the_same_rows(registry: SchemaRegistry) -> None:
    from_avro = Decoder(registry).decode(_avro_fixture())
    from_json = Decoder().decode(load_fixture("lab_precise"))
    assert sorted(d.error for d in from_avro.dead_letters) == sorted(
        d.error for d in from_json.dead_letters
    )
    assert (from_avro.tombstones, from_avro.skipped) == (from_json.tombstones, from_json.skipped)
    assert {t.topic for t in from_avro.tables} == {t.topic for t in from_json.tables}
    for a in from_avro.tables:
        j = next(t for t in from_json.tables if t.topic == a.topic)
        assert a.mirror == j.mirror and a.key == j.key
        assert a.columns == j.columns  # DuckDB types, logical types, decimals' scale...
        assert {v.schema.fingerprint for v in a.versions} == {
            v.schema.fingerprint for v in j.versions
        }
        key = a.key[0] if a.key else None
        left, right = _ordered(a.frame, key), _ordered(j.frame, key)
        # The column order follows the partition each version came first in: not the point.
        assert sorted(left.columns) == sorted(right.columns)
        right = right.select(left.columns)
        assert left.schema == right.schema
        assert left.to_dicts() == right.to_dicts()


def test_logical_types_and_toast_placeholder(registry: SchemaRegistry) -> None:
    """Spot checks of the values the comparison above covers: decimals with fixed and
    variable scale, times, zoned timestamps, UUID, JSON, enum, arrays, bytes, and the
    TOAST placeholder flagged absent (not written as text)."""
    batch = Decoder(registry).decode(_avro_fixture())
    table = next(t for t in batch.tables if t.topic == "lab.lab.everything")
    frame = table.frame
    first = frame.filter((pl.col("id") == 1) & (pl.col("__op") == "r")).to_dicts()[0]
    assert str(first["amount"]) == "-123456789.123"
    assert first["anynum"] == "3.1415926535897932384626433832795028841971693993751"
    assert str(first["t"]) == "23:59:59.999999"
    assert str(first["tstz"]) == "2024-03-01 11:34:56.789012+00:00"
    assert first["u"] == "0b9e4bb8-2f1c-4c7e-9a57-7a4c3f7c6d1e"
    assert first["mood"] == "happy"
    assert first["tags"] == ["x", None, "a,b", 'quote"d']
    assert first["raw"] == b"\x00\xff\x7f\x80"
    spec = {c.name: c for c in table.columns}
    assert spec["amount"].duck_type == "DECIMAL(12,3)"
    assert spec["ts"].duck_type == "TIMESTAMP" and spec["tstz"].duck_type == "TIMESTAMPTZ"
    assert spec["u"].duck_type == "UUID" and spec["jb"].duck_type == "JSON"
    # The update of id 3 that left the TOASTed columns alone.
    untouched = frame.filter((pl.col("id") == 3) & (pl.col("mood") == "sad")).to_dicts()[0]
    assert untouched["__absent_big_text"] is True
    assert untouched["big_text"] is None


def test_transaction_metadata(registry: SchemaRegistry) -> None:
    """BEGIN/END records and the events' transaction blocks read as from JSON."""
    avro_ends = []
    for r in _avro_fixture():
        if r.topic == "lab.transaction":
            end = txmeta.parse_marker(r.topic, r.partition, r.offset, r.value)
            if end is not None:
                avro_ends.append(end)
    json_ends = [
        end
        for r in load_fixture("lab_precise")
        if r.topic == "lab.transaction"
        and (end := txmeta.parse_marker(r.topic, r.partition, r.offset, r.value)) is not None
    ]
    assert sorted(e.counts for e in avro_ends) == sorted(e.counts for e in json_ends)
    assert all(e.ts_ms > 0 and e.lsn > 0 for e in avro_ends)
    in_txn = [
        txmeta.event_txn(r.value)
        for r in _avro_fixture()
        if r.topic == "lab.lab.everything" and r.value is not None
    ]
    json_in_txn = [
        txmeta.event_txn(r.value)
        for r in load_fixture("lab_precise")
        if r.topic == "lab.lab.everything" and r.value is not None
    ]
    assert sum(t is None for t in in_txn) == sum(t is None for t in json_in_txn) == 2  # snapshot
    assert sorted(t[1] for t in in_txn if t) == sorted(t[1] for t in json_in_txn if t)
    ends_by_xid = {e.xid for e in avro_ends}
    assert {t[0] for t in in_txn if t} <= ends_by_xid


def test_fold_with_transactions_gives_the_json_state(registry: SchemaRegistry) -> None:
    """Folded through the engine's step with the lab prefix's transaction topic
    followed (whole transactions at a time), the Avro capture leaves the mirrors, dead
    letters, schema versions and held events the JSON capture leaves, and a frontier."""
    from test_transactions import fold_in_one_batch

    rules = TxnRules(frozenset({"lab"}))
    from_avro = fold_in_one_batch(_avro_fixture(), rules)
    from_json = fold_in_one_batch(load_fixture("lab_precise"), rules)
    assert from_avro["frontier"] is not None
    assert from_avro.pop("frontier")[3:] == from_json.pop("frontier")[3:]  # after xid, lsn, ts
    # Keyless events go to the partition the producer picks: compare all but the position.
    for snap in (from_avro, from_json):
        snap["dead_letters"] = sorted((t, stage, e) for t, _p, _o, stage, e in snap["dead_letters"])
    assert from_avro == from_json


def test_unknown_schema_id_is_a_dead_letter() -> None:
    records = [r for r in _avro_fixture() if r.topic == "lab.lab.everything" and r.value]
    batch = Decoder(SchemaRegistry.of({})).decode(records[:2])
    assert len(batch.dead_letters) == 2
    assert "schema id 10 is not known" in batch.dead_letters[0].error


def test_a_key_that_cannot_be_read_is_named_in_the_dead_letter(registry: SchemaRegistry) -> None:
    records = [r for r in _avro_fixture() if r.topic == "lab.lab.everything" and r.value]
    good = records[0]
    broken = [
        RawRecord(good.topic, good.partition, good.offset, b"\x00\x00", good.value),
        RawRecord(good.topic, good.partition, good.offset + 1, b"{not a key", good.value),
    ]
    batch = Decoder(registry).decode(broken)
    assert [d.error for d in batch.dead_letters] == [
        "the key cannot be read: the message is not Confluent-framed Avro (byte 0, 4-byte id)"
    ] * 2
    assert [d.key for d in batch.dead_letters] == [b"\x00\x00", b"{not a key"]


def test_without_a_registry_avro_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """format=json (the default): no registry, every message is read as JSON, so an
    Avro message is a dead letter as malformed JSON, and nothing is fetched."""
    monkeypatch.setattr(avro, "_default", None)
    monkeypatch.setattr(avro, "_configured", False)
    monkeypatch.delenv("CHANGEFOLD_FORMAT", raising=False)
    records = [r for r in _avro_fixture() if r.topic == "lab.lab.everything" and r.value]
    batch = Decoder().decode(records[:1])
    assert avro.default_registry() is None
    assert "malformed JSON" in batch.dead_letters[0].error


def test_a_registry_that_does_not_answer_stops_the_batch() -> None:
    """Not a dead letter per event: the registry being away is not the events' fault."""
    records = [r for r in _avro_fixture() if r.topic == "lab.lab.everything" and r.value]
    dead_port = SchemaRegistry("http://127.0.0.1:9", timeout_s=0.5)
    with pytest.raises(RegistryUnavailable, match="did not answer"):
        Decoder(dead_port).decode(records[:1])


def test_schemas_are_fetched_once_per_id(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    schemas = _schemas()

    def fake_get(url: str, timeout: float) -> Any:
        calls.append(url)
        sid = int(url.rsplit("/", 1)[1])
        return httpx.Response(200, json={"schema": schemas[sid]})

    monkeypatch.setattr(avro.httpx, "get", fake_get)
    reg = SchemaRegistry("http://registry.test")
    Decoder(reg).decode(_avro_fixture())
    Decoder(reg).decode(_avro_fixture())
    assert len(calls) == len(set(calls))
    assert all(c.startswith("http://registry.test/apis/ccompat/v7/schemas/ids/") for c in calls)


def test_registry_in_use_restores_the_registry_before_it() -> None:
    outer = avro.SchemaRegistry.of({1: {"type": "string"}})
    with avro.registry_in_use(outer):
        with avro.registry_in_use(None):
            assert avro.default_registry() is None
        assert avro.default_registry() is outer
    assert avro.default_registry() is None  # the unit tests' own (conftest)
