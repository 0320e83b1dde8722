"""`changefold bench fold --format avro`: the pure parts. The Avro schemas written for
the synthetic events are the Avro converter's (checked against the schemas the stack's
registry served for the captured lab table), and the re-encoded events decode, through
engine.decode.avro, to what their JSON originals decode to."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from engine_helpers import FIXTURES, fold, load_fixture, memory_writer, mirror_rows

from engine.app.cli import main
from engine.decode import avro
from engine.decode.avro import SchemaRegistry
from engine.decode.decoder import Decoder
from engine.decode.records import RawRecord
from engine.lab.avrowire import AvroEncoder, avro_schema, frame
from engine.lab.bench import EngineRun, Measured, Rate, compare
from engine.lab.synthetic import BankTransactions

TOPIC = "benchfold_test.bank.transactions"


def _captured_avro_schemas() -> list[str]:
    return list(json.loads((FIXTURES / "avro/lab_schemas.json").read_text()).values())


def test_converter_form_is_the_registry_text_of_every_captured_schema() -> None:
    """Every Connect schema the JsonConverter embedded in the lab capture (data events,
    both table versions of the ADD COLUMN, transaction BEGIN/END, keys) becomes,
    character for character, the Avro schema the registry served for it in the Avro
    capture of the same changes; and every captured Avro schema is reached so."""
    captured = set(_captured_avro_schemas())
    made = set()
    for r in load_fixture("lab_precise"):
        for data in (r.key, r.value):
            if data is None:
                continue
            schema = json.loads(data).get("schema")
            if schema is None:
                continue
            text = json.dumps(avro_schema(schema), separators=(",", ":"))
            assert text in captured, schema.get("name")
            made.add(text)
    assert made == captured


def _bank_messages(n: int) -> list[tuple[bytes, bytes | None]]:
    out: list[tuple[bytes, bytes | None]] = []
    for m in BankTransactions(TOPIC, keys=300):
        out.append((m.key, m.value))
        if len(out) >= n:
            return out
    raise AssertionError("unreachable")


def _encoded(n: int) -> tuple[list[RawRecord], list[RawRecord], SchemaRegistry]:
    """n synthetic messages as JSON records and as Avro records (ids 7 and 8)."""
    messages = _bank_messages(n)
    first = next((k, v) for k, v in messages if v is not None)
    enc = AvroEncoder()
    enc.prepare(*first)
    assert enc.key is not None and enc.value is not None
    enc.key.schema_id, enc.value.schema_id = 7, 8
    registry = SchemaRegistry.of({7: enc.key.text, 8: enc.value.text})
    as_json, as_avro = [], []
    for offset, (key, value) in enumerate(messages):
        as_json.append(RawRecord(TOPIC, 0, offset, key, value))
        as_avro.append(RawRecord(TOPIC, 0, offset, *enc.encode(key, value)))
    return as_json, as_avro, registry


def test_encoded_events_read_back_as_the_json_payloads() -> None:
    as_json, as_avro, registry = _encoded(400)
    assert any(r.value is None for r in as_avro)  # deletes bring their tombstones
    for j, a in zip(as_json, as_avro, strict=True):
        assert a.key is not None and a.key[:1] == b"\x00" and avro.schema_id(a.key) == 7
        assert avro.read(a.key, registry) == json.loads(j.key or b"")["payload"]
        if j.value is None:
            assert a.value is None
            continue
        assert a.value is not None and avro.schema_id(a.value) == 8
        # Decimals as base64 of their unscaled bytes, enums, zoned timestamps, UUIDs,
        # nulls, the source block: the JSON payload, value for value.
        assert avro.read(a.value, registry) == json.loads(j.value)["payload"]
        assert len(a.value) < len(j.value) / 10


def test_encoded_events_decode_and_fold_as_the_json_ones() -> None:
    """Through the engine's decoder and writer: the same frames, then the same mirror."""
    as_json, as_avro, registry = _encoded(1500)
    from_json = Decoder().decode(as_json)
    from_avro = Decoder(registry).decode(as_avro)
    assert not from_json.dead_letters and not from_avro.dead_letters
    assert (from_avro.tombstones, from_avro.changes) == (from_json.tombstones, from_json.changes)
    (tj,), (ta,) = from_json.tables, from_avro.tables
    assert ta.columns == tj.columns and ta.key == tj.key
    assert ta.frame.to_dicts() == tj.frame.to_dicts()

    wj, wa = memory_writer(), memory_writer()
    fold(wj, as_json)
    fold(wa, as_avro, Decoder(registry))
    assert mirror_rows(wa) == mirror_rows(wj)


def test_frame_is_confluent_wire_format() -> None:
    data = frame(70_000, b"\x02ab")
    assert data == b"\x00\x00\x01\x11\x70\x02ab"
    assert avro.schema_id(data) == 70_000


def _measured(fmt: str, records: int, events: int, size: int, raw_cpu: float) -> Measured:
    raw = Rate(records, size, seconds=2.0, cpu_seconds=raw_cpu, events=events)
    run_ = EngineRun(
        rate=Rate(records, size, seconds=4.0, cpu_seconds=raw_cpu * 3),
        change_events=events,
        peak_rss_bytes=300 * 2**20,
        batches=5,
        mean_commit_ms=3.0,
        mean_batch_records=records / 5,
    )
    return Measured(fmt, f"t_{fmt}", raw, run_, Rate(100, 1000, 1.0, 0.5))


def test_figures_and_comparison_table() -> None:
    j = _measured("json", 1100, 1000, 5_500_000, raw_cpu=0.05)
    a = _measured("avro", 1100, 1000, 385_000, raw_cpu=0.01)
    assert j.bytes_per_event == 5500 and a.bytes_per_event == 385
    assert j.bytes_per_record == 5000
    assert j.cpu_us_per_event(j.raw) == pytest.approx(50.0)
    assert j.cpu_ratio == pytest.approx(3.0) and j.wall_ratio == pytest.approx(0.5)
    assert j.events_per_second == pytest.approx(250.0)
    text = compare([j, a])
    lines = text.splitlines()
    assert lines[0].split() == ["json", "avro", "avro", "/", "json"]
    by_label = {line[:34].strip(): line[34:].split() for line in lines[1:]}
    assert by_label["bytes per change event"] == ["5,500", "385", "0.07"]
    assert by_label["raw consume CPU us/event"] == ["50.0", "10.0", "0.20"]
    assert by_label["engine CPU us/event"] == ["150.0", "30.0", "0.20"]
    assert by_label["records (change events)"] == ["1,100", "(1,000)", "1,100", "(1,000)", "1.00"]
    single = compare([a]).splitlines()
    assert single[0].split() == ["avro"]


def test_both_formats_with_one_topic_is_refused() -> None:
    result = CliRunner().invoke(
        main, ["bench", "fold", "--format", "both", "--topic", "p.bank.transactions"]
    )
    assert result.exit_code == 2
    assert "--topic holds one format" in result.output


def test_avro_without_a_registry_is_refused_before_anything_is_produced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("CHANGEFOLD_REGISTRY_PORT", str(port))
    result = CliRunner().invoke(main, ["bench", "fold", "--format", "avro", "--events", "10"])
    assert result.exit_code == 2
    assert f"no schema registry answers at http://127.0.0.1:{port}" in result.output
    assert "CHANGEFOLD_FORMAT=avro" in result.output
