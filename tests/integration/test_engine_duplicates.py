"""Redelivered events (a topic range replayed into the same partitions) change nothing."""

from __future__ import annotations

import time
from pathlib import Path

from engine_support import compare_with_postgres, stored_offsets, wait_topics_quiet, workload
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from support import unique

from engine.app.build import engine_runner
from engine.core.config import Settings
from engine.ingest.topics import subscription
from engine.state.store import Store


def _mirror_rows(store: Store) -> dict[str, list[tuple]]:
    out = {}
    with store.reading() as conn:
        for (table,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'bank'"
        ).fetchall():
            out[table] = conn.execute(f'SELECT * FROM bank."{table}" ORDER BY ALL').fetchall()
    return out


def _replay(settings: Settings, ends: dict[tuple[str, int], int]) -> int:
    """Produce every record of the table topics again, into the same partitions."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.stack.bootstrap_servers, group_id=None, enable_auto_commit=False
    )
    producer = KafkaProducer(bootstrap_servers=settings.stack.bootstrap_servers, linger_ms=20)
    sent = 0
    try:
        tps = [TopicPartition(t, p) for (t, p), end in ends.items() if end > 0]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        remaining = set(tps)
        deadline = time.monotonic() + 120
        while remaining:
            assert time.monotonic() < deadline, f"could not read back {sorted(remaining)}"
            for tp, records in consumer.poll(timeout_ms=1000).items():
                end = ends[(tp.topic, tp.partition)]
                for r in records:
                    if r.offset < end:
                        producer.send(tp.topic, key=r.key, value=r.value, partition=tp.partition)
                        sent += 1
                    if r.offset >= end - 1:
                        remaining.discard(tp)
        producer.flush()
    finally:
        producer.close()
        consumer.close()
    return sent


def _catch_up(settings: Settings, store: Store) -> None:
    """Run the engine until no record arrived for 4 s."""
    engine_runner(
        settings, store, subscription((), settings.connectors_dir), views=False, idle_exit_s=4
    ).run()


def test_replayed_events_leave_the_state_unchanged(stack: Settings, tmp_path: Path) -> None:
    settings = stack.with_(group_id=unique("dup"), consumer_session_timeout_ms=6000)
    with Store(tmp_path / "state.duckdb") as store:
        store.migrate(settings.state_sql_dir)
        with workload(stack, "bank", rate=200, duration_s=15, seed=11):
            pass
        ends = wait_topics_quiet(stack, "bank")
        _catch_up(settings, store)
        with store.reading() as conn:
            compare_with_postgres(stack, conn, "bank", "bank")
        once = _mirror_rows(store)

        sent = _replay(settings, ends)
        assert sent == sum(ends.values())
        twice = wait_topics_quiet(stack, "bank")
        assert twice == {k: 2 * v for k, v in ends.items()}
        _catch_up(settings, store)

        assert _mirror_rows(store) == once
        with store.reading() as conn:
            compare_with_postgres(stack, conn, "bank", "bank")
            stored = stored_offsets(conn, settings.engine.group_id)
            assert {k: v for k, v in stored.items() if k[0].startswith("bank.")} == {
                k: v for k, v in twice.items() if v > 0
            }
            (dead,) = conn.execute("SELECT count(*) FROM _changefold.dead_letters").fetchone()
            assert dead == 0
