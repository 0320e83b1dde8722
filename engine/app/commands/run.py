"""`changefold run`: the engine, its API and its Postgres endpoint."""

from __future__ import annotations

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
    help="Exit (0) once every member read its partitions to their end and no record "
    "arrived for this many seconds (never while a member rejoins the group): for scripts "
    "and tests.",
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
