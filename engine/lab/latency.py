"""`changefold bench latency`: freshness at the live tail of the real stack.

Freshness of a change = the moment it is visible to a query minus its source
(Postgres) commit time. How it is measured:

1. The engine (`changefold run`, a child process) starts in a fresh state file and
   a fresh consumer group, positioned at the topics' current ends (its state file
   is seeded with those offsets: earlier history is not replayed).
2. The bank generator (`changefold generate bank`, a child process) writes at
   --rate through Postgres and Debezium.
3. A probe asks the engine's query API every --probe-ms for `SELECT 1`; every
   answer names its frontier (the last source transaction applied, by LSN). A
   transaction is visible from the first probe whose frontier LSN reaches its END's
   LSN: between that probe's answer and the previous probe's request (the midpoint
   is taken; the resolution is printed).
4. After the run the ENDs are read from `bank.transaction` (commit time, LSN and
   events per transaction), the batch figures from `_changefold.batches`, and only
   what happened after --warmup seconds of traffic counts.

The summary functions are pure (tests/unit/test_bench_latency.py).
"""

from __future__ import annotations

import bisect
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.config import Settings

Echo = Callable[[str], None]

QUANTILES = (50.0, 95.0, 99.0)


# -- pure: samples and summaries -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class End:
    """One source transaction, from its END record."""

    lsn: int
    #: Source commit time, epoch ms.
    commit_ms: int
    #: Change events it wrote to the followed topics.
    events: int
    #: The END record's Kafka timestamp (the Connect producer's CreateTime), epoch ms.
    kafka_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """One query answer: when it was asked and answered (epoch s), its frontier LSN
    (None: nothing applied yet)."""

    sent: float
    received: float
    lsn: int | None


@dataclass(frozen=True, slots=True)
class Visible:
    """When a source transaction became visible (epoch s, midpoint of `low`..`high`)."""

    end: End
    low: float
    high: float

    @property
    def at(self) -> float:
        return (self.low + self.high) / 2

    @property
    def freshness_ms(self) -> float:
        return self.at * 1000 - self.end.commit_ms


@dataclass(frozen=True, slots=True)
class Batch:
    """One row of `_changefold.batches` (times as epoch s)."""

    finished_at: float
    records: int
    decode_ms: float
    fold_ms: float
    commit_ms: float
    freshness_ms: float | None


def percentiles(values: Iterable[float], qs: Sequence[float] = QUANTILES) -> dict[float, float]:
    """Linear-interpolation percentiles (numpy's default); empty input -> NaN each."""
    xs = sorted(values)
    out: dict[float, float] = {}
    for q in qs:
        if not xs:
            out[q] = math.nan
            continue
        pos = (len(xs) - 1) * q / 100.0
        lo = math.floor(pos)
        hi = min(lo + 1, len(xs) - 1)
        out[q] = xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
    return out


def weighted_percentiles(
    samples: Iterable[tuple[float, int]], qs: Sequence[float] = QUANTILES
) -> dict[float, float]:
    """Percentiles of values each counted `weight` times (nearest rank: the smallest
    value whose cumulative weight reaches q% of the total); empty -> NaN each."""
    pairs = sorted((v, w) for v, w in samples if w > 0)
    total = sum(w for _, w in pairs)
    out: dict[float, float] = {}
    for q in qs:
        if not total:
            out[q] = math.nan
            continue
        need = max(math.ceil(total * q / 100.0), 1)
        seen = 0
        for v, w in pairs:
            seen += w
            if seen >= need:
                out[q] = v
                break
    return out


def visibility(ends: Sequence[End], probes: Sequence[Probe]) -> list[Visible]:
    """When each transaction became visible, from probes in the order they were sent.

    A transaction is visible from the first probe whose frontier LSN is at or past
    its END's LSN; it became visible after the previous probe was sent (that probe's
    snapshot did not hold it) and before this one was answered. Transactions no probe
    saw are left out."""
    ordered = sorted(probes, key=lambda p: p.sent)
    reached: list[int] = []
    top = -1
    for p in ordered:
        top = max(top, p.lsn if p.lsn is not None else -1)
        reached.append(top)  # frontiers only advance: a running maximum
    out = []
    for end in ends:
        i = bisect.bisect_left(reached, end.lsn)
        if i == len(reached):
            continue
        high = ordered[i].received
        low = ordered[i - 1].sent if i > 0 else ordered[i].sent
        low = max(low, end.commit_ms / 1000.0)
        out.append(Visible(end, min(low, high), high))
    return out


@dataclass(frozen=True)
class Window:
    """The measured part of the run (epoch s), after the warm-up."""

    start: float
    stop: float

    @property
    def seconds(self) -> float:
        return self.stop - self.start

    def holds(self, t: float) -> bool:
        return self.start <= t < self.stop


@dataclass(frozen=True)
class Summary:
    window: Window
    #: Source transactions and events committed in the window.
    transactions: int
    events: int
    #: Of those, the ones no probe saw before the run ended.
    unseen_events: int
    freshness_ms: dict[float, float]
    freshness_max_ms: float
    #: Mean width of the probe bracket around the visible moment (the resolution).
    resolution_ms: float
    #: Events made visible inside the window (what the engine kept up with).
    visible_events: int
    batches: int
    batch_records: dict[float, float]
    fold_ms: dict[float, float]
    decode_ms: dict[float, float]
    kafka_commit_ms: dict[float, float]
    engine_freshness_ms: dict[float, float]
    cpu_seconds: float
    #: Per event: source commit -> its END's CreateTime (handed to the Connect producer).
    to_kafka_ms: dict[float, float] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def source_rate(self) -> float:
        return self.events / self.window.seconds if self.window.seconds > 0 else 0.0

    @property
    def visible_rate(self) -> float:
        return self.visible_events / self.window.seconds if self.window.seconds > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.visible_events * 1e6 if self.visible_events else math.nan


def summarize(
    window: Window,
    ends: Sequence[End],
    probes: Sequence[Probe],
    batches: Sequence[Batch],
    cpu_seconds: float,
) -> Summary:
    """The figures of the window: freshness per event of the transactions committed in
    it, batches finished in it, CPU spent in it per event made visible in it."""
    in_window = [e for e in ends if window.holds(e.commit_ms / 1000.0)]
    seen = visibility(in_window, probes)
    fresh = [(v.freshness_ms, v.end.events) for v in seen]
    everything = visibility(ends, probes)
    visible_events = sum(v.end.events for v in everything if window.holds(v.at))
    bs = [b for b in batches if window.holds(b.finished_at)]
    events = sum(e.events for e in in_window)
    return Summary(
        window=window,
        transactions=len(in_window),
        events=events,
        unseen_events=events - sum(v.end.events for v in seen),
        freshness_ms=weighted_percentiles(fresh),
        freshness_max_ms=max((f for f, _ in fresh), default=math.nan),
        resolution_ms=(
            sum((v.high - v.low) * 1000 for v in seen) / len(seen) if seen else math.nan
        ),
        visible_events=visible_events,
        batches=len(bs),
        batch_records=percentiles(b.records for b in bs),
        fold_ms=percentiles(b.fold_ms for b in bs),
        decode_ms=percentiles(b.decode_ms for b in bs),
        kafka_commit_ms=percentiles(b.commit_ms for b in bs),
        engine_freshness_ms=percentiles(b.freshness_ms for b in bs if b.freshness_ms is not None),
        cpu_seconds=cpu_seconds,
        to_kafka_ms=weighted_percentiles(
            (e.kafka_ms - e.commit_ms, e.events) for e in in_window if e.kafka_ms is not None
        ),
    )


def _ps(p: dict[float, float], unit: str = "", digits: int = 0) -> str:
    return " / ".join("n/a" if math.isnan(p[q]) else f"{p[q]:,.{digits}f}{unit}" for q in QUANTILES)


def report(s: Summary, *, rate: float, warmup: float, probe_ms: float, load: str) -> str:
    rows = [
        (
            "window",
            f"{s.window.seconds:.1f} s after {warmup:.0f} s of warm-up (excluded); "
            f"load average {load}",
        ),
        (
            "source",
            f"{s.events:,} events in {s.transactions:,} transactions committed, "
            f"{s.source_rate:,.0f} events/s (target {rate:,.0f})",
        ),
        (
            "engine",
            f"{s.visible_events:,} events made visible, {s.visible_rate:,.0f} events/s",
        ),
        (
            "freshness p50/p95/p99",
            f"{_ps(s.freshness_ms, ' ms')} (max {s.freshness_max_ms:,.0f} ms; per event, "
            f"commit -> visible to a query; probe every {probe_ms:.0f} ms, "
            f"resolution ~{s.resolution_ms:.0f} ms)"
            + (f"; {s.unseen_events:,} events never seen" if s.unseen_events else ""),
        ),
        (
            "  of which commit -> Kafka",
            f"{_ps(s.to_kafka_ms, ' ms') if s.to_kafka_ms else 'n/a'} (per event: the END "
            "record's Kafka CreateTime, set when Connect hands it to its producer: "
            "Debezium's part; the producer's linger and send are not in it)",
        ),
        ("batches", f"{s.batches:,} finished in the window"),
        ("batch records p50/p95/p99", _ps(s.batch_records)),
        ("fold ms p50/p95/p99", _ps(s.fold_ms, digits=1)),
        ("decode ms p50/p95/p99", _ps(s.decode_ms, digits=1)),
        ("kafka commit ms p50/p95/p99", _ps(s.kafka_commit_ms, digits=1)),
        (
            "engine's own freshness_ms",
            f"{_ps(s.engine_freshness_ms)} (per batch: batch written minus its newest "
            "commit; the oldest event in a batch waited longer)",
        ),
        (
            "engine CPU",
            f"{s.cpu_seconds:.1f} s in the window, {s.cpu_us_per_event:,.0f} us per visible "
            f"event ({s.cpu_seconds / max(s.window.seconds, 1e-9) * 100:.0f}% of a core)",
        ),
        *s.extra.items(),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


# -- the run against a live stack ------------------------------------------------------


@dataclass(frozen=True)
class Options:
    rate: float
    duration: float
    warmup: float
    probe_ms: float
    seed: int
    population: int
    max_wait_ms: int | None = None
    async_commit: bool = False


def run(settings: Settings, opts: Options, echo: Echo) -> str:
    """Run the benchmark on the stack of `settings`; returns the printed report."""
    import psutil

    workdir = Path(tempfile.mkdtemp(prefix="changefold-bench-latency-"))
    state = workdir / "state.duckdb"
    group = f"bench-latency-{uuid.uuid4().hex[:8]}"
    _prime(settings, opts, workdir, echo)
    starts = _seed_state(settings, state, group, echo)
    env = settings.child_env()
    env["CHANGEFOLD_PGWIRE_PORT"] = "0"
    env["CHANGEFOLD_METRICS_KEEP_BATCHES"] = "1000000"
    if opts.max_wait_ms is not None:
        env["CHANGEFOLD_BATCH_MAX_WAIT_MS"] = str(opts.max_wait_ms)
    cmd = [sys.executable, "-m", "engine", "run", "--state", str(state), "--group", group]
    engine_log = (workdir / "engine.log").open("wb")
    engine = subprocess.Popen(cmd, env=env, stdout=engine_log, stderr=subprocess.STDOUT)
    generator: subprocess.Popen[bytes] | None = None
    probe = _Prober(settings.api.url, opts.probe_ms / 1000.0)
    try:
        _wait_ready(settings, engine, workdir, echo)
        probe.start()
        proc = psutil.Process(engine.pid)
        echo(
            f"generator: bank at {opts.rate:,.0f} events/s for {opts.warmup + opts.duration:.0f}"
            f" s ({opts.warmup:.0f} s warm-up) ..."
        )
        gen_log = (workdir / "generate.log").open("wb")
        t0 = time.time()
        generator = subprocess.Popen(
            [
                sys.executable, "-m", "engine", "generate", "bank",
                "--rate", str(opts.rate), "--duration", str(opts.warmup + opts.duration + 5),
                "--seed", str(opts.seed), "--population", str(opts.population),
                *(["--async-commit"] if opts.async_commit else []),
            ],
            env=env, stdout=gen_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        window = Window(t0 + opts.warmup, t0 + opts.warmup + opts.duration)
        _sleep_until(window.start, generator)
        cpu0 = _cpu(proc)
        load0 = os.getloadavg()
        _sleep_until(window.stop, generator)
        cpu = _cpu(proc) - cpu0
        load1 = os.getloadavg()
        if generator.poll() is not None and generator.returncode != 0:
            raise RuntimeError(
                f"the generator exited with {generator.returncode}: "
                f"{(workdir / 'generate.log').read_text()[-2000:]}"
            )
        generator.send_signal(signal.SIGINT)
        generator.wait(timeout=60)
        ends = _read_ends(settings, starts, echo)
        last = max((e.lsn for e in ends if e.commit_ms / 1000.0 < window.stop), default=0)
        deadline = time.time() + 60
        while probe.reached() < last and time.time() < deadline and engine.poll() is None:
            time.sleep(0.2)
        probe.stop()
    finally:
        probe.stop()
        if generator is not None and generator.poll() is None:
            generator.kill()
        if engine.poll() is None:
            engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=120)
        engine_log.close()
    batches = _read_batches(state, group)
    summary = summarize(window, ends, probe.probes, batches, cpu)
    load = "/".join(f"{a:.1f}-{b:.1f}" for a, b in zip(load0, load1, strict=True))
    summary.extra["probes"] = (
        f"{len(probe.probes):,} answered, {probe.failures} failed; engine log and state: {workdir}"
    )
    return report(summary, rate=opts.rate, warmup=opts.warmup, probe_ms=opts.probe_ms, load=load)


def _cpu(proc: Any) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def _sleep_until(t: float, child: subprocess.Popen[bytes]) -> None:
    while (left := t - time.time()) > 0:
        if child.poll() is not None:
            return
        time.sleep(min(left, 0.2))


class _Prober:
    """`SELECT 1` against the query API every `interval` s, on a thread."""

    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self.interval = interval
        self.probes: list[Probe] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="latency-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def reached(self) -> int:
        return max((p.lsn or -1 for p in self.probes[-5:]), default=-1)

    def _loop(self) -> None:
        import httpx

        with httpx.Client(base_url=self.url, timeout=10.0) as http:
            next_at = time.monotonic()
            while not self._stop.is_set():
                sent = time.time()
                try:
                    resp = http.post("/query", json={"sql": "SELECT 1"})
                    received = time.time()
                    as_of = resp.json().get("consistent_as_of") if resp.status_code == 200 else None
                    if resp.status_code != 200:
                        self.failures += 1
                    else:
                        lsn = int(as_of["lsn"]) if as_of else None
                        self.probes.append(Probe(sent, received, lsn))
                except (httpx.HTTPError, ValueError):
                    self.failures += 1
                next_at += self.interval
                delay = next_at - time.monotonic()
                if delay < 0:
                    next_at = time.monotonic()
                else:
                    self._stop.wait(delay)


def _bank_transaction_topic() -> str:
    return "bank.transaction"


def _prime(settings: Settings, opts: Options, workdir: Path, echo: Echo) -> None:
    """On a stack whose bank topics do not exist yet, write a few seconds of traffic so
    Debezium creates them (a pattern subscription would find a new topic late)."""
    from engine.lab.bench import _admin

    admin = _admin(settings)
    try:
        topics = set(admin.list_topics())
    finally:
        admin.close()
    wanted = {_bank_transaction_topic(), "bank.bank.transactions", "bank.bank.accounts"}
    if wanted <= topics:
        return
    echo("priming: the bank topics do not exist yet, 5 s of traffic at 200 events/s ...")
    subprocess.run(
        [
            sys.executable, "-m", "engine", "generate", "bank", "--rate", "200",
            "--duration", "5", "--seed", str(opts.seed + 1_000_000),
            "--population", str(opts.population),
        ],
        env=settings.child_env(),
        stdout=(workdir / "prime.log").open("wb"),
        stderr=subprocess.STDOUT,
        check=True,
    )  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline:
        admin = _admin(settings)
        try:
            if wanted <= set(admin.list_topics()):
                return
        finally:
            admin.close()
        time.sleep(1.0)
    raise RuntimeError(f"topics {sorted(wanted)} did not appear within 60 s of priming")


def _seed_state(
    settings: Settings, state: Path, group: str, echo: Echo
) -> dict[tuple[str, int], int]:
    """A fresh state whose stored offsets are the followed topics' current ends, once
    they stop growing (Debezium caught up). Returns those offsets."""
    from kafka import TopicPartition

    from engine.ingest.kafka_group import open_consumer
    from engine.ingest.topics import subscription
    from engine.state import offsets
    from engine.state.store import Store

    sub = subscription(settings.engine.topic_list, settings.connectors_dir)
    consumer = open_consumer(settings, "changefold-bench-latency", group_id=None)
    try:
        last: dict[tuple[str, int], int] = {}
        since = time.monotonic()
        while True:
            parts = [
                TopicPartition(t, p)
                for t in sorted(consumer.topics())
                if sub.follows(t)
                for p in sorted(consumer.partitions_for_topic(t) or ())
            ]
            ends = {
                (tp.topic, tp.partition): int(o) for tp, o in consumer.end_offsets(parts).items()
            }
            if ends != last:
                last, since = ends, time.monotonic()
            elif time.monotonic() - since >= 3.0:
                break
            time.sleep(0.5)
    finally:
        consumer.close()
    with Store(state) as store:
        store.migrate(settings.state_sql_dir)
        with store.transaction() as conn:
            offsets.save_positions(conn, group, {k: (v, v) for k, v in last.items()})
    echo(f"fresh state {state}, group {group}: starts at the ends of {len(last)} partitions")
    return last


def _wait_ready(
    settings: Settings, engine: subprocess.Popen[bytes], workdir: Path, echo: Echo
) -> None:
    """Until the API answers and the engine owns its partitions."""
    import httpx

    deadline = time.time() + 120
    url = settings.api.url
    while time.time() < deadline:
        if engine.poll() is not None:
            raise RuntimeError(
                f"the engine exited with {engine.returncode}: "
                f"{(workdir / 'engine.log').read_text()[-2000:]}"
            )
        try:
            resp = httpx.post(
                f"{url}/query",
                json={"sql": "SELECT count(*) FROM _changefold.assignments"},
                timeout=5.0,
            )
            if resp.status_code == 200 and resp.json()["rows"][0][0] > 0:
                echo(f"engine ready ({resp.json()['rows'][0][0]} partitions assigned)")
                time.sleep(1.0)
                return
        except (httpx.HTTPError, ValueError, KeyError, IndexError):
            pass
        time.sleep(0.5)
    raise RuntimeError("the engine did not get its partitions within 120 s")


def _read_ends(settings: Settings, starts: dict[tuple[str, int], int], echo: Echo) -> list[End]:
    """The bank connector's ENDs written since the run started."""
    from kafka import TopicPartition

    from engine.decode.txmeta import parse_marker
    from engine.ingest.kafka_group import open_consumer

    topic = _bank_transaction_topic()
    consumer = open_consumer(settings, "changefold-bench-latency-ends", group_id=None)
    out: list[End] = []
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        stop = {tp: int(o) for tp, o in consumer.end_offsets(parts).items()}
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, starts.get((tp.topic, tp.partition), 0))
        remaining = {tp for tp in parts if stop[tp] > starts.get((tp.topic, tp.partition), 0)}
        while remaining:
            polled = consumer.poll(timeout_ms=2000, max_records=50_000)
            if not polled:
                break
            for tp, records in polled.items():
                for r in records:
                    end = parse_marker(r.topic, r.partition, r.offset, r.value)
                    if end is not None:
                        out.append(
                            End(end.lsn, end.ts_ms, sum(n for _, n in end.counts), r.timestamp)
                        )
                if records[-1].offset >= stop[tp] - 1:
                    remaining.discard(tp)
    finally:
        consumer.close()
    echo(f"read {len(out):,} transaction ENDs from {topic}")
    return out


def _read_batches(state: Path, group: str) -> list[Batch]:
    import duckdb

    with duckdb.connect(str(state), read_only=True) as conn:
        rows = conn.execute(
            "SELECT epoch_ms(finished_at) / 1000.0, records, decode_ms, fold_ms, "
            "coalesce(commit_ms, 0), freshness_ms FROM _changefold.batches "
            "WHERE group_id = ? ORDER BY batch_id",
            [group],
        ).fetchall()
    return [Batch(float(t), int(r), float(d), float(f), float(c), fz) for t, r, d, f, c, fz in rows]
