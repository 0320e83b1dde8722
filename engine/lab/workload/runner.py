"""One generator run: check the database, plan, write setup and stream, report.

`run_workload` is what `changefold generate` calls; tests and benchmarks call it
directly with a `Settings` pointing at their own database.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from engine.core.config import Settings
from engine.core.errors import WorkloadError, WorkloadUsageError
from engine.lab.workload import db
from engine.lab.workload.domains import Domain, get_domain
from engine.lab.workload.plan import PlanConfig, to_datetime
from engine.lab.workload.writer import ProgressFn, Tally, Writer

log = logging.getLogger(__name__)

#: Seconds between moves of the key sequences during a run.
_SEQUENCE_SYNC_S = 1.0


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
    with db.connect(settings, async_commit=options.async_commit) as conn:
        try:
            return _run(conn, settings, domain, options, stop, progress, on_setup_done)
        except psycopg.Error as exc:
            raise WorkloadError(
                f"Postgres failed during the {domain.name} run: {str(exc).strip()}\n"
                "Every generated transaction commits or rolls back whole; the database is "
                "consistent. Check that the server is running (`changefold stack status`)."
            ) from exc


def _run(
    conn: psycopg.Connection,
    settings: Settings,
    domain: Domain,
    options: WorkloadOptions,
    stop: threading.Event,
    progress: ProgressFn | None,
    on_setup_done: ProgressFn | None,
) -> RunSummary:
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
    writer = Writer(conn)
    log.info(
        "%s: ids continue at %s, simulated clock at %s", domain.name, bases, to_datetime(start_us)
    )

    last_sync = [time.monotonic()]

    def on_batch(tally: Tally) -> None:
        now = time.monotonic()
        if now - last_sync[0] >= _SEQUENCE_SYNC_S:
            db.sync_sequences(conn, domain.serial_keys, planner.ids.high_water())
            last_sync[0] = now
        if progress:
            progress(tally)

    setup = Tally()
    stream = Tally()
    try:
        writer.write_all(planner.setup(), setup, stop=stop, progress=on_batch)
        db.sync_sequences(conn, domain.serial_keys, planner.ids.high_water())
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
        if not conn.closed and not conn.broken:
            db.sync_sequences(conn, domain.serial_keys, planner.ids.high_water())
    cases: dict[str, int] = {}
    if domain.truth_table:
        query = sql.SQL(
            "SELECT scenario, count(*) FROM {} WHERE case_id >= %s GROUP BY 1 ORDER BY 1"
        ).format(sql.Identifier(*domain.truth_table.split(".", 1)))
        start_id = bases.get(domain.truth_table, 1)
        cases = {r[0]: int(r[1]) for r in conn.execute(query, (start_id,)).fetchall()}
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
    )
