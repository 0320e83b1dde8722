"""format=avro end to end: a stack with the schema registry and Connect's Avro
converter, the bank workload, the engine; the mirrors equal Postgres row by row and
source transactions are applied whole (the frontier moves).

It runs on the session's avro stack only (the whole suite runs under both formats;
this test asserts the Avro wire format and the registry's subjects).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import httpx
import pytest
from engine_support import EngineProcess, compare_with_postgres, wait_topics_quiet, workload
from kafka import KafkaConsumer, TopicPartition
from support import unique

from engine.core.config import Settings
from engine.lab.stack.supervisor import Stack


def _first_bytes(settings: Settings, topic: str) -> bytes:
    consumer = KafkaConsumer(bootstrap_servers=settings.stack.bootstrap_servers, group_id=None)
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        for records in consumer.poll(timeout_ms=10000).values():
            for r in records:
                if r.value is not None:
                    return bytes(r.value)
    finally:
        consumer.close()
    raise AssertionError(f"no message in {topic}")


@pytest.mark.formats("avro", reason="it asserts the Avro wire format and the registry")
def test_avro_mirrors_equal_postgres_and_transactions_apply_whole(
    stack: Settings, tmp_path: Path
) -> None:
    settings = stack
    components = {c["name"]: c["healthy"] for c in Stack(settings).status()["components"]}
    assert components == dict.fromkeys(["postgres", "kafka", "registry", "connect"], True)

    with workload(settings, "bank", rate=80, duration_s=15, seed=7):
        pass
    wait_topics_quiet(settings, "bank")

    # Confluent framing on the table and the transaction topics, schemas in the registry.
    for topic in ("bank.bank.accounts", "bank.transaction"):
        assert _first_bytes(settings, topic)[:1] == b"\x00"
    subjects = httpx.get(f"{settings.stack.registry_url}/apis/ccompat/v7/subjects").json()
    assert {"bank.bank.accounts-value", "bank.bank.accounts-key"} <= set(subjects)

    state = tmp_path / "state.duckdb"
    engine = EngineProcess(
        settings, state, unique("avro"), tmp_path / "engine.log", "--idle-exit", "4", "--no-api"
    )
    assert engine.wait(timeout_s=240) == 0, engine.output()[-3000:]
    with duckdb.connect(str(state), read_only=True) as conn:
        counts = compare_with_postgres(settings, conn, "bank", "bank")
        assert counts["transactions"] > 50 and counts["accounts"] > 10
        (dead,) = conn.execute("SELECT count(*) FROM _changefold.dead_letters").fetchone()
        assert dead == 0
        frontier = conn.execute("SELECT xid, transactions FROM _changefold.frontier").fetchall()
        assert frontier and frontier[0][1] > 10, frontier
        (held,) = conn.execute("SELECT count(*) FROM _changefold.txn_events").fetchone()
        assert held == 0
