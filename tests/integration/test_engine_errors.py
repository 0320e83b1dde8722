"""`changefold run` against real Kafka: clear errors, graceful stop, dead letters."""

from __future__ import annotations

import base64
import io
import json
import signal
from pathlib import Path
from typing import Any

import duckdb
import fastavro
import httpx
from engine_support import EngineProcess, changefold, wait_for
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from support import free_ports, unique

from engine.core.config import PACKAGE_PROJECT_DIR, Settings
from engine.decode import avro

FIXTURE = PACKAGE_PROJECT_DIR / "tests" / "fixtures" / "lab_precise.jsonl"
AVRO_FIXTURES = PACKAGE_PROJECT_DIR / "tests" / "fixtures" / "avro"
CCOMPAT = "/apis/ccompat/v7"

#: A Kafka message: key and value bytes (None: none / a tombstone).
Message = tuple[bytes | None, bytes | None]


def _stored(letter: dict[str, Any], name: str) -> bytes | None:
    """The bytes of a dead letter's key or value as `changefold dlq --json` shows them."""
    if letter.get(f"{name}_base64"):
        return base64.b64decode(letter[f"{name}_base64"])
    return None if letter[name] is None else str(letter[name]).encode()


def test_kafka_unreachable_is_a_clear_error(stack: Settings, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    done = changefold(
        stack,
        "run",
        "--state",
        str(tmp_path / "s.duckdb"),
        "--no-api",
        CHANGEFOLD_KAFKA_PORT=str(port),
        CHANGEFOLD_KAFKA_WAIT_S="3",
    )
    assert done.returncode == 4, done.stderr
    assert f"cannot reach Kafka at 127.0.0.1:{port}" in done.stderr
    assert "changefold stack up" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_topic_is_named(stack: Settings, tmp_path: Path) -> None:
    missing = f"{unique('nosuch')}.lab.things"
    done = changefold(
        stack, "run", "--state", str(tmp_path / "s.duckdb"), "--no-api", "--topic", missing
    )
    assert done.returncode == 5, done.stderr
    assert f"topic {missing} does not exist" in done.stderr


def test_a_locked_state_file_is_named_and_sigterm_stops_cleanly(
    stack: Settings, tmp_path: Path
) -> None:
    state = tmp_path / "state.duckdb"
    first = EngineProcess(stack, state, unique("lock"), tmp_path / "first.log", "--no-api")
    try:
        wait_for(first.owns_partitions, 60, "the first engine to join")
        second = changefold(stack, "run", "--state", str(state), "--no-api")
        assert second.returncode == 3, second.stderr
        assert f"the state file {state} is in use by another process" in second.stderr
        assert f"PID {first.proc.pid}" in second.stderr
        # The dead-letter listing cannot read it either while the engine runs.
        listing = changefold(stack, "dlq", "--state", str(state))
        assert listing.returncode == 3, listing.stderr
    finally:
        first.proc.send_signal(signal.SIGTERM)
    assert first.wait(timeout_s=60) == 0, first.output()[-2000:]
    assert "SIGTERM: finishing the batches in hand" in first.output()
    assert "stopped:" in first.output()


def _json_messages() -> tuple[list[tuple[bytes | None, bytes | None]], list[Message]]:
    """Four bad messages, then every real event of the captured lab table, as the
    JsonConverter wrote them (tests/fixtures/lab_precise.jsonl)."""
    captured = [
        json.loads(line)
        for line in FIXTURE.read_text().splitlines()
        if json.loads(line)["topic"] == "lab.lab.everything"
    ]
    captured.sort(key=lambda r: (r["partition"], r["offset"]))
    good = captured[0]
    bad: list[Message] = [
        (good["key"].encode(), b"\xff\xfe not json, not even UTF-8"),
        (good["key"].encode(), good["value"].encode()[:-300]),
        (good["key"].encode(), good["value"].replace('"op":"r"', '"op":"x"').encode()),
        (b"{not a key", good["value"].encode()),
    ]
    real: list[Message] = [
        (r["key"] and r["key"].encode(), r["value"] and r["value"].encode()) for r in captured
    ]
    return bad, real


def _avro_messages(stack: Settings) -> tuple[list[Message], list[Message]]:
    """The same as Confluent-framed Avro: the real events of the lab table captured
    through the Avro converter (tests/fixtures/avro/), their schemas registered in the
    stack's registry and the messages re-framed with the ids it gave them; bad ones: a
    schema id the registry does not have, a cut Avro body, op 'x' (written with the
    event's own schema) and a key that is not framed."""
    schemas = {
        int(k): v for k, v in json.loads((AVRO_FIXTURES / "lab_schemas.json").read_text()).items()
    }
    ids = {}
    with httpx.Client(base_url=stack.stack.registry_url + CCOMPAT, timeout=30) as http:
        for sid, text in schemas.items():
            resp = http.post(f"/subjects/{unique('dlq-fixture')}/versions", json={"schema": text})
            assert resp.status_code == 200, resp.text
            ids[sid] = int(resp.json()["id"])

    def reframed(data: bytes | None) -> bytes | None:
        if data is None:
            return None
        return avro.MAGIC_BYTE + ids[avro.schema_id(data)].to_bytes(4, "big") + data[5:]

    captured = []
    for line in (AVRO_FIXTURES / "lab.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["topic"] == "lab.lab.everything":
            key = base64.b64decode(r["key"]) if r["key"] is not None else None
            value = base64.b64decode(r["value"]) if r["value"] is not None else None
            captured.append((r["partition"], r["offset"], reframed(key), reframed(value)))
    captured.sort(key=lambda r: (r[0], r[1]))
    key, value = captured[0][2], captured[0][3]
    assert key is not None and value is not None
    back = {new: old for old, new in ids.items()}
    schema = avro.Schema(avro.schema_id(value), json.loads(schemas[back[avro.schema_id(value)]]))
    record = fastavro.schemaless_reader(io.BytesIO(value[5:]), schema.parsed, None)
    assert isinstance(record, dict) and record["op"] == "r"
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema.parsed, {**record, "op": "x"})
    unknown = (2**31 - 1).to_bytes(4, "big")
    bad: list[Message] = [
        (key, avro.MAGIC_BYTE + unknown + value[5:]),
        (key, value[:-60]),
        (key, value[:5] + out.getvalue()),
        (b"\x00\x00", value),
    ]
    return bad, [(k, v) for _p, _o, k, v in captured]


def test_bad_messages_become_dead_letters_and_the_rest_is_folded(
    stack: Settings, tmp_path: Path
) -> None:
    topic = f"{unique('dlq')}.lab.everything"
    admin = KafkaAdminClient(bootstrap_servers=stack.stack.bootstrap_servers)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    bad, real = _avro_messages(stack) if stack.stack.avro else _json_messages()
    producer = KafkaProducer(bootstrap_servers=stack.stack.bootstrap_servers)
    for key, value in bad:
        producer.send(topic, key=key, value=value, partition=0)
    for key, value in real:  # every real event, in order, after the garbage
        producer.send(topic, key=key, value=value, partition=0)
    producer.flush()
    producer.close()

    state = tmp_path / "state.duckdb"
    group = unique("dlq")
    engine = EngineProcess(
        stack,
        state,
        group,
        tmp_path / "engine.log",
        "--topic",
        topic,
        "--idle-exit",
        "3",
        "--no-api",
    )
    assert engine.wait(timeout_s=120) == 0, engine.output()[-3000:]

    listing = changefold(stack, "dlq", "--json", "--state", str(state))
    assert listing.returncode == 0, listing.stderr
    letters = [json.loads(line) for line in listing.stdout.splitlines()]
    by_offset = {d["offset"]: d for d in letters}
    assert sorted(by_offset) == [0, 1, 2, 3]
    print({o: d["error"] for o, d in by_offset.items()})
    # Each keeps the bytes it came with.
    assert [_stored(by_offset[o], "value") for o in range(4)] == [v for _k, v in bad]
    if stack.stack.avro:
        assert f"no schema with id {2**31 - 1}" in by_offset[0]["error"]
        assert "cannot be read with schema id" in by_offset[1]["error"]
    else:
        assert "malformed JSON" in by_offset[0]["error"] and by_offset[0]["value"] is None
        assert by_offset[1]["error"]
    assert by_offset[2]["error"] == "unknown op 'x'"
    assert "key" in by_offset[3]["error"]
    assert all(d["topic"] == topic and d["partition"] == 0 for d in letters)
    table = changefold(stack, "dlq", "--state", str(state))
    assert table.returncode == 0 and "unknown op" in table.stdout

    prefix = topic.split(".")[0]
    mirror = f'SELECT id, vc, extra FROM "{prefix}".everything ORDER BY id'
    with duckdb.connect(str(state), read_only=True) as conn:
        before = conn.execute(mirror).fetchall()
    assert before == [(6, "after truncate", 9), (7, "varchar", 8)]

    # Redrive, the history read from Kafka: the three of the first event's key are
    # superseded (that key changes later in the partition); the one with a broken key
    # is decoded again and fails again, with today's reason.
    dry = changefold(
        stack, "dlq", "--redrive", "--dry-run", "--state", str(state), CHANGEFOLD_GROUP_ID=group
    )
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("superseded #") == 3 and dry.stdout.count("apply      #") == 1
    assert f"{topic}[0]@3" in next(x for x in dry.stdout.splitlines() if x.startswith("apply"))
    assert "dry run: nothing changed" in dry.stdout
    redriven = changefold(
        stack, "dlq", "--redrive", "--state", str(state), CHANGEFOLD_GROUP_ID=group
    )
    assert redriven.returncode == 1, redriven.stdout + redriven.stderr
    assert "0 applied, 3 superseded (removed), 0 skipped, 1 failed again" in redriven.stdout
    after = changefold(stack, "dlq", "--json", "--state", str(state))
    left = [json.loads(line) for line in after.stdout.splitlines()]
    assert [(d["offset"], d["id"] > 4) for d in left] == [(3, True)]
    assert "key" in left[0]["error"]
    with duckdb.connect(str(state), read_only=True) as conn:
        assert conn.execute(mirror).fetchall() == before
