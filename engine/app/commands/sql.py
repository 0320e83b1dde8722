"""`changefold sql`: run one read-only query over the state and print the rows."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from engine.core.config import Settings
from engine.serve import output

log = logging.getLogger(__name__)


@click.command("sql")
@click.argument("query", metavar="SQL")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table: a readable table (on a terminal, long values wrap in their cells; piped "
    "or redirected, the table is as wide as its values: never cut); csv: header and "
    "rows; json: an array of row objects.",
)
@click.option(
    "--api",
    "api_url",
    metavar="URL",
    help="Ask the query API at URL only (default: the engine's API from CHANGEFOLD_API_HOST "
    "and CHANGEFOLD_API_PORT, falling back to the state file when no engine answers).",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Open this state file read-only and never ask the API for rows (while an engine "
    "holds the file, DuckDB allows one process on it: a snapshot the engine writes).",
)
@click.option(
    "--as-of",
    "as_of",
    metavar="TIME|LSN",
    help="Answer against the state as of this ISO time (source commit time) or source LSN "
    "(X/Y, as answers name their frontier; needs CHANGEFOLD_TRANSACTIONS=on): the change "
    "history is replayed until then into a cached file under <home>/replays/, built once "
    "per time or LSN and reused.",
)
@click.option(
    "--max-rows",
    type=click.IntRange(min=1),
    help="Show at most this many rows (default and ceiling: CHANGEFOLD_API_MAX_ROWS).",
)
@click.pass_obj
def sql(
    settings: Settings,
    query: str,
    fmt: str,
    api_url: str | None,
    state_path: Path | None,
    max_rows: int | None,
    as_of: str | None,
) -> None:
    """Run one read-only SQL statement over the engine's state and print the rows.

    SQL is a SELECT (or WITH, SHOW, DESCRIBE, SUMMARIZE, EXPLAIN); '-' reads it
    from standard input. Writes, file and network access, and extensions are
    refused. While the engine runs, the query goes through its API; with the
    engine stopped, the state file is opened read-only.

    Standard output holds the rows only; the source position the answer is
    consistent as of (the last Postgres transaction applied, read in the
    query's own snapshot) is printed on standard error.

    \b
    Examples:
      changefold sql "SHOW ALL TABLES"
      changefold sql "SELECT * FROM _changefold.offsets" --format csv
      echo "SELECT count(*) FROM _changefold.dead_letters" | changefold sql -
      changefold sql "SELECT * FROM live.leaderboard ORDER BY rank LIMIT 10"
      changefold sql --as-of 2026-11-26T10:15:00Z \\
        "SELECT * FROM live.leaderboard ORDER BY rank LIMIT 10"
    """
    if sum(x is not None for x in (api_url, state_path, as_of)) > 1:
        raise click.UsageError("give at most one of --api, --state and --as-of")
    if as_of is not None:
        from engine.app.build import state_writer
        from engine.ingest.topics import subscription
        from engine.replay.asof import state_as_of

        sub = subscription(settings.engine.topic_list, settings.connectors_dir)
        state_path = state_as_of(
            settings,
            as_of,
            lambda store, group: state_writer(settings, store, group, sub, views=True),
        )
    if query == "-":
        query = sys.stdin.read()
    payload = _answer(settings, query, api_url, state_path, max_rows)
    out = sys.stdout
    if fmt == "csv":
        output.write_csv(payload, out)
    elif fmt == "json":
        output.write_json(payload, out)
    else:
        output.print_table(payload, out)
    if payload.get("consistency"):
        click.secho(str(payload["consistency"]), dim=True, err=True)
    if payload.get("truncated"):
        click.secho(
            f"note: only the first {payload['row_count']} rows are shown; the result has "
            "more (raise --max-rows up to CHANGEFOLD_API_MAX_ROWS, or narrow the query)",
            fg="yellow",
            err=True,
        )


def _answer(
    settings: Settings,
    query: str,
    api_url: str | None,
    state_path: Path | None,
    max_rows: int | None,
) -> dict[str, Any]:
    from engine.app.commands.snapshot import readable
    from engine.serve.client import ApiClient

    if state_path is None:
        client = ApiClient(api_url or settings.api.url)
        if api_url or client.health() is not None:
            log.info("querying through the API at %s", client.url)
            return client.query(query, max_rows=max_rows)
    path = Path(state_path or settings.engine.state_path)
    log.info("no engine API answered; opening %s read-only", path)
    # A file the running engine holds (--state, or no API answered) is read through a
    # snapshot the engine writes.
    with readable(settings, path) as source:
        return _answer_file(settings, query, source, max_rows)


def _answer_file(
    settings: Settings, query: str, path: Path, max_rows: int | None
) -> dict[str, Any]:
    from engine.serve import formats
    from engine.serve.query import run_query
    from engine.state import frontier
    from engine.state.reader import StateReader

    reader = StateReader.open_file(path)
    try:
        limit = min(max_rows or settings.api.api_max_rows, settings.api.api_max_rows)
        # A state file does not say which group wrote it, nor with which settings:
        # the most recently updated frontier.
        result = run_query(
            reader,
            query,
            max_rows=limit,
            timeout_s=settings.api.api_statement_timeout_s,
            scope=frontier.Scope(),
        )
    finally:
        reader.close()
    return formats.to_payload(result)
