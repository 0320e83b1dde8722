"""`changefold bench`: benchmarks that print figures (not tests)."""

from __future__ import annotations

import os
import time

import click

from engine.core.config import Settings


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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["json", "avro", "both"]),
    default="json",
    show_default=True,
    help="Wire format of the events: json (the JsonConverter's envelope, schema "
    "embedded), avro (Confluent-framed Avro, schemas in the stack's registry: needs a "
    "stack started with CHANGEFOLD_FORMAT=avro), or both: a topic of each with the same "
    "events, measured in the same run and printed side by side.",
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
    fmt: str,
    keep_topic: bool,
) -> None:
    """Replay >= 1M synthetic bank.transactions change events (the bank connector's exact
    envelope: embedded schemas, precise decimals, REPLICA IDENTITY FULL) into a fresh
    state, and print events/s end to end, the raw kafka-python consume rate of the same
    topic, CPU per record of each, bytes per event, the engine's peak RSS and the rate
    of a naive baseline (one parse per message, one upsert per row). With --format avro
    the same events travel as Confluent-framed Avro (schemas registered in the stack's
    registry) and the engine replays them with format avro; --format both measures
    both formats in one run. Needs a running Kafka (`changefold stack up`)."""
    from engine.lab import bench as b

    echo = click.echo
    if topic is not None and topic.count(".") != 2:
        raise click.BadParameter(
            f"{topic!r} is not a change-event topic name (<prefix>.<schema>.<table>)",
            param_hint="--topic",
        )
    if topic is not None and fmt == "both":
        raise click.BadParameter(
            "--topic holds one format: give --format json or avro with it", param_hint="--topic"
        )
    formats = ["json", "avro"] if fmt == "both" else [fmt]
    if "avro" in formats:
        problem = b.check_registry(settings)
        if problem:
            raise click.UsageError(f"--format {fmt}: {problem}")
    created = topic is None
    topics: dict[str, tuple[str, int]] = {}
    figures = []
    try:
        for f in formats:
            topics[f] = b.ensure_topic(settings, topic, events, partitions, echo, f)
        for f in formats:
            name, _records = topics[f]
            figures.append(b.measure(settings, name, f, commit_mode, baseline_records, echo))
    finally:
        if created and not keep_topic:
            for f, (name, _records) in topics.items():
                b.delete_topic(settings, name, f)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    echo(
        f"\nchangefold bench fold --format {fmt}: {events:,} synthetic change events per "
        f"topic, {os.cpu_count()} CPUs, load average {load}"
    )
    for m in figures:
        run_, raw, naive = m.engine, m.raw, m.naive
        echo(
            f"\n[{m.fmt}] {m.topic}, {raw.records:,} records ({m.events:,} change events, "
            f"{run_.change_events:,} upserts and deletes applied)"
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
                        f"{run_.rate.per_second:,.0f} records/s, "
                        f"{m.events_per_second:,.0f} change events/s "
                        f"({run_.rate.mb_per_second:,.0f} MB/s, {run_.rate.records:,} "
                        f"records in {run_.rate.seconds:.1f} s, {run_.batches} batches "
                        f"of {run_.mean_batch_records:,.0f})",
                    ),
                    ("engine / raw", f"{m.wall_ratio:.2f}x"),
                    (
                        "bytes",
                        f"{m.bytes_per_record:,.0f} per record (key + value), "
                        f"{m.bytes_per_event:,.0f} per change event",
                    ),
                    (
                        "CPU per record",
                        f"raw {raw.cpu_us_per_record:,.1f} us, "
                        f"engine {run_.rate.cpu_us_per_record:,.1f} us "
                        f"(whole process: start-up and idle exit included; "
                        f"{m.cpu_ratio:.2f}x raw), naive {naive.cpu_us_per_record:,.0f} us",
                    ),
                    (
                        "CPU-normalized",
                        f"engine / raw {1 / max(m.cpu_ratio, 1e-9):.2f}x "
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
        target = run_.rate.per_second >= 50_000 and m.wall_ratio >= 0.5
        echo(f"targets (>= 50,000 records/s and >= 0.5x raw): {'met' if target else 'NOT met'}")
    if len(figures) > 1:
        echo("\njson vs avro (same events, same run):")
    echo(b.compare(figures))


@bench.command("latency")
@click.option(
    "--rate",
    default=2000.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Bank generator target, change events per second.",
)
@click.option(
    "--duration",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds measured (after the warm-up).",
)
@click.option(
    "--warmup",
    default=15.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds of traffic first, not counted (the generator's setup burst, the "
    "engine's first batches).",
)
@click.option(
    "--probe-ms",
    default=50.0,
    show_default=True,
    type=click.FloatRange(min=5),
    help="How often the probe asks the query API for the frontier.",
)
@click.option("--seed", default=None, type=int, help="Generator seed (default: from the clock).")
@click.option(
    "--population",
    default=300,
    show_default=True,
    type=click.IntRange(min=10),
    help="Bank customers the generator creates at the start.",
)
@click.option(
    "--max-wait-ms",
    default=None,
    type=click.IntRange(min=1),
    help="The engine's poll wait (else CHANGEFOLD_BATCH_MAX_WAIT_MS, 200).",
)
@click.option(
    "--async-commit",
    is_flag=True,
    help="The generator's sessions with synchronous_commit=off (when Postgres cannot "
    "reach --rate waiting for the disk; a commit reaches Debezium once the WAL writer "
    "flushes it).",
)
@click.pass_obj
def bench_latency(
    settings: Settings,
    rate: float,
    duration: float,
    warmup: float,
    probe_ms: float,
    seed: int | None,
    population: int,
    max_wait_ms: int | None,
    async_commit: bool,
) -> None:
    """Freshness at the live tail: the bank generator writes --rate events/s through
    Postgres and Debezium while `changefold run` (a child process, fresh state file,
    fresh consumer group, started at the topics' current ends) folds them.

    \b
    Prints, for the --duration seconds after --warmup:
      freshness p50/p95/p99 per event: source commit time (the END record's ts_ms)
        to the moment a query first sees the transaction (a probe asks the API
        `SELECT 1` every --probe-ms; every answer names its frontier LSN);
      of which commit -> Kafka: the END record's CreateTime (Debezium's part);
      batch records, decode, fold and Kafka commit ms percentiles (_changefold.batches);
      events/s committed in Postgres and made visible by the engine;
      CPU (user + system) of the engine process per visible event.

    Needs a running stack (`changefold stack up`) and a free CHANGEFOLD_API_PORT;
    writes to the bank tables of its Postgres. Figures, not a test: the machine's
    other load shows in them (the load average is printed)."""
    from engine.lab import latency

    opts = latency.Options(
        rate=rate,
        duration=duration,
        warmup=warmup,
        probe_ms=probe_ms,
        seed=seed if seed is not None else int(time.time()) % 1_000_000,
        population=population,
        max_wait_ms=max_wait_ms,
        async_commit=async_commit,
    )
    text = latency.run(settings, opts, click.echo)
    click.echo(f"\nchangefold bench latency: bank at {rate:,.0f} events/s, {os.cpu_count()} CPUs")
    click.echo(text)


@bench.command("api")
@click.option(
    "--hostile",
    is_flag=True,
    required=True,
    help="Run the hostile-query benchmark (the only kind there is; required, so that a "
    "bare `bench api` does not start load by surprise).",
)
@click.option(
    "--rate",
    default=200.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Bank generator target, change events per second, for the whole run.",
)
@click.option(
    "--queries",
    "-n",
    default=50,
    show_default=True,
    type=click.IntRange(min=1, max=500),
    help="Hostile clients in the hostile phase, each sending one query after another.",
)
@click.option(
    "--duration",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=5),
    help="Seconds of each phase (before, hostile, after). A smoke run: --duration 15 "
    "--warmup 8 (under 2 minutes).",
)
@click.option(
    "--warmup",
    default=15.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds of traffic first, not counted.",
)
@click.option("--seed", default=None, type=int, help="Generator seed (default: from the clock).")
@click.option(
    "--population",
    default=300,
    show_default=True,
    type=click.IntRange(min=10),
    help="Bank customers the generator creates at the start.",
)
@click.option(
    "--engine-env",
    "engine_env",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting of the engine child only (repeatable), to compare e.g. "
    "CHANGEFOLD_API_MAX_CONCURRENT_QUERIES=2 or CHANGEFOLD_API_QUERY_NICE=0 in runs "
    "of the same command.",
)
@click.pass_obj
def bench_api(
    settings: Settings,
    hostile: bool,
    rate: float,
    queries: int,
    duration: float,
    warmup: float,
    seed: int | None,
    population: int,
    engine_env: tuple[str, ...],
) -> None:
    """Folding under hostile queries: the bank generator writes --rate events/s through
    Postgres and Debezium while `changefold run` (a child process, fresh state file and
    consumer group, started at the topics' current ends) folds them, in three phases of
    --duration seconds after --warmup: before (no query load), hostile (--queries
    clients sending texts up to the SQL length limit, IN lists, list(range(200M)),
    repeat('x', 1e9), a cross join that runs to the statement timeout, big results,
    and texts over the SQL and body limits), after (from the last hostile answer).

    \b
    Prints a row per phase:
      events/s          change events folded (committed in DuckDB) per second;
      fresh p50/p95/p99 per event, source commit -> the batch that folded it committed
                        (ENDs from bank.transaction, batches from _changefold.batches,
                        both read after the run);
      batches, fold us/rec  batches finished; decode + fold wall time per record;
      RSS peak, CPU, CPU us/event  of the engine process (queries included);
      answered/refused/stopped/failed  the hostile answers received in the phase, then
                        by which limit (body size, SQL length, query slots, timeout,
                        memory, result size); the slowest refusal's answer time.
    And the hostile phase against the one before as ratios: on a shared machine
    compare those, not wall-clock figures of different runs.

    Needs a running stack (`changefold stack up`) and a free CHANGEFOLD_API_PORT;
    writes to the bank tables of its Postgres; the load stops by itself. Figures, not
    a test."""
    from engine.lab import hostile as h

    del hostile  # required flag
    try:
        extra = h.parse_env(engine_env)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--engine-env") from None
    opts = h.Options(
        rate=rate,
        duration=duration,
        warmup=warmup,
        queries=queries,
        seed=seed if seed is not None else int(time.time()) % 1_000_000,
        population=population,
        engine_env=extra,
    )
    head = h.header(settings, opts)
    figures, answers, where = h.run(settings, opts, click.echo)
    click.echo(f"\n{head}")
    click.echo(h.table(figures))
    click.echo("hostile queries, by kind:")
    click.echo(h.by_query(answers))
    click.echo(h.ratios(figures))
    click.echo(where)
