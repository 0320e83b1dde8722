"""`changefold bench fold`: replay a topic of Debezium events into a fresh state.

Four measurements over the same topic, in one run:
  1. raw consume: kafka-python reading every record, nothing else (the ceiling);
  2. engine: `changefold run` in a child process (poll + decode + fold + commit),
     timed from its partition assignment to its last batch commit (as recorded in
     the state's batch metrics), with its peak RSS sampled;
  3. naive baseline: one parse per message (json.loads, or fastavro's reader for
     Avro) and one upsert/delete statement per row, on the first --baseline-records
     records;
and the production of the synthetic events when the topic is new.

Format `avro` writes the same synthetic events as Confluent-framed Avro, their
schemas registered in the stack's registry (engine.lab.avrowire), and the engine
replays them with format avro; `both` fills one topic of each with the same events
and measures both in the same run (`measure` per format, `compare` prints them).
"""

from __future__ import annotations

import contextlib
import io
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
import fastavro
import httpx
import psutil
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from engine.core.config import Settings
from engine.core.errors import EngineError
from engine.ingest.kafka_group import open_consumer
from engine.lab.avrowire import CCOMPAT, AvroEncoder, delete_subjects
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
    #: Change events among the records (tombstones excluded), where counted.
    events: int = 0

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
    settings: Settings,
    topic: str | None,
    events: int,
    partitions: int,
    echo: Echo,
    fmt: str = "json",
) -> tuple[str, int]:
    """A topic with at least `events` change events; produced here in format `fmt`
    when new. -> (topic, records)."""
    admin = _admin(settings)
    try:
        if topic and topic in admin.list_topics():
            records = sum(end_offsets(settings, topic).values())
            echo(f"reusing topic {topic}: {records:,} records")
            return topic, records
        topic = topic or f"benchfold_{fmt}_{uuid.uuid4().hex[:8]}.bank.transactions"
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()
    t0 = time.perf_counter()
    produced, size = produce(settings, topic, events, echo, fmt)
    seconds = time.perf_counter() - t0
    echo(
        f"produced {events:,} change events ({produced:,} records with tombstones, "
        f"{size / 1e9:.2f} GB, {fmt}) into {topic} in {seconds:.1f} s"
    )
    return topic, produced


def produce(
    settings: Settings, topic: str, events: int, echo: Echo, fmt: str = "json"
) -> tuple[int, int]:
    """The synthetic events (the same ones for every format: the generator's seed is
    fixed), in JSON or re-encoded as Avro with the schemas registered first."""
    encoder: AvroEncoder | None = None
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
            key, value = message.key, message.value
            if fmt == "avro":
                if encoder is None:
                    if value is None:
                        raise EngineError("the first synthetic event is a tombstone")
                    encoder = AvroEncoder()
                    encoder.prepare(key, value)
                    ids = encoder.register(settings.stack.registry_url, topic)
                    echo(f"  registered {topic}-key / -value: schema ids {ids[0]} / {ids[1]}")
                key, value = encoder.encode(key, value)
            producer.send(topic, key=key, value=value)
            records += 1
            size += len(key) + len(value or b"")
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
        records = size = events = 0
        cpu0 = _cpu(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        while remaining:
            for tp, batch in consumer.poll(
                timeout_ms=1000, max_records=settings.engine.batch_max_records
            ).items():
                records += len(batch)
                for r in batch:
                    size += len(r.value or b"") + len(r.key or b"")
                    events += r.value is not None
                if batch[-1].offset >= ends[tp] - 1:
                    remaining.discard(tp)
        return Rate(
            records, size, time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - cpu0, events
        )
    finally:
        consumer.close()


def engine_replay(
    settings: Settings,
    topics: Sequence[str],
    commit: str,
    echo: Echo,
    fmt: str | None = None,
) -> EngineRun:
    """`changefold run` into a fresh state file in a child process, in a new consumer
    group, until idle; figures from its metrics. No `topics`: the connectors' topics.
    `fmt`: the child's format (None: the settings')."""
    workdir = Path(tempfile.mkdtemp(prefix="changefold-bench-"))
    state = workdir / "state.duckdb"
    group = f"bench-{uuid.uuid4().hex[:8]}"
    env = settings.child_env()
    if fmt is not None:
        env["CHANGEFOLD_FORMAT"] = fmt
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


def naive_baseline(settings: Settings, topic: str, limit: int, fmt: str = "json") -> Rate:
    """One parse per message (json.loads; for Avro fastavro's reader, the schema fetched
    once per id) and one statement per row: what the engine avoids."""
    parse = _NaiveAvro(settings.stack.registry_url) if fmt == "avro" else _naive_json
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
                    key, payload = parse(r.key, r.value)
                    if payload["op"] == "d":
                        conn.execute("DELETE FROM t WHERE txn_id = ?", [key["txn_id"]])
                    else:
                        conn.execute(upsert, _naive_row(payload["after"]))
            conn.execute("COMMIT")
        return Rate(records, size, time.perf_counter() - t0, _cpu(resource.RUSAGE_SELF) - cpu0)
    finally:
        consumer.close()
        conn.close()


def _naive_json(key: bytes, value: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    return json.loads(key)["payload"], json.loads(value)["payload"]


class _NaiveAvro:
    """fastavro's reader per message, with the writer's schema (logical types on, so a
    decimal comes out a Decimal) fetched from the registry once per id."""

    def __init__(self, registry_url: str) -> None:
        self.url = registry_url
        self.schemas: dict[int, Any] = {}

    def _read(self, data: bytes) -> Any:
        sid = int.from_bytes(data[1:5], "big")
        schema = self.schemas.get(sid)
        if schema is None:
            resp = httpx.get(f"{self.url}{CCOMPAT}/schemas/ids/{sid}", timeout=10.0)
            resp.raise_for_status()
            schema = self.schemas[sid] = fastavro.parse_schema(json.loads(resp.json()["schema"]))
        return fastavro.schemaless_reader(io.BytesIO(data[5:]), schema, None)

    def __call__(self, key: bytes, value: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
        return self._read(key), self._read(value)


def _naive_row(row: dict[str, Any]) -> list[Any]:
    import base64
    from decimal import Decimal

    if isinstance(row["amount"], Decimal):
        amount = row["amount"]
    else:
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


def delete_topic(settings: Settings, topic: str, fmt: str = "json") -> None:
    """Delete the topic (and, for Avro, its subjects in the registry)."""
    admin = _admin(settings)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()
    if fmt == "avro":
        delete_subjects(settings.stack.registry_url, topic)


def check_registry(settings: Settings) -> str | None:
    """None when the stack's registry answers; else what is wrong (format avro needs it)."""
    url = f"{settings.stack.registry_url}{CCOMPAT}/subjects"
    try:
        resp = httpx.get(url, timeout=5.0)
    except httpx.TransportError as exc:
        return (
            f"no schema registry answers at {settings.stack.registry_url} ({exc!r}): start "
            "the stack with CHANGEFOLD_FORMAT=avro (`changefold stack up`)"
        )
    if resp.status_code != 200:
        return f"the schema registry at {url} answered HTTP {resp.status_code}"
    return None


@dataclass(frozen=True)
class Measured:
    """One format's figures over its topic."""

    fmt: str
    topic: str
    raw: Rate
    engine: EngineRun
    naive: Rate

    @property
    def bytes_per_record(self) -> float:
        return self.raw.bytes / self.raw.records if self.raw.records else 0.0

    @property
    def events(self) -> int:
        """Change events in the topic (records less tombstones)."""
        return self.raw.events

    @property
    def bytes_per_event(self) -> float:
        """Key and value bytes (tombstones included) per change event."""
        return self.raw.bytes / self.events if self.events else 0.0

    def cpu_us_per_event(self, rate: Rate) -> float:
        """CPU of a run over the whole topic per change event in it."""
        return rate.cpu_seconds / self.events * 1e6 if self.events else 0.0

    @property
    def wall_ratio(self) -> float:
        """Engine records/s over raw consume records/s (wall clock)."""
        raw = self.raw.per_second
        return self.engine.rate.per_second / raw if raw else 0.0

    @property
    def cpu_ratio(self) -> float:
        """Engine CPU per record over raw consume CPU per record."""
        raw = self.raw.cpu_us_per_record
        return self.engine.rate.cpu_us_per_record / raw if raw else 0.0

    @property
    def events_per_second(self) -> float:
        """Change events of the topic per second of the engine's replay of it."""
        seconds = self.engine.rate.seconds
        return self.events / seconds if seconds > 0 else 0.0


def measure(
    settings: Settings, topic: str, fmt: str, commit: str, baseline_records: int, echo: Echo
) -> Measured:
    """Raw consume, engine replay (format `fmt`) and naive baseline over one topic."""
    echo(f"[{fmt}] raw kafka-python consume ...")
    raw = raw_consume(settings, topic)
    echo(f"[{fmt}] engine replay (changefold run, format {fmt}, commit {commit}) ...")
    run_ = engine_replay(settings, [topic], commit, echo, fmt=fmt)
    echo(f"[{fmt}] naive baseline on {baseline_records:,} records ...")
    naive = naive_baseline(settings, topic, baseline_records, fmt)
    return Measured(fmt, topic, raw, run_, naive)


def compare(figures: Sequence[Measured]) -> str:
    """The formats side by side, a row per figure (the last column: avro / json when
    both are there)."""
    rows: list[tuple[str, list[float], str]] = [
        ("records (change events)", [m.raw.records for m in figures], "{:,.0f}"),
        ("bytes per record (key + value)", [m.bytes_per_record for m in figures], "{:,.0f}"),
        ("bytes per change event", [m.bytes_per_event for m in figures], "{:,.0f}"),
        ("raw consume CPU us/event", [m.cpu_us_per_event(m.raw) for m in figures], "{:,.1f}"),
        ("engine CPU us/event", [m.cpu_us_per_event(m.engine.rate) for m in figures], "{:,.1f}"),
        ("engine / raw CPU", [m.cpu_ratio for m in figures], "{:.2f}x"),
        ("raw consume records/s", [m.raw.per_second for m in figures], "{:,.0f}"),
        ("engine records/s", [m.engine.rate.per_second for m in figures], "{:,.0f}"),
        ("engine change events/s", [m.events_per_second for m in figures], "{:,.0f}"),
        ("engine / raw records/s", [m.wall_ratio for m in figures], "{:.2f}x"),
        ("engine peak RSS MiB", [m.engine.peak_rss_bytes / 2**20 for m in figures], "{:,.0f}"),
        ("naive baseline records/s", [m.naive.per_second for m in figures], "{:,.0f}"),
    ]
    names = [m.fmt for m in figures]
    both = len(figures) == 2
    head = ["", *names, *(["avro / json"] if both else [])]
    table = [head]
    for label, values, spec in rows:
        cells = [spec.format(v) for v in values]
        if label.startswith("records"):
            cells = [f"{m.raw.records:,} ({m.events:,})" for m in figures]
        extra = []
        if both:
            j, a = values[names.index("json")], values[names.index("avro")]
            extra = [f"{a / j:.2f}" if j else "-"]
        table.append([label, *cells, *extra])
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = []
    for r in table:
        first = f"  {r[0]:<{widths[0]}}"
        rest = "".join(f"  {c:>{widths[i + 1]}}" for i, c in enumerate(r[1:]))
        lines.append(first + rest)
    return "\n".join(lines)


def _admin(settings: Settings) -> KafkaAdminClient:
    return KafkaAdminClient(
        bootstrap_servers=settings.stack.bootstrap_servers, client_id="changefold-bench"
    )


def describe(lines: Iterable[tuple[str, str]]) -> str:
    rows = list(lines)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)
