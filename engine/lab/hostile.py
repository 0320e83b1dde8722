"""`changefold bench api --hostile`: does folding keep its pace while hostile queries run?

The run, against the real stack (the pieces of `changefold bench latency` reused):

1. The engine (`changefold run`, a child process) starts in a fresh state file and a
   fresh consumer group at the topics' current ends; the bank generator writes
   --rate events/s through Postgres and Debezium for the whole run.
2. After --warmup seconds three phases of --duration seconds each: `before` (no
   query load), `hostile` (--queries clients each send one hostile query after
   another: texts up to the SQL length limit, IN lists, a 200M-element list(), a
   1e9-character repeat(), a cross join that runs to the statement timeout, big
   results, and a few over the body and SQL limits) and `after` (from the moment
   the last hostile answer came back).
3. Per phase: change events folded per second and their freshness (source commit
   -> the engine's DuckDB commit of the batch that applied it: ENDs read from
   `bank.transaction`, batches from `_changefold.batches`, the table /metrics reads;
   both read after the run, so the load cannot distort the reading), batches,
   fold time per event, the engine's RSS peak and CPU (psutil, sampled), and what
   the hostile queries got: answered, refused or stopped, by which limit, and how
   long the slowest refusal took.

The figures are pure functions of the samples (tests/unit/test_bench_api.py).
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.config import Settings
from engine.lab.latency import (
    Batch,
    Echo,
    End,
    Window,
    _cpu,
    _prime,
    _read_batches,
    _read_ends,
    _seed_state,
    _sleep_until,
    _wait_ready,
    weighted_percentiles,
)

PHASES = ("before", "hostile", "after")

# -- pure: the hostile mix -------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """One kind of hostile query: its name and its SQL (already built)."""

    name: str
    sql: str


def union_text(chars: int) -> str:
    """`select 1 union all select 1 ...` of at most `chars` characters (at least one term)."""
    head, term = "select 1", " union all select 1"
    return head + term * max((chars - len(head)) // len(term), 0)


def in_list_text(chars: int) -> str:
    """`select 1 where 1 in (0, 1, 2, ...)` of at most `chars` characters."""
    head = "select 1 where 1 in ("
    parts: list[str] = []
    size = len(head) + 1
    n = 0
    while True:
        item = str(n) if n == 0 else f",{n}"
        if size + len(item) > chars:
            break
        parts.append(item)
        size += len(item)
        n += 1
    return head + "".join(parts or ["0"]) + ")"


def hostile_mix(max_sql_chars: int, max_body_bytes: int) -> list[Hostile]:
    """The queries the hostile clients take turns at, sized to the API's limits."""
    literals = max_body_bytes // 6 + 1  # "12345," per literal: the body is over the limit
    return [
        Hostile("union at the SQL limit", union_text(max_sql_chars)),
        Hostile("IN list at the SQL limit", in_list_text(max_sql_chars)),
        Hostile("list(range(200M))", "select len(list(range)) from range(200000000)"),
        Hostile("repeat('x', 1e9)", "select length(repeat('x', 1000000000))"),
        Hostile(
            "cross join",
            "select count(*) from range(100000000) a, range(100000000) b "
            "where a.range + b.range = -1",
        ),
        Hostile("big result", "select range, repeat('x', 200) as pad from range(50000000)"),
        Hostile("union over the SQL limit", union_text(max_sql_chars + 64) + " union all select 1"),
        Hostile(
            "IN list over the body limit",
            "select 1 where 1 in (" + ",".join(str(i) for i in range(literals)) + ")",
        ),
    ]


# -- pure: samples and summaries -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    """What one hostile query got (times epoch s)."""

    query: str
    sent: float
    received: float
    #: HTTP status (0: no answer: the client gave up or the connection broke).
    status: int
    #: The answer's `error` kind (None: rows) and, for refusals, the setting it named.
    error: str | None = None
    message: str = ""

    @property
    def seconds(self) -> float:
        return self.received - self.sent


#: What an answer was, by its error kind.
ANSWERED, REFUSED, STOPPED, FAILED = "answered", "refused", "stopped", "failed"


def outcome(a: Answer) -> tuple[str, str]:
    """(answered | refused | stopped | failed, the limit or reason)."""
    if a.status == 200:
        return ANSWERED, "rows"
    if a.status == 413:
        return REFUSED, "body size"
    if a.status == 0:
        return FAILED, "no answer"
    kind = a.error or "?"
    if kind == "too_large":
        if "MAX_SQL_CHARS" in a.message:
            return REFUSED, "SQL length"
        if "MAX_RESULT_BYTES" in a.message:
            return STOPPED, "result size"
        return REFUSED, "too_large"
    if kind == "busy":
        return REFUSED, "query slots"
    if kind in ("timeout", "memory"):
        return STOPPED, kind
    if kind == "unavailable":
        return STOPPED, "shutdown"
    return FAILED, kind


@dataclass(frozen=True, slots=True)
class Sample:
    """The engine process at one moment: epoch s, RSS bytes, CPU seconds so far."""

    at: float
    rss: int
    cpu: float


@dataclass(frozen=True)
class Phase:
    name: str
    window: Window


def folded_at(ends: Sequence[End], batches: Sequence[Batch]) -> list[tuple[End, float]]:
    """When each transaction was folded (epoch s): the end of the first batch whose
    newest source commit is at or after its commit (transactions are applied in
    commit order). Transactions no batch reached are left out."""
    ordered = sorted(
        (b for b in batches if b.freshness_ms is not None), key=lambda b: b.finished_at
    )
    reached: list[float] = []
    top = -math.inf
    for b in ordered:
        top = max(top, b.finished_at * 1000 - (b.freshness_ms or 0.0))
        reached.append(top)
    out = []
    for end in ends:
        i = bisect.bisect_left(reached, end.commit_ms - 0.5)
        if i < len(ordered):
            out.append((end, max(ordered[i].finished_at, end.commit_ms / 1000.0)))
    return out


@dataclass(frozen=True)
class PhaseFigures:
    name: str
    seconds: float
    #: Change events folded in the phase (by the moment their batch committed).
    events: int
    #: Per event, of the transactions committed in the phase: commit -> folded.
    freshness_ms: dict[float, float]
    freshness_max_ms: float
    #: Events committed in the phase that were not folded by the end of the run.
    unfolded: int
    batches: int
    #: decode + fold wall time per folded record, microseconds.
    fold_us_per_record: float
    rss_peak: int
    cpu_seconds: float
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: The slowest refusal (seconds), NaN: none.
    refusal_max_s: float = math.nan

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_share(self) -> float:
        """CPU of the engine process, in cores."""
        return self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_seconds / self.events * 1e6 if self.events else math.nan

    def count(self, what: str) -> int:
        return sum(n for (o, _), n in self.answers.items() if o == what)


def summarize_phase(
    phase: Phase,
    ends: Sequence[End],
    batches: Sequence[Batch],
    samples: Sequence[Sample],
    answers: Sequence[Answer],
) -> PhaseFigures:
    """The figures of one phase from the run's samples."""
    w = phase.window
    folded = folded_at(ends, batches)
    committed = [(e, t) for e, t in folded if w.holds(e.commit_ms / 1000.0)]
    in_phase = sum(e.events for e in ends if w.holds(e.commit_ms / 1000.0))
    fresh = [(t * 1000 - e.commit_ms, e.events) for e, t in committed]
    bs = [b for b in batches if w.holds(b.finished_at)]
    records = sum(b.records for b in bs)
    ss = [s for s in samples if w.start <= s.at <= w.stop]
    cpu = ss[-1].cpu - ss[0].cpu if len(ss) >= 2 else 0.0
    mine = [a for a in answers if w.holds(a.received)]
    refusals = [a.seconds for a in mine if outcome(a)[0] == REFUSED]
    return PhaseFigures(
        name=phase.name,
        seconds=w.seconds,
        events=sum(e.events for e, t in folded if w.holds(t)),
        freshness_ms=weighted_percentiles(fresh),
        freshness_max_ms=max((f for f, _ in fresh), default=math.nan),
        unfolded=in_phase - sum(e.events for e, _ in committed),
        batches=len(bs),
        fold_us_per_record=(
            sum(b.decode_ms + b.fold_ms for b in bs) * 1000 / records if records else math.nan
        ),
        rss_peak=max((s.rss for s in ss), default=0),
        cpu_seconds=cpu,
        answers=Counter(outcome(a) for a in mine),
        refusal_max_s=max(refusals, default=math.nan),
    )


def _num(v: float, fmt: str = ",.0f", unit: str = "") -> str:
    return "n/a" if math.isnan(v) else f"{v:{fmt}}{unit}"


COLUMNS = (
    "phase", "events/s", "fresh p50/p95/p99 ms", "max ms", "batches", "fold us/rec",
    "RSS peak", "CPU", "CPU us/event", "answered", "refused", "stopped", "failed",
    "slowest refusal",
)  # fmt: skip


def table(figures: Sequence[PhaseFigures]) -> str:
    """The phases as a text table, then each phase's answers by limit."""
    rows = [COLUMNS]
    for f in figures:
        p = f.freshness_ms
        rows.append(
            (
                f.name,
                _num(f.events_per_s),
                "/".join(_num(p.get(q, math.nan)) for q in (50.0, 95.0, 99.0)),
                _num(f.freshness_max_ms),
                str(f.batches),
                _num(f.fold_us_per_record, ",.1f"),
                f"{f.rss_peak / 2**20:,.0f} MiB",
                f"{f.cpu_share * 100:.0f}%",
                _num(f.cpu_us_per_event),
                str(f.count(ANSWERED)),
                str(f.count(REFUSED)),
                str(f.count(STOPPED)),
                str(f.count(FAILED)),
                _num(f.refusal_max_s, ".2f", " s"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for f in figures:
        if f.answers:
            parts = ", ".join(f"{o} by {why}: {n}" for (o, why), n in sorted(f.answers.items()))
            lines.append(f"  {f.name}: {parts}")
        if f.unfolded:
            lines.append(f"  {f.name}: {f.unfolded:,} events committed but not folded by the end")
    return "\n".join(lines)


def by_query(answers: Sequence[Answer]) -> str:
    """Per kind of hostile query: how many were sent, what they got, the slowest answer."""
    names = list(dict.fromkeys(a.query for a in answers))
    lines = []
    for name in names:
        mine = [a for a in answers if a.query == name]
        got = Counter(outcome(a) for a in mine)
        parts = ", ".join(f"{o} by {why} {n}" for (o, why), n in sorted(got.items()))
        slowest = max(a.seconds for a in mine)
        lines.append(f"  {name}: {len(mine)} sent; {parts}; slowest answer {slowest:.2f} s")
    return "\n".join(lines)


def ratios(figures: Sequence[PhaseFigures]) -> str:
    """The hostile phase against the quiet one before it, as ratios (the steadier way
    to compare runs on a shared machine)."""
    by = {f.name: f for f in figures}
    base, load = by.get("before"), by.get("hostile")
    if base is None or load is None:
        return ""

    def r(a: float, b: float) -> str:
        return "n/a" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}x"

    return (
        f"hostile / before: events/s {r(load.events_per_s, base.events_per_s)}, "
        f"freshness p50 {r(load.freshness_ms[50.0], base.freshness_ms[50.0])}, "
        f"p95 {r(load.freshness_ms[95.0], base.freshness_ms[95.0])}, "
        f"fold us/record {r(load.fold_us_per_record, base.fold_us_per_record)}"
    )


# -- the run against a live stack ------------------------------------------------------


@dataclass(frozen=True)
class Options:
    rate: float
    duration: float
    warmup: float
    queries: int
    seed: int
    population: int
    #: Extra environment of the engine child (KEY=VALUE: e.g. API settings to compare).
    engine_env: tuple[tuple[str, str], ...] = ()


def parse_env(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`KEY=VALUE` strings; raises ValueError naming the bad one."""
    out = []
    for p in pairs:
        key, sep, value = p.partition("=")
        if not sep or not key or not key.replace("_", "").isalnum():
            raise ValueError(f"{p!r} is not KEY=VALUE")
        out.append((key, value))
    return tuple(out)


class _Sampler:
    """RSS and CPU of a process every `interval` s, on a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hostile-sampler", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                self.samples.append(
                    Sample(time.time(), int(self.proc.memory_info().rss), _cpu(self.proc))
                )
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Clients:
    """`n` threads sending hostile queries one after another until `until` (epoch s)."""

    def __init__(self, url: str, mix: Sequence[Hostile], n: int, until: float, wait_s: float):
        self.url = url
        self.mix = list(mix)
        self.until = until
        self.wait_s = wait_s
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), name=f"hostile-{i}", daemon=True)
            for i in range(n)
        ]
        for t in self._threads:
            t.start()

    def _loop(self, i: int) -> None:
        import httpx

        k = i
        with httpx.Client(base_url=self.url, timeout=self.wait_s) as http:
            while time.time() < self.until:
                q = self.mix[k % len(self.mix)]
                k += 1
                sent = time.time()
                status, error, message = 0, None, ""
                try:
                    resp = http.post("/query", json={"sql": q.sql})
                    status = resp.status_code
                    if status != 200:
                        try:
                            body = resp.json()
                            error, message = body.get("error"), str(body.get("message", ""))
                        except ValueError:
                            error = "not json"
                except httpx.HTTPError as exc:
                    message = type(exc).__name__
                a = Answer(q.name, sent, time.time(), status, error, message[:300])
                with self._lock:
                    self.answers.append(a)

    def join(self) -> float:
        """Wait for the last answer; its time (epoch s)."""
        for t in self._threads:
            t.join(timeout=self.wait_s + 30)
        with self._lock:
            return max((a.received for a in self.answers), default=time.time())


def _frontier_lsn(url: str) -> int:
    import httpx

    try:
        resp = httpx.post(f"{url}/query", json={"sql": "SELECT 1"}, timeout=5.0)
        as_of = resp.json().get("consistent_as_of") if resp.status_code == 200 else None
        return int(as_of["lsn"]) if as_of else -1
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return -1


def run(
    settings: Settings, opts: Options, echo: Echo
) -> tuple[list[PhaseFigures], list[Answer], str]:
    """Run the benchmark on the stack of `settings`: the phases' figures and where the
    engine's log and state are."""
    workdir = Path(tempfile.mkdtemp(prefix="changefold-bench-api-"))
    state = workdir / "state.duckdb"
    group = f"bench-api-{uuid.uuid4().hex[:8]}"
    _prime(settings, _latency_opts(opts), workdir, echo)
    starts = _seed_state(settings, state, group, echo)
    env = settings.child_env()
    env["CHANGEFOLD_PGWIRE_PORT"] = "0"
    env["CHANGEFOLD_METRICS_KEEP_BATCHES"] = "1000000"
    env.update(dict(opts.engine_env))
    cmd = [sys.executable, "-m", "engine", "run", "--state", str(state), "--group", group]
    engine_log = (workdir / "engine.log").open("wb")
    engine = subprocess.Popen(cmd, env=env, stdout=engine_log, stderr=subprocess.STDOUT)
    generator: subprocess.Popen[bytes] | None = None
    sampler: _Sampler | None = None
    api = settings.api
    mix = hostile_mix(api.api_max_sql_chars, api.api_max_body_bytes)
    phases: list[Phase] = []
    answers: list[Answer] = []
    try:
        _wait_ready(settings, engine, workdir, echo)
        sampler = _Sampler(engine.pid)
        total = opts.warmup + 3 * opts.duration + api.api_statement_timeout_s + 120
        echo(
            f"generator: bank at {opts.rate:,.0f} events/s; phases of {opts.duration:.0f} s "
            f"after {opts.warmup:.0f} s of warm-up ..."
        )
        gen_log = (workdir / "generate.log").open("wb")
        t0 = time.time()
        generator = subprocess.Popen(
            [
                sys.executable, "-m", "engine", "generate", "bank",
                "--rate", str(opts.rate), "--duration", str(total),
                "--seed", str(opts.seed), "--population", str(opts.population),
            ],
            env=env, stdout=gen_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        before = Window(t0 + opts.warmup, t0 + opts.warmup + opts.duration)
        _sleep_until(before.stop, generator)
        echo(f"hostile: {opts.queries} clients for {opts.duration:.0f} s ...")
        hostile_start = time.time()
        clients = _Clients(
            api.url,
            mix,
            opts.queries,
            hostile_start + opts.duration,
            api.api_statement_timeout_s * 2 + 10,
        )
        _sleep_until(hostile_start + opts.duration, generator)
        last = clients.join()
        answers = clients.answers
        hostile = Window(hostile_start, max(last, hostile_start + opts.duration))
        echo(f"after: the last hostile answer came {last - hostile.start:.1f} s into the phase")
        after = Window(hostile.stop, hostile.stop + opts.duration)
        _sleep_until(after.stop, generator)
        phases = [Phase("before", before), Phase("hostile", hostile), Phase("after", after)]
        if generator.poll() is not None and generator.returncode != 0:
            raise RuntimeError(
                f"the generator exited with {generator.returncode}: "
                f"{(workdir / 'generate.log').read_text()[-2000:]}"
            )
        generator.send_signal(signal.SIGINT)
        generator.wait(timeout=60)
        ends = _read_ends(settings, starts, echo)
        top = max((e.lsn for e in ends if e.commit_ms / 1000.0 < after.stop), default=0)
        deadline = time.time() + 60
        while _frontier_lsn(api.url) < top and time.time() < deadline and engine.poll() is None:
            time.sleep(0.5)
    finally:
        if sampler is not None:
            sampler.stop()
        if generator is not None and generator.poll() is None:
            generator.kill()
        if engine.poll() is None:
            engine.send_signal(signal.SIGTERM)
        engine.wait(timeout=120)
        engine_log.close()
    batches = _read_batches(state, group)
    samples = sampler.samples if sampler is not None else []
    figures = [summarize_phase(p, ends, batches, samples, answers) for p in phases]
    with (workdir / "answers.jsonl").open("w") as out:
        for a in answers:
            out.write(json.dumps(dataclasses.asdict(a)) + "\n")
    return figures, answers, f"engine log, answers and state: {workdir} (exit {engine.returncode})"


def _latency_opts(opts: Options) -> Any:
    from engine.lab import latency

    return latency.Options(
        rate=opts.rate,
        duration=opts.duration,
        warmup=opts.warmup,
        probe_ms=50.0,
        seed=opts.seed,
        population=opts.population,
    )


def header(settings: Settings, opts: Options) -> str:
    api = settings.api
    extra = dict(opts.engine_env)
    slots = extra.get("CHANGEFOLD_API_MAX_CONCURRENT_QUERIES", api.api_max_concurrent_queries)
    nice = extra.get("CHANGEFOLD_API_QUERY_NICE", api.api_query_nice)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"changefold bench api --hostile: bank at {opts.rate:,.0f} events/s, {opts.queries} "
        f"hostile clients, phases of {opts.duration:.0f} s; {os.cpu_count()} CPUs, load "
        f"average {load}; query slots {slots}, query nice {nice}"
        + (f"; engine env {' '.join(f'{k}={v}' for k, v in opts.engine_env)}" if extra else "")
    )
