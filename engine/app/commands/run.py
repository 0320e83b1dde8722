"""`changefold run`, `changefold dlq` and `changefold bench fold`."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import click

from engine.core.config import Settings

_RUN_EPILOG = """\
Settings (flag, environment variable, default):

\b
  --group        CHANGEFOLD_GROUP_ID            changefold
  --state        CHANGEFOLD_STATE_PATH          <home>/engine/state.duckdb
  --topic        CHANGEFOLD_TOPICS              every <prefix>.<schema>.<table> topic
                                                of the prefixes in connectors/*.json
  --workers      CHANGEFOLD_WORKERS             1
  (API)          CHANGEFOLD_API_PORT            58000 (on CHANGEFOLD_API_HOST 127.0.0.1)
  (Postgres)     CHANGEFOLD_PGWIRE_PORT         55433 (0: not served; user/database changefold)
  --commit       CHANGEFOLD_COMMIT_MODE         sync
  --max-records  CHANGEFOLD_BATCH_MAX_RECORDS   20000
  --max-bytes    CHANGEFOLD_BATCH_MAX_BYTES     67108864
  --max-wait-ms  CHANGEFOLD_BATCH_MAX_WAIT_MS   200
                 CHANGEFOLD_CONSUMER_SESSION_TIMEOUT_MS  10000

Exit codes: 0 stopped by SIGINT/SIGTERM (or --idle-exit), 3 state file locked by
another process, 4 Kafka unreachable (after CHANGEFOLD_KAFKA_WAIT_S), 5 a --topic
does not exist, 1 other errors.
"""


@click.command(epilog=_RUN_EPILOG)
@click.option("--topic", "topics", multiple=True, help="Topic to follow (repeatable).")
@click.option("--group", "group_id", help="Consumer group id.")
@click.option("--state", "state_path", type=click.Path(path_type=Path), help="DuckDB state file.")
@click.option("--workers", type=click.IntRange(min=1), help="Group members in this process.")
@click.option(
    "--commit",
    "commit_mode",
    type=click.Choice(["sync", "async"]),
    help="Kafka offset commit after each batch: sync waits for it, async does not.",
)
@click.option("--max-records", "batch_max_records", type=click.IntRange(min=1))
@click.option("--max-bytes", "batch_max_bytes", type=click.IntRange(min=1))
@click.option("--max-wait-ms", "batch_max_wait_ms", type=click.IntRange(min=1))
@click.option(
    "--api/--no-api",
    "serve_api",
    default=True,
    show_default=True,
    help="Serve the read-only query API (dashboards, `changefold sql`) on CHANGEFOLD_API_PORT "
    "and the Postgres endpoint (psql, JDBC) on CHANGEFOLD_PGWIRE_PORT.",
)
@click.option(
    "--idle-exit",
    type=click.FloatRange(min=0),
    help="Exit (0) once no record arrived for this many seconds: for scripts and tests.",
)
@click.pass_obj
def run(
    settings: Settings,
    idle_exit: float | None,
    serve_api: bool,
    topics: tuple[str, ...],
    **flags: Any,
) -> None:
    """Keep the DuckDB state equal to the captured Postgres tables.

    Joins the consumer group, follows the captured tables' topics and folds
    their Debezium change events, in micro-batches, into one mirror table per
    source table (<topic prefix>.<table>, e.g. bank.accounts). Each batch's
    rows, dead letters, metrics and consumed offsets commit in ONE DuckDB
    transaction, and every partition resumes from the offsets stored there:
    crashes, restarts, rebalances and redelivered events never lose or
    double-apply a change. Events that cannot be decoded or applied go to the
    dead letters (`changefold dlq`).

    SIGINT/SIGTERM finish the batch in hand, commit it and exit 0.
    """
    # DuckDB, Polars, kafka-python and the web framework load here, not for --help.
    from engine.app.build import engine_runner
    from engine.ingest.topics import subscription
    from engine.serve import start_api
    from engine.state.reader import StateReader
    from engine.state.store import Store

    overrides = {k: v for k, v in flags.items() if v is not None}
    if topics:
        overrides["topics"] = ",".join(topics)
    settings = settings.with_(**overrides)
    sub = subscription(settings.engine.topic_list, settings.connectors_dir)
    with Store(settings.engine.state_path) as store:
        store.migrate(settings.state_sql_dir)
        runner = engine_runner(settings, store, sub, echo=click.echo, idle_exit_s=idle_exit)
        click.echo(
            f"changefold engine: group {settings.engine.group_id!r}, "
            f"state {settings.engine.state_path}, "
            f"{settings.engine.workers} member(s), commit {settings.engine.commit_mode}; following "
            f"{sub.describe()} on {settings.stack.bootstrap_servers}"
        )
        # The read-only query API shares this process's database (DuckDB has one
        # writer process); it stops before the store closes.
        api = start_api(settings, StateReader.for_store(store)) if serve_api else None
        if api is not None:
            click.echo(f"query API on {api.url}")
        pg = None
        try:
            pg = _start_pgwire(settings, store) if serve_api else None
            runner.start_members()
            stats = runner.run()
        finally:
            if pg is not None:
                pg.stop()
            if api is not None:
                api.stop()
    click.echo(
        f"stopped: {stats.batches} batches, {stats.records} records, {stats.upserts} upserts, "
        f"{stats.deletes} deletes, {stats.dead_letters} dead letters"
    )


def _start_pgwire(settings: Settings, store: Any) -> Any:
    """The read-only Postgres endpoint (engine/serve/pgwire.py), unless its port is 0."""
    from engine.serve import pgwire
    from engine.state.reader import StateReader

    if not pgwire.enabled(settings):
        return None
    handle = pgwire.start_pgwire(settings, StateReader.for_store(store))
    click.echo(f"Postgres endpoint on {handle.url} (psql, JDBC, Grafana; read-only)")
    return handle


@click.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--topic", help="Only dead letters of this topic.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.option("--state", "state_path", type=click.Path(path_type=Path), help="DuckDB state file.")
@click.pass_obj
def dlq(settings: Settings, limit: int, topic: str | None, as_json: bool, state_path: Path | None):
    """List dead letters, newest first: change events the engine could not decode or
    apply, with topic, partition, offset, key, raw value, the reason and when.

    Opens the state file read-only; while `changefold run` holds it (DuckDB
    allows one process), stop the engine first.
    """
    from rich.console import Console
    from rich.table import Table

    from engine.state import deadletters
    from engine.state.store import Store

    path = state_path or settings.engine.state_path
    if not Path(path).exists():
        raise click.ClickException(f"no state file at {path}: run `changefold run` first")
    with Store(path, read_only=True) as store:
        store.migrate(settings.state_sql_dir)
        with store.reading() as conn:
            letters = deadletters.listing(conn, limit=limit, topic=topic)
    if as_json:
        for d in letters:
            click.echo(
                json.dumps(
                    {
                        "id": d.id,
                        "failed_at": d.failed_at.isoformat(),
                        "group_id": d.group_id,
                        "topic": d.topic,
                        "partition": d.partition,
                        "offset": d.offset,
                        "stage": d.stage,
                        "error": d.error,
                        **_bytes_field("key", d.key),
                        **_bytes_field("value", d.value),
                    }
                )
            )
        return
    if not letters:
        click.echo("no dead letters")
        return
    table = Table(title=f"dead letters ({len(letters)} newest)")
    for col in ("id", "failed at", "topic[partition]@offset", "stage", "error", "key", "value"):
        table.add_column(col, overflow="fold")
    for d in letters:
        table.add_row(
            str(d.id),
            d.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{d.topic}[{d.partition}]@{d.offset}",
            d.stage,
            d.error,
            _preview(d.key),
            _preview(d.value),
        )
    Console().print(table)


def _bytes_field(name: str, data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {name: None}
    try:
        return {name: data.decode()}
    except UnicodeDecodeError:
        return {name: None, f"{name}_base64": base64.b64encode(data).decode()}


def _preview(data: bytes | None, size: int = 60) -> str:
    if data is None:
        return "(none)"
    text = data.decode(errors="replace")
    return text if len(text) <= size else text[: size - 3] + "..."


@click.group()
def bench() -> None:
    """Benchmarks that print figures (not tests)."""


@bench.command("fold")
@click.option(
    "--events",
    default=1_000_000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Change events in the topic (deletes add a tombstone each).",
)
@click.option("--topic", help="Reuse this topic (else a new one is created and filled).")
@click.option("--partitions", default=3, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--commit",
    "commit_mode",
    type=click.Choice(["sync", "async"]),
    default="sync",
    show_default=True,
    help="Kafka offset commit mode of the engine run.",
)
@click.option(
    "--baseline-records",
    default=20_000,
    show_default=True,
    type=click.IntRange(min=100),
    help="Records the naive baseline processes.",
)
@click.option("--keep-topic", is_flag=True, help="Do not delete a topic created by this run.")
@click.pass_obj
def bench_fold(
    settings: Settings,
    events: int,
    topic: str | None,
    partitions: int,
    commit_mode: str,
    baseline_records: int,
    keep_topic: bool,
) -> None:
    """Replay >= 1M synthetic bank.transactions change events (the bank connector's exact
    envelope: embedded schemas, precise decimals, REPLICA IDENTITY FULL) into a fresh
    state, and print events/s end to end, the raw kafka-python consume rate of the same
    topic, the engine's peak RSS and the rate of a naive baseline (json.loads per message,
    one upsert per row). Needs a running Kafka (`changefold stack up`)."""
    from engine.lab import bench as b

    echo = click.echo
    if topic is not None and topic.count(".") != 2:
        raise click.BadParameter(
            f"{topic!r} is not a change-event topic name (<prefix>.<schema>.<table>)",
            param_hint="--topic",
        )
    created = topic is None
    name, records = b.ensure_topic(settings, topic, events, partitions, echo)
    try:
        echo("raw kafka-python consume ...")
        raw = b.raw_consume(settings, name)
        echo(f"engine replay (changefold run, commit {commit_mode}) ...")
        run_ = b.engine_replay(settings, [name], commit_mode, echo)
        echo(f"naive baseline on {baseline_records:,} records ...")
        naive = b.naive_baseline(settings, name, baseline_records)
    finally:
        if created and not keep_topic:
            b.delete_topic(settings, name)
    ratio = run_.rate.per_second / raw.per_second if raw.per_second else 0.0
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    echo(
        f"\nchangefold bench fold: {name}, {records:,} records "
        f"({run_.change_events:,} change events folded), {os.cpu_count()} CPUs, "
        f"load average {load}"
    )
    echo(
        b.describe(
            [
                (
                    "raw consume",
                    f"{raw.per_second:,.0f} records/s ({raw.mb_per_second:,.0f} MB/s, "
                    f"{raw.records:,} records in {raw.seconds:.1f} s)",
                ),
                (
                    "engine end to end",
                    f"{run_.rate.per_second:,.0f} records/s "
                    f"({run_.rate.mb_per_second:,.0f} MB/s, {run_.rate.records:,} "
                    f"records in {run_.rate.seconds:.1f} s, {run_.batches} batches "
                    f"of {run_.mean_batch_records:,.0f})",
                ),
                ("engine / raw", f"{ratio:.2f}x"),
                (
                    "CPU per record",
                    f"raw {raw.cpu_us_per_record:,.0f} us, "
                    f"engine {run_.rate.cpu_us_per_record:,.0f} us "
                    f"(whole process: start-up and idle exit included), naive "
                    f"{naive.cpu_us_per_record:,.0f} us",
                ),
                (
                    "CPU-normalized",
                    f"engine / raw "
                    f"{raw.cpu_us_per_record / max(run_.rate.cpu_us_per_record, 1e-9):.2f}x "
                    "(what the wall-clock ratio would be if each ran alone on one core)",
                ),
                ("engine peak RSS", f"{run_.peak_rss_bytes / 2**20:,.0f} MiB"),
                ("kafka commit", f"{commit_mode}, {run_.mean_commit_ms:.1f} ms per batch"),
                (
                    "naive baseline",
                    f"{naive.per_second:,.0f} records/s ({naive.records:,} records "
                    f"in {naive.seconds:.1f} s); engine is "
                    f"{run_.rate.per_second / max(naive.per_second, 1e-9):,.0f}x",
                ),
            ]
        )
    )
    target = run_.rate.per_second >= 50_000 and ratio >= 0.5
    echo(f"targets (>= 50,000 records/s and >= 0.5x raw): {'met' if target else 'NOT met'}")
