"""Replay rate with the derived views on, next to `changefold run` over the same history.

Needs a running stack (`changefold stack up`). The demo topics (every captured table
of the connectors in connectors/) must hold at least --events change events: when
they hold fewer, the bank generator writes the rest through Postgres and Debezium
(`changefold generate bank --async-commit`, real envelopes, fraud included) and the
script waits until the topics are quiet. Then, each into a fresh state file in a
temporary folder, with the views maintained in every batch as always:

  1. `changefold replay --into FILE`: its own consumer, no group; events/s as the
     replay reports it (first poll to last batch), and peak RSS;
  2. `changefold run --idle-exit 3` in a new consumer group: events/s from its
     batch figures (first assignment to last batch), and peak RSS.

    .venv/bin/python benchmarks/bench_replay.py [--events 1000000] [--rate 12000]
        [--transactions-cost ROUNDS | --clients ROUNDS]

With `--transactions-cost ROUNDS` it instead replays the same history ROUNDS times
with whole source transactions on and ROUNDS times off, interleaved, and prints
events/s and CPU per event of each and the cost of ordering transactions (the
CPU of the replay process and its children, steadier than wall time here).

With `--clients ROUNDS` it reads the same topics ROUNDS times with each Kafka client
(kafka-python, confluent-kafka), interleaved: raw (records fetched, nothing else, in a
child process) and as `changefold replay` (CHANGEFOLD_KAFKA_CLIENT), and prints CPU per
record of each and the engine's ratio to raw kafka-python.

Timings are wall clock: run it on an otherwise idle machine. The topics keep what
was generated (retention is unbounded in the demo): a second run reuses them.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from engine.core.config import Settings
from engine.ingest.confluent_reader import ConfluentReader
from engine.ingest.kafka_group import open_consumer
from engine.ingest.topics import subscription
from engine.lab import bench

_REPLAYED = re.compile(r"(\d+) events in (\d+) batches, ([\d.]+) s")


def topic_events(consumer: KafkaConsumer, pattern: str) -> tuple[list[str], int]:
    """The table topics matching `pattern` and the records they hold (end minus start)."""
    topics = sorted(t for t in consumer.topics() if re.match(pattern, t))
    parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
    ends = consumer.end_offsets(parts)
    starts = consumer.beginning_offsets(parts)
    return topics, sum(ends[tp] - starts[tp] for tp in parts)


def wait_quiet(consumer: KafkaConsumer, pattern: str, quiet_s: float = 5.0) -> int:
    """Wait until no topic grows for `quiet_s` (Debezium caught up); the records then held."""
    last, since = -1, time.monotonic()
    while True:
        _, held = topic_events(consumer, pattern)
        if held != last:
            last, since = held, time.monotonic()
            print(f"  topics hold {held:,} records", flush=True)
        elif time.monotonic() - since >= quiet_s:
            return held
        time.sleep(1.0)


def generate(missing: int, rate: float, seed: int) -> None:
    duration = max(10.0, missing / rate * 1.05)
    print(f"generating about {missing:,} bank events at {rate:,.0f}/s ({duration:.0f} s) ...")
    subprocess.run(
        [
            sys.executable, "-m", "engine", "generate", "bank",
            "--rate", str(rate), "--duration", f"{duration:.0f}", "--seed", str(seed),
            "--population", "5000", "--async-commit",
        ],
        check=True,
    )  # fmt: skip


def replay(into: Path, env: dict[str, str] | None = None) -> tuple[bench.Rate, int]:
    """One `changefold replay` into `into`: its rate (cpu_seconds: the child's CPU) and
    peak RSS."""
    cpu0 = _children_cpu()
    child = subprocess.Popen(
        [sys.executable, "-m", "engine", "replay", "--into", str(into), "--no-progress"],
        stdout=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    peak = bench.sample_peak_rss(child)
    cpu = _children_cpu() - cpu0
    out = (child.stdout.read() if child.stdout else b"").decode()
    found = _REPLAYED.search(out)
    if child.returncode != 0 or found is None:
        sys.exit(f"replay exited with {child.returncode}: {out[-2000:]}")
    return bench.Rate(int(found[1]), 0, float(found[3]), cpu), peak


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def transactions_cost(workdir: Path, rounds: int, held: int, topics: int) -> None:
    """Replays with whole transactions on and off, interleaved, and their figures."""
    runs: dict[str, list[bench.Rate]] = {"on": [], "off": []}
    for i in range(rounds):
        for mode in ("on", "off") if i % 2 == 0 else ("off", "on"):
            print(f"replay {i + 1}/{rounds}, transactions {mode} ...", flush=True)
            rate, _peak = replay(
                workdir / f"replay-{mode}-{i}.duckdb", {"CHANGEFOLD_TRANSACTIONS": mode}
            )
            runs[mode].append(rate)
    print(f"\nbench replay --transactions-cost: {held:,} records in {topics} topics, views on")
    for mode, rates in runs.items():
        cells = ", ".join(
            f"{r.per_second:,.0f} events/s {r.cpu_us_per_record:.0f} us CPU/event" for r in rates
        )
        print(f"  transactions {mode:<3}  {cells}")
    on = sum(r.cpu_us_per_record for r in runs["on"]) / rounds
    off = sum(r.cpu_us_per_record for r in runs["off"]) / rounds
    wall_on = sum(r.per_second for r in runs["on"]) / rounds
    wall_off = sum(r.per_second for r in runs["off"]) / rounds
    print(
        f"  cost of whole transactions: CPU per event {on / off:.2f}x "
        f"(+{(on / off - 1) * 100:.0f}%), events/s {wall_on / wall_off:.2f}x"
    )


def read_topics(client: str) -> None:
    """(In the child of raw_read) read the demo topics once with `client`, keeping
    nothing; prints records, bytes and seconds."""
    settings = Settings()
    pattern = subscription((), settings.connectors_dir).pattern
    assert pattern is not None
    meta = open_consumer(
        settings,
        "bench-raw",
        group_id=None,
        max_partition_fetch_bytes=settings.engine.partition_fetch_bytes,
    )
    tps = [
        TopicPartition(t, p)
        for t in meta.topics()
        if re.match(pattern, t)
        for p in meta.partitions_for_topic(t) or ()
    ]
    ends, begins = meta.end_offsets(tps), meta.beginning_offsets(tps)
    total = sum(ends[tp] - begins[tp] for tp in tps)
    reader = meta if client == "kafka-python" else ConfluentReader(settings, "bench-raw")
    reader.assign(tps)
    for tp in tps:
        reader.seek(tp, begins[tp])
    records = size = 0
    t0 = time.perf_counter()
    while records < total:
        polled = reader.poll(timeout_ms=1000, max_records=settings.engine.batch_max_records)
        for batch in polled.values():
            records += len(batch)
            size += sum(len(r.value or b"") for r in batch)
    print(records, size, time.perf_counter() - t0)


def raw_read(client: str) -> bench.Rate:
    """The topics read once with `client` in a child process, nothing done with the
    records: its rate (cpu_seconds: the child's CPU, its start included)."""
    cpu0 = _children_cpu()
    out = subprocess.run(
        [sys.executable, __file__, "--read-topics", client],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    records, size, seconds = int(out[-3]), int(out[-2]), float(out[-1])
    return bench.Rate(records, size, seconds, _children_cpu() - cpu0)


def clients(workdir: Path, rounds: int, held: int) -> None:
    """Raw reads and replays with each Kafka client, interleaved, and their figures."""
    names = ("kafka-python", "confluent")
    raw: dict[str, list[bench.Rate]] = {c: [] for c in names}
    engine: dict[str, list[bench.Rate]] = {c: [] for c in names}
    for i in range(rounds):
        for client in names if i % 2 == 0 else names[::-1]:
            print(f"round {i + 1}/{rounds}, {client}: raw read ...", flush=True)
            raw[client].append(raw_read(client))
            print(f"round {i + 1}/{rounds}, {client}: changefold replay ...", flush=True)
            rate, _peak = replay(
                workdir / f"replay-{client}-{i}.duckdb", {"CHANGEFOLD_KAFKA_CLIENT": client}
            )
            engine[client].append(rate)
    print(f"\nbench replay --clients: {held:,} records, views on, {rounds} round(s)")

    def mean(rates: list[bench.Rate]) -> float:
        return sum(r.cpu_us_per_record for r in rates) / len(rates)

    for client in names:
        for what, rates in (("raw read", raw[client]), ("replay", engine[client])):
            cells = ", ".join(
                f"{r.per_second:,.0f} records/s {r.cpu_us_per_record:.1f} us CPU/record"
                for r in rates
            )
            print(f"  {client:<12} {what:<8}  {cells}")
    base = mean(raw["kafka-python"])
    for client in names:
        print(
            f"  engine ({client}) against raw kafka-python, CPU per record: "
            f"{base / mean(engine[client]):.2f}x"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="records to replay")
    parser.add_argument("--rate", type=float, default=12_000.0, help="generator target rate")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100_000)
    parser.add_argument(
        "--transactions-cost",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="replay ROUNDS times with whole transactions on and off instead",
    )
    parser.add_argument(
        "--clients",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="read and replay ROUNDS times with each Kafka client instead",
    )
    parser.add_argument("--read-topics", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read_topics:
        read_topics(args.read_topics)
        return 0
    settings = Settings()
    pattern = subscription((), settings.connectors_dir).pattern
    assert pattern is not None
    consumer = open_consumer(settings, "changefold-bench-replay", group_id=None)
    try:
        _, held = topic_events(consumer, pattern)
        while held < args.events:
            generate(args.events - held, args.rate, args.seed)
            args.seed += 1
            held = wait_quiet(consumer, pattern)
        topics, held = topic_events(consumer, pattern)
    finally:
        consumer.close()
    print(f"{len(topics)} topics hold {held:,} records")

    workdir = Path(tempfile.mkdtemp(prefix="changefold-bench-replay-"))
    if args.clients:
        clients(workdir, args.clients, held)
        print(f"  states under {workdir}")
        return 0
    if args.transactions_cost:
        transactions_cost(workdir, args.transactions_cost, held, len(topics))
        print(f"  states under {workdir}")
        return 0
    print("changefold replay ...", flush=True)
    replayed, replay_rss = replay(workdir / "replay.duckdb")
    print("changefold run ...", flush=True)
    run = bench.engine_replay(settings, [], "sync", print)

    print(f"\nbench replay: {held:,} records in {len(topics)} topics, views on, 2 CPUs")
    print(
        f"  replay  {replayed.per_second:>9,.0f} events/s ({replayed.records:,} in "
        f"{replayed.seconds:.1f} s), peak RSS {replay_rss / 2**20:,.0f} MiB"
    )
    print(
        f"  run     {run.rate.per_second:>9,.0f} events/s ({run.rate.records:,} in "
        f"{run.rate.seconds:.1f} s, {run.batches} batches), peak RSS "
        f"{run.peak_rss_bytes / 2**20:,.0f} MiB"
    )
    print(f"  replay / run {replayed.per_second / max(run.rate.per_second, 1e-9):.2f}x")
    print(f"  states under {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
