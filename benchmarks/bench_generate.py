"""Maximum sustained generation rate of `changefold generate` on this machine.

Runs each domain unpaced (as fast as Postgres takes it) for a fixed wall-clock
duration into a scratch database on the configured Postgres (CHANGEFOLD_PG_*,
default: the local stack), once with the default synchronous commits and once
with --async-commit, and prints events/s (an event = one captured row change).
The planner alone (no Postgres) is measured too, as the upper bound.

    .venv/bin/python benchmarks/bench_generate.py [--duration 20] [--domain bank]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

import psycopg
from psycopg import sql

from engine.core.config import Settings
from engine.core.errors import ChangefoldError
from engine.lab.workload.domains import DOMAINS
from engine.lab.workload.plan import PlanConfig
from engine.lab.workload.runner import WorkloadOptions, run_workload


def scratch_database(settings: Settings) -> Settings:
    name = f"cf_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.stack.pg_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    scratch = settings.with_(pg_database=name)
    with psycopg.connect(scratch.stack.pg_conninfo()) as conn:
        for path in sorted(scratch.source_sql_dir.glob("*.sql")):
            conn.execute(path.read_bytes())
    return scratch


def drop_database(settings: Settings, scratch: Settings) -> None:
    with psycopg.connect(settings.stack.pg_conninfo("postgres"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(scratch.stack.pg_database)
            )
        )


def planner_rate(domain: str, seconds: float) -> float:
    """Events/s the planner produces with no database at all."""
    planner = DOMAINS[domain].planner(PlanConfig(seed=1))
    list(planner.setup())
    events, start = 0, time.perf_counter()
    stream = planner.stream()
    while time.perf_counter() - start < seconds:
        for _ in range(1000):
            events += next(stream).events
    return events / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--domain", choices=sorted(DOMAINS), action="append")
    args = parser.parse_args()
    domains = args.domain or sorted(DOMAINS)
    settings = Settings.from_env()
    print(
        f"Postgres {settings.stack.pg_host}:{settings.stack.pg_port}, {args.duration:g} s per run"
    )
    print(f"{'domain':<8} {'commit':<7} {'events/s':>10} {'txns/s':>9} {'events':>9}")
    try:
        for domain in domains:
            for async_commit in (False, True):
                scratch = scratch_database(settings)
                try:
                    summary = run_workload(
                        scratch,
                        WorkloadOptions(
                            domain,
                            rate=None,
                            duration_s=args.duration,
                            async_commit=async_commit,
                        ),
                    )
                finally:
                    drop_database(settings, scratch)
                st = summary.stream
                mode = "async" if async_commit else "sync"
                print(
                    f"{domain:<8} {mode:<7} {st.rate:>10,.0f} {st.txns / st.seconds:>9,.0f} "
                    f"{st.events:>9,}",
                    flush=True,
                )
            rate = planner_rate(domain, min(args.duration, 5.0))
            print(f"{domain:<8} {'(plan)':<7} {rate:>10,.0f}", flush=True)
    except (ChangefoldError, psycopg.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
