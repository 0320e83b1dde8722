"""One generator run: check the database, plan, write setup and stream, report.

`run_workload` is what `changefold generate` calls; tests and benchmarks call it
directly with a `Settings` pointing at their own database.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TypeVar

import psycopg
from psycopg import sql

from engine.core.config import Settings
from engine.core.errors import WorkloadError, WorkloadUsageError
from engine.lab.workload import db, resume
from engine.lab.workload.domains import Domain, get_domain
from engine.lab.workload.plan import PlanConfig, to_datetime
from engine.lab.workload.resume import EarlierRun
from engine.lab.workload.writer import ProgressFn, Tally, Writer, connection_lost

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds between moves of the key sequences during a run.
_SEQUENCE_SYNC_S = 1.0
#: Default of WorkloadOptions.reconnect_s (`--reconnect-timeout`): a restart of the
#: server, even with crash recovery, is well within it.
DEFAULT_RECONNECT_S = 120.0


@dataclass(frozen=True)
class WorkloadOptions:
    domain: str
    #: Target events/s; None writes as fast as Postgres takes it (benchmarks).
    rate: float | None = 100.0
    #: Seconds of traffic at the target rate (the run writes rate x duration events);
    #: 0 runs until stopped. With rate None: wall-clock seconds.
    duration_s: float = 60.0
    seed: int = 1
    fraud_rate: float = 0.02
    hot_keys: float = 0.0
    population: int = 300
    #: synchronous_commit=off for the generator's session (see db.connect).
    async_commit: bool = False
    #: After a lost connection, seconds to keep trying to reconnect before giving up;
    #: 0 stops at the first loss.
    reconnect_s: float = DEFAULT_RECONNECT_S

    def validate(self) -> Domain:
        domain = get_domain(self.domain)
        if self.rate is not None and not self.rate > 0:
            raise WorkloadUsageError(f"--rate must be more than 0 events/s, got {self.rate:g}")
        if not self.duration_s >= 0:
            raise WorkloadUsageError(
                f"--duration must be 0 (run until Ctrl-C) or more seconds, got {self.duration_s:g}"
            )
        if self.rate is None and self.duration_s == 0:
            raise WorkloadUsageError("an unpaced run needs a duration")
        if not 0 <= self.fraud_rate <= 0.5:
            raise WorkloadUsageError(
                f"--fraud-rate is a share of transactions from 0 to 0.5, got {self.fraud_rate:g}"
            )
        if not 0 <= self.hot_keys <= 0.95:
            raise WorkloadUsageError(
                f"--hot-keys is a share of traffic from 0 to 0.95, got {self.hot_keys:g}"
            )
        if self.population < 10:
            raise WorkloadUsageError(f"--population must be at least 10, got {self.population}")
        if not self.reconnect_s >= 0:
            raise WorkloadUsageError(
                f"--reconnect-timeout must be 0 (do not reconnect) or more seconds, "
                f"got {self.reconnect_s:g}"
            )
        return domain

    @property
    def max_events(self) -> int | None:
        if self.rate is None or self.duration_s == 0:
            return None
        return max(1, round(self.rate * self.duration_s))


@dataclass(frozen=True)
class RunSummary:
    domain: str
    options: WorkloadOptions
    setup: Tally
    stream: Tally
    sim_start: datetime
    sim_end: datetime
    interrupted: bool
    hot_keys: list[int]
    id_bases: dict[str, int]
    #: Scenario -> fraud cases written in this run (bank only).
    fraud_cases: dict[str, int] = field(default_factory=dict)
    #: Earlier runs of the same domain and seed in this database (this one continued
    #: after them: new ids, later simulated time, other uuids).
    earlier_runs: list[EarlierRun] = field(default_factory=list)
    #: Times the connection was lost and re-opened, and the seconds that took.
    reconnects: int = 0
    outage_s: float = 0.0

    @property
    def achieved_rate(self) -> float:
        return self.stream.rate


def run_workload(
    settings: Settings,
    options: WorkloadOptions,
    *,
    stop: threading.Event | None = None,
    progress: ProgressFn | None = None,
    on_setup_done: ProgressFn | None = None,
) -> RunSummary:
    """Plan and write one run. Raises WorkloadError (or its usage subclass) on bad input,
    unreachable Postgres, a missing schema or a failed write."""
    domain = options.validate()
    stop = stop or threading.Event()
    writer = Writer(db.connect(settings, async_commit=options.async_commit))
    try:
        return _run(writer, settings, domain, options, stop, progress, on_setup_done)
    except psycopg.Error as exc:
        raise WorkloadError(
            f"Postgres failed during the {domain.name} run: {str(exc).strip()}\n"
            "Every generated transaction commits or rolls back whole; the database is "
            "consistent. Check that the server is running (`changefold stack status`)."
        ) from exc
    finally:
        if writer.conn is not None:
            writer.conn.close()


def _retrying(writer: Writer, what: Callable[[psycopg.Connection], T]) -> T:
    """Run an idempotent query on the writer's connection, reconnecting once it is lost."""
    while True:
        conn = writer.conn
        assert conn is not None
        try:
            return what(conn)
        except psycopg.Error as exc:
            if writer.resumer is None or not connection_lost(conn, exc):
                raise
            with contextlib.suppress(psycopg.Error):
                conn.close()
            t0 = time.monotonic()
            writer.conn, _ = writer.resumer.reconnect(exc, writer.step)
            writer.outage_s += time.monotonic() - t0
            writer.reconnects += 1


def _run(
    writer: Writer,
    settings: Settings,
    domain: Domain,
    options: WorkloadOptions,
    stop: threading.Event,
    progress: ProgressFn | None,
    on_setup_done: ProgressFn | None,
) -> RunSummary:
    conn = writer.conn
    assert conn is not None
    missing = db.missing_tables(conn, domain.required)
    if missing:
        raise WorkloadError(
            f"the {domain.name} schema is not loaded in database {settings.stack.pg_database!r} "
            f"(missing: {', '.join(missing)}).\n"
            f"Fix: `changefold stack up` loads sql/source/{domain.sql_file} into the stack's "
            "database; for another database load that file yourself (psql -f)."
        )
    bases = db.id_bases(conn, domain.serial_keys)
    start_us = db.clock_start(conn, domain.clock_columns)
    cfg = PlanConfig(
        seed=options.seed,
        population=options.population,
        fraud_rate=options.fraud_rate,
        hot_key_share=options.hot_keys,
        start_us=start_us,
        id_bases=bases,
    )
    planner = domain.planner(cfg)
    plan = {
        "options": {k: v for k, v in asdict(options).items() if k != "reconnect_s"},
        "id_bases": bases,
        "start_us": start_us,
    }
    run_id, earlier = resume.register_run(conn, domain.name, options.seed, plan)
    if run_id is not None:
        writer.resumer = resume.Reconnector(
            settings,
            run_id,
            timeout_s=options.reconnect_s,
            async_commit=options.async_commit,
            stop=stop,
        )
    log.info(
        "%s: ids continue at %s, simulated clock at %s", domain.name, bases, to_datetime(start_us)
    )
    if earlier:
        log.info(
            "%s: seed %d was generated into this database before (%d run(s), %d planned "
            "transactions); this run continues after them with new ids, later times and "
            "other uuids",
            domain.name,
            options.seed,
            len(earlier),
            sum(r.steps for r in earlier),
        )

    def sync(c: psycopg.Connection) -> None:
        db.sync_sequences(c, domain.serial_keys, planner.ids.high_water())

    last_sync = [time.monotonic()]

    def on_batch(tally: Tally) -> None:
        now = time.monotonic()
        if now - last_sync[0] >= _SEQUENCE_SYNC_S:
            _retrying(writer, sync)
            last_sync[0] = now
        if progress:
            progress(tally)

    setup = Tally()
    stream = Tally()
    try:
        writer.write_all(planner.setup(), setup, stop=stop, progress=on_batch)
        _retrying(writer, sync)
        if on_setup_done:
            on_setup_done(setup)
        if not stop.is_set():
            writer.write_paced(
                planner.stream(),
                stream,
                rate=options.rate,
                max_events=options.max_events,
                max_seconds=options.duration_s if options.rate is None else None,
                stop=stop,
                progress=on_batch,
            )
    finally:
        last = writer.conn
        if last is not None and not last.closed and not last.broken:
            sync(last)
    cases: dict[str, int] = {}
    if domain.truth_table:
        query = sql.SQL(
            "SELECT scenario, count(*) FROM {} WHERE case_id >= %s GROUP BY 1 ORDER BY 1"
        ).format(sql.Identifier(*domain.truth_table.split(".", 1)))
        start_id = bases.get(domain.truth_table, 1)
        rows = _retrying(writer, lambda c: c.execute(query, (start_id,)).fetchall())
        cases = {r[0]: int(r[1]) for r in rows}
    return RunSummary(
        domain=domain.name,
        options=options,
        setup=setup,
        stream=stream,
        sim_start=to_datetime(start_us),
        sim_end=to_datetime(max(stream.sim_us, start_us)),
        interrupted=stop.is_set(),
        hot_keys=list(planner.hot_keys),
        id_bases=bases,
        fraud_cases=cases,
        earlier_runs=earlier,
        reconnects=writer.reconnects,
        outage_s=writer.outage_s,
    )
