"""`changefold generate bank|arcade`: write a reproducible workload into Postgres."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import click

from engine.core.config import Settings
from engine.lab.workload.domains import DOMAINS

#: Exit status after Ctrl-C (128 + SIGINT), as shells report an interrupted program.
EXIT_INTERRUPTED = 130

_EPILOG = """\
\b
An event is one row inserted, updated or deleted in a captured table: one change
event on a Kafka topic. A transfer is 4 events (debit row, credit row, two balance
updates) committed in one Postgres transaction.

\b
Same seed, same rows: every value, id and timestamp comes from the seed and a
simulated clock (starting 2024-01-01 UTC, or after the newest row already there),
never from the wall clock. The run ends after rate x duration events; if Postgres
cannot keep up it takes longer and the summary says so.

\b
Ctrl-C finishes the transactions in hand, prints the summary and exits 130; a
second Ctrl-C stops at once (Postgres rolls back the open transaction). Either
way the database is consistent. Exit 1: Postgres unreachable, schema missing or a
write failed; exit 2: bad option.

\b
Postgres restarted during a run: the generator reconnects (a line per attempt,
for up to --reconnect-timeout seconds) and goes on at the first planned
transaction that did not commit; each run keeps its progress in
public.changefold_generate_runs, set in the same transaction as the rows. The
database ends exactly as an uninterrupted run leaves it.

\b
Running a seed again on the same database adds a new run after the earlier
ones (ids, time and uuids continue), as any second run does.

\b
Postgres is reached through CHANGEFOLD_PG_HOST / _PORT / _USER / _PASSWORD / _DATABASE
(defaults: the local stack of `changefold stack up`).
"""


@click.command(epilog=_EPILOG)
@click.argument("domain", type=click.Choice(sorted(DOMAINS)), metavar="bank|arcade")
@click.option(
    "--rate",
    type=float,
    default=100.0,
    show_default=True,
    help="Target events per second (an event = one captured row change).",
)
@click.option(
    "--duration",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds of traffic at the target rate; 0 runs until Ctrl-C.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Seed of the plan.")
@click.option(
    "--fraud-rate",
    type=float,
    default=0.02,
    show_default=True,
    help="bank: about this share of transactions belongs to injected fraud scenarios "
    "(labelled in bank.fraud_truth). 0 disables fraud.",
)
@click.option(
    "--hot-keys",
    type=float,
    default=0.0,
    show_default=True,
    help="Share (0-0.95) of activity sent to 3 hot keys: business accounts (bank) or "
    "players (arcade; share of match seats, levels off near 0.7), to make partition skew "
    "visible downstream.",
)
@click.option(
    "--population",
    type=int,
    default=300,
    show_default=True,
    help="Customers (bank) or players (arcade) created at the start of the run.",
)
@click.option(
    "--async-commit",
    is_flag=True,
    help="Set synchronous_commit=off for the generator's session: commits stay atomic and "
    "ordered but do not wait for the disk (several times the rate on slow disks).",
)
@click.option(
    "--reconnect-timeout",
    type=float,
    default=120.0,
    show_default=True,
    envvar="CHANGEFOLD_GENERATE_RECONNECT_S",
    show_envvar=True,
    help="When the connection to Postgres is lost (server restarted), keep trying to "
    "reconnect for this many seconds, then resume the plan at the next transaction; "
    "0 exits at once.",
)
@click.pass_obj
def generate(
    settings: Settings,
    domain: str,
    rate: float,
    duration: float,
    seed: int,
    fraud_rate: float,
    hot_keys: float,
    population: int,
    async_commit: bool,
    reconnect_timeout: float,
) -> None:
    """Write a realistic, reproducible workload into a demo domain's Postgres tables.

    bank: customers with habits (home country, typical amounts, favourite
    categories) make card purchases, withdrawals and transfers; holds settle,
    get reversed or expire; accounts are opened, frozen and closed. Known fraud
    patterns are injected and recorded in bank.fraud_truth (not captured).

    arcade: players play matches and score points; players get renamed and
    banned (their season's scores deleted), scores get corrected.

    A setup phase first creates the population (unpaced), then the stream runs
    at --rate with a live progress line.
    """
    from rich.console import Console

    from engine.lab.workload.progress import ProgressLine, summary_lines
    from engine.lab.workload.runner import WorkloadOptions, run_workload

    options = WorkloadOptions(
        domain=domain,
        rate=rate,
        duration_s=duration,
        seed=seed,
        fraud_rate=fraud_rate,
        hot_keys=hot_keys,
        population=population,
        async_commit=async_commit,
        reconnect_s=reconnect_timeout,
    )
    options.validate()
    console = Console(stderr=True)
    stop = threading.Event()
    with _stop_on_ctrl_c(stop), ProgressLine(console, domain, rate, duration) as line:
        summary = run_workload(
            settings,
            options,
            stop=stop,
            progress=lambda t: (
                line.setup_progress(t) if line.phase == "setup" else line.stream_progress(t)
            ),
            on_setup_done=line.setup_done,
        )
    for text in summary_lines(summary):
        click.echo(text)
    if summary.interrupted:
        sys.exit(EXIT_INTERRUPTED)


@contextmanager
def _stop_on_ctrl_c(stop: threading.Event) -> Iterator[None]:
    """First Ctrl-C asks the writer to stop after the transactions in hand; a second one
    raises KeyboardInterrupt at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
