"""The state is a function of the committed history, on the real stack.

A connector of its own (a new topic prefix that streams from now, no snapshot)
captures the bank workload, so this test's topics hold only what it wrote. A
live engine with two workers folds them while it is killed with SIGKILL three
times; then the same history is replayed in batches of 1, 7, 977 and 20,000
records (the last only up to an early source position, against the same bound
in large batches: one record per batch pays a batch's fixed work per record).
`changefold diff` must find every table equal (mirrors and every `live.*` view),
none excluded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from engine_support import EngineProcess, changefold, wait_for, wait_topics_quiet, workload
from kafka import KafkaConsumer, TopicPartition
from support import unique

from engine.core.config import Settings
from engine.decode import txmeta
from engine.lab.stack.connect import Connect, ConnectorSpec, with_format

BATCHES = (1, 7, 977, 20_000)
KILLS = 3
#: How far the one-record-per-batch replay goes (source transactions).
EARLY_TRANSACTIONS = 60


@pytest.fixture
def own_connector(stack: Settings) -> Iterator[str]:
    """A copy of the bank connector under a new prefix; removed (and its slot) after."""
    prefix = unique("hist")
    path = stack.connectors_dir / "bank.json"
    config = dict(json.loads(path.read_text())["config"])
    config.update(
        {
            "topic.prefix": prefix,
            "slot.name": prefix,
            "publication.name": prefix,
            "snapshot.mode": "no_data",
            "topic.creation.transactions.include": f"{prefix}\\.transaction",
        }
    )
    connect = Connect(stack)
    # The stack's converters (format=avro: the registry's Avro converter).
    spec = ConnectorSpec(name=prefix, config=with_format(stack, config), path=path)
    connect.register(spec, timeout_s=60)
    connect.wait_running(spec, timeout_s=60)
    try:
        yield prefix
    finally:
        httpx.delete(f"{stack.stack.connect_url}/connectors/{prefix}", timeout=30)
        _drop_slot(stack, prefix)


def _drop_slot(stack: Settings, slot: str) -> None:
    deadline = time.monotonic() + 30
    with psycopg.connect(stack.stack.pg_conninfo(), autocommit=True) as pg:
        while time.monotonic() < deadline:
            row = pg.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s", [slot]
            ).fetchone()
            if row is None:
                return
            if not row[0]:
                pg.execute("SELECT pg_drop_replication_slot(%s)", [slot])
                return
            time.sleep(1)


def _topics(stack: Settings, prefix: str) -> list[str]:
    consumer = KafkaConsumer(bootstrap_servers=stack.stack.bootstrap_servers, group_id=None)
    try:
        return sorted(t for t in consumer.topics() if t.startswith(prefix + "."))
    finally:
        consumer.close()


def test_live_with_crashes_and_replays_in_any_batches_are_equal_on_every_table(
    stack: Settings, own_connector: str, tmp_path: Path
) -> None:
    prefix = own_connector
    live, group = tmp_path / "state.duckdb", unique("hist")
    engines: list[EngineProcess] = []
    wanted = {"customers", "accounts", "merchants", "devices", "transactions"}

    def start(topics: list[str], *more: str) -> EngineProcess:
        args = [a for t in topics for a in ("--topic", t)]
        engine = EngineProcess(
            stack,
            live,
            group,
            tmp_path / f"engine-{len(engines)}.log",
            "--workers",
            "2",
            "--no-api",
            *args,
            *more,
            env={"CHANGEFOLD_BATCH_MAX_RECORDS": "50"},
        )
        engines.append(engine)
        return engine

    try:
        with workload(stack, "bank", rate=60, duration_s=40, seed=31):
            deadline = time.monotonic() + 60
            while True:
                topics = _topics(stack, prefix)
                tables = {t.rsplit(".", 1)[1] for t in topics if t.count(".") == 2}
                if wanted <= tables and f"{prefix}.transaction" in topics:
                    break
                assert time.monotonic() < deadline, topics
                time.sleep(1)
            for _ in range(KILLS):
                engine = start(topics)
                # Joins (a loaded machine can take longer than the folding itself to
                # start an engine), folds a few batches; then killed anywhere.
                wait_for(engine.owns_partitions, 120, "the engine to own its partitions")
                time.sleep(3)
                engine.kill()
        # The killed runs did fold (their members were assigned partitions).
        assert any(e.owns_partitions() for e in engines), engines[0].output()[-3000:]
        wait_topics_quiet(stack, prefix)
        topics = _topics(stack, prefix)
        last = start(topics, "--idle-exit", "6")
        assert last.wait(timeout_s=600) == 0, last.output()[-3000:]
    finally:
        for e in engines:
            if e.proc.poll() is None:
                e.kill()

    topic_args = [a for t in topics for a in ("--topic", t)]

    def replay(size: int, *until: str) -> Path:
        target = tmp_path / f"replay-{size}{'-'.join(('', *until)).replace('/', '_')}.duckdb"
        done = changefold(
            stack,
            "replay",
            "--into",
            str(target),
            "--no-progress",
            *topic_args,
            *until,
            timeout_s=1200,
            CHANGEFOLD_BATCH_MAX_RECORDS=str(size),
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return target

    def assert_equal(a: Path, b: Path) -> None:
        diff = changefold(stack, "diff", str(a), str(b), "--json")
        result = json.loads(diff.stdout)
        differing = [
            t for t in result["tables"] if t["only_in_a"] or t["only_in_b"] or t["changed"]
        ]
        assert diff.returncode == 0 and not differing, (b.name, differing)
        compared = {t["table"] for t in result["tables"]}
        assert {"bank.transactions", "bank.accounts"} <= compared, compared
        assert any(t.startswith("live.") for t in compared), compared

    for size in BATCHES[1:]:
        assert_equal(live, replay(size))
    # One record per batch costs a whole batch's fixed work per record: that replay
    # stops early (at a commit time, which stops each partition there), and so does
    # the one it is compared with.
    early = _end_time(stack, f"{prefix}.transaction", EARLY_TRANSACTIONS)
    until = ("--until", early)
    assert_equal(replay(BATCHES[-2], *until), replay(BATCHES[0], *until))


def _end_time(stack: Settings, topic: str, nth: int) -> str:
    """A time (ISO) just after the `nth` transaction of a transaction topic committed."""
    consumer = KafkaConsumer(
        bootstrap_servers=stack.stack.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    try:
        consumer.assign([TopicPartition(topic, 0)])
        seen = 0
        for record in consumer:
            end = txmeta.parse_marker(topic, record.partition, record.offset, record.value)
            if end is not None:
                seen += 1
                if seen == nth:
                    # Its Kafka time: at or after its commit, and inside the history.
                    return datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat()
    finally:
        consumer.close()
    raise AssertionError(f"{topic} holds fewer than {nth} transactions")
