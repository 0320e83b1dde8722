"""`changefold bench fold`: replay a topic of Debezium events into a fresh state.

Four measurements over the same topic, in one run:
  1. raw consume: kafka-python reading every record, nothing else (the ceiling);
  2. engine: `changefold run` in a child process (poll + decode + fold + commit),
     timed from its partition assignment to its last batch commit (as recorded in
     the state's batch metrics), with its peak RSS sampled;
  3. naive baseline: json.loads per message and one upsert/delete statement per
     row, on the first --baseline-records records;
and the production of the synthetic events when the topic is new.
"""

from __future__ import annotations

import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import psutil
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from engine.core.config import Settings
from engine.core.errors import EngineError
from engine.ingest.kafka_group import open_consumer
from engine.lab.synthetic import BankTransactions

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Rate:
    records: int
    bytes: int
    seconds: float
    #: CPU seconds (user + system, all threads) spent: a figure other load on the
    #: machine does not distort the way it distorts wall-clock rates.
    cpu_seconds: float = 0.0

    @property
    def cpu_us_per_record(self) -> float:
        return self.cpu_seconds / self.records * 1e6 if self.records else 0.0

    @property
    def per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class EngineRun:
    rate: Rate
    change_events: int
    peak_rss_bytes: int
    batches: int
    mean_commit_ms: float
    mean_batch_records: float


def ensure_topic(
    settings: Settings, topic: str | None, events: int, partitions: int, echo: Echo
) -> tuple[str, int]:
    """A topic with at least `events` change events; produced here when new. -> (topic, records)."""
    admin = _admin(settings)
    try:
        if topic and topic in admin.list_topics():
            records = sum(end_offsets(settings, topic).values())
            echo(f"reusing topic {topic}: {records:,} records")
            return topic, records
        topic = topic or f"benchfold_{uuid.uuid4().hex[:8]}.bank.transactions"
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    t0 = time.perf_counter()
    produced, size = produce(settings, topic, events, echo)
    seconds = time.perf_counter() - t0
    echo(
        f"produced {events:,} change events ({produced:,} records with tombstones, "
        f"{size / 1e9:.2f} GB) into {topic} in {seconds:.1f} s"
    )
    return topic, produced


def produce(settings: Settings, topic: str, events: int, echo: Echo) -> tuple[int, int]:
    producer = KafkaProducer(
        bootstrap_servers=settings.stack.bootstrap_servers,
        linger_ms=50,
        batch_size=1024 * 1024,
        max_request_size=16 * 1024 * 1024,
        acks=1,
    )
    records = size = changes = 0
    try:
        for message in BankTransactions(topic, keys=max(events // 5, 1000)):
            producer.send(topic, key=message.key, value=message.value)
            records += 1
            size += len(message.key) + len(message.value or b"")
            if message.op != "tombstone":
                changes += 1
                if changes % 200_000 == 0:
                    echo(f"  produced {changes:,} change events")
                if changes >= events:
                    break
        producer.flush()
    finally:
        producer.close()
    return records, size


def end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    consumer = open_consumer(settings, "changefold-bench-offsets", group_id=None)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return dict(consumer.end_offsets([TopicPartition(topic, p) for p in parts]))
    finally:
        consumer.close()


def raw_consume(settings: Settings, topic: str) -> Rate:
    """kafka-python reading the whole topic with the engine's fetch settings, nothing else."""
    ends = end_offsets(settings, topic)
    consumer = open_consumer(settings, "changefold-bench-raw", group_id=None)
    try:
        consumer.assign(list(ends))
        consumer.seek_to_beginning(*ends)
        remaining = {tp for tp, end in ends.items() if end > 0}
        records = size = 0
        cpu0 = _cpu(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        while remaining:
            for tp, batch in consumer.poll(
                timeout_ms=1000, max_records=settings.engine.batch_max_records
            ).items():
                records += len(batch)
                for r in batch:
                    size += len(r.value or b"") + len(r.key or b"")
                if batch[-1].offset >= ends[tp] - 1:
                    remaining.discard(tp)
        return Rate(records, size, time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - cpu0)
    finally:
        consumer.close()


def engine_replay(settings: Settings, topics: Sequence[str], commit: str, echo: Echo) -> EngineRun:
    """`changefold run` into a fresh state file in a child process, in a new consumer
    group, until idle; figures from its metrics. No `topics`: the connectors' topics."""
    workdir = Path(tempfile.mkdtemp(prefix="changefold-bench-"))
    state = workdir / "state.duckdb"
    group = f"bench-{uuid.uuid4().hex[:8]}"
    env = settings.child_env()
    cmd = [
        sys.executable,
        "-m",
        "engine",
        "run",
        *(arg for topic in topics for arg in ("--topic", topic)),
        "--state",
        str(state),
        "--group",
        group,
        "--commit",
        commit,
        "--no-api",
        "--idle-exit",
        "3",
    ]
    log = workdir / "engine.log"
    cpu0 = _cpu(resource.RUSAGE_CHILDREN)
    with log.open("wb") as out:
        child = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak = sample_peak_rss(child)
    cpu = _cpu(resource.RUSAGE_CHILDREN) - cpu0
    if child.returncode != 0:
        raise EngineError(f"the engine exited with {child.returncode}: {log.read_text()[-2000:]}")
    with duckdb.connect(str(state), read_only=True) as conn:
        (records, size, batches, commit_ms, last) = conn.execute(
            "SELECT sum(records), sum(bytes), count(*), avg(commit_ms), max(finished_at) "
            "FROM _changefold.batches"
        ).fetchall()[0]
        (started,) = conn.execute(
            "SELECT min(assigned_at) FROM _changefold.assignments WHERE group_id = ?", [group]
        ).fetchall()[0]
        (changes,) = conn.execute(
            "SELECT sum(upserts + deletes) FROM _changefold.batches"
        ).fetchall()[0]
    seconds = (last - started).total_seconds()
    echo(f"  engine log and state: {workdir}")
    return EngineRun(
        rate=Rate(int(records), int(size), seconds, cpu),
        change_events=int(changes or 0),
        peak_rss_bytes=peak,
        batches=int(batches),
        mean_commit_ms=float(commit_ms or 0.0),
        mean_batch_records=int(records) / max(int(batches), 1),
    )


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def sample_peak_rss(child: subprocess.Popen[bytes]) -> int:
    """Wait for `child`, sampling its resident memory; the highest sample in bytes."""
    peak = 0
    proc = psutil.Process(child.pid)
    while child.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, proc.memory_info().rss)
        time.sleep(0.05)
    return peak


def naive_baseline(settings: Settings, topic: str, limit: int) -> Rate:
    """json.loads per message and one statement per row: what the engine avoids."""
    consumer = open_consumer(settings, "changefold-bench-naive", group_id=None)
    conn = duckdb.connect()
    conn.execute(
        "CREATE TABLE t (txn_id BIGINT PRIMARY KEY, account_id BIGINT, kind VARCHAR, "
        "amount DECIMAL(14,2), currency VARCHAR, merchant_id BIGINT, "
        "counterparty_account_id BIGINT, channel VARCHAR, country VARCHAR, device_id UUID, "
        "status VARCHAR, created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ)"
    )
    upsert = (
        "INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (txn_id) DO "
        "UPDATE SET account_id = excluded.account_id, kind = excluded.kind, "
        "amount = excluded.amount, currency = excluded.currency, "
        "merchant_id = excluded.merchant_id, "
        "counterparty_account_id = excluded.counterparty_account_id, "
        "channel = excluded.channel, country = excluded.country, "
        "device_id = excluded.device_id, status = excluded.status, "
        "created_at = excluded.created_at, updated_at = excluded.updated_at"
    )
    try:
        ends = end_offsets(settings, topic)
        consumer.assign(list(ends))
        consumer.seek_to_beginning(*ends)
        records = size = 0
        cpu0 = _cpu(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        while records < limit:
            polled = consumer.poll(timeout_ms=1000, max_records=min(500, limit - records))
            if not polled:
                break
            conn.execute("BEGIN")
            for batch in polled.values():
                for r in batch:
                    records += 1
                    size += len(r.value or b"") + len(r.key or b"")
                    if r.value is None:
                        continue
                    payload = json.loads(r.value)["payload"]
                    key = json.loads(r.key)["payload"]["txn_id"]
                    if payload["op"] == "d":
                        conn.execute("DELETE FROM t WHERE txn_id = ?", [key])
                    else:
                        conn.execute(upsert, _naive_row(payload["after"]))
            conn.execute("COMMIT")
        return Rate(records, size, time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - cpu0)
    finally:
        consumer.close()
        conn.close()


def _naive_row(row: dict[str, Any]) -> list[Any]:
    import base64
    from decimal import Decimal

    raw = base64.b64decode(row["amount"])
    amount = Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-2)
    return [
        row["txn_id"],
        row["account_id"],
        row["kind"],
        amount,
        row["currency"],
        row["merchant_id"],
        row["counterparty_account_id"],
        row["channel"],
        row["country"],
        row["device_id"],
        row["status"],
        row["created_at"],
        row["updated_at"],
    ]


def delete_topic(settings: Settings, topic: str) -> None:
    admin = _admin(settings)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()


def _admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=settings.stack.bootstrap_servers, client_id="changefold-bench"
    )


def describe(lines: Iterable[tuple[str, str]]) -> str:
    rows = list(lines)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
