"""`changefold replay` and `changefold diff`."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from engine.core.config import Settings

if TYPE_CHECKING:
    from rich.progress import Progress

    from engine.replay.diff import StateDiff

_REPLAY_EPILOG = """\
Examples:

\b
  changefold replay --into rebuilt.duckdb
  changefold replay --into past.duckdb --until 2026-11-26T10:15:00Z
  changefold replay --into tail.duckdb --from 2026-11-26T09:00:00Z
  changefold replay --into part.duckdb --from offsets.json   # {"topic": {"0": 123}}
  changefold diff rebuilt.duckdb live-copy.duckdb

Exit codes: 0 complete, 130 interrupted (run the same command to continue),
2 bad bounds or target file, 4 Kafka unreachable.
"""


@click.command(epilog=_REPLAY_EPILOG)
@click.option(
    "--into",
    "target",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The state file to build (a new path, or an unfinished replay of the same command).",
)
@click.option(
    "--from",
    "from_",
    default="earliest",
    show_default=True,
    help="earliest, an ISO time (Kafka record time), or an offsets JSON file.",
)
@click.option(
    "--until",
    default="latest",
    show_default=True,
    help="latest (the end of the topics when the replay began), an ISO time: the state "
    "as of that source commit time, or a source LSN (X/Y, as the frontier shows it): the "
    "state after the last transaction whose END is at or before it.",
)
@click.option("--topic", "topics", multiple=True, help="Replay only this topic (repeatable).")
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs and scripts).")
@click.pass_obj
def replay(
    settings: Settings,
    target: Path,
    from_: str,
    until: str,
    topics: tuple[str, ...],
    no_progress: bool,
) -> None:
    """Rebuild state from the CDC history kept in Kafka into a separate DuckDB file.

    Uses the same decode, fold and views as `changefold run`, with its own
    consumer (no consumer group, no Kafka commits): the live engine is not
    disturbed. Ctrl-C finishes the batch in hand and leaves a resumable file:
    run the same command again to continue. A finished replay is left as is.
    """
    from engine.app.build import replay_job
    from engine.ingest.topics import subscription
    from engine.replay.bounds import parse_start, parse_until

    sub = subscription(topics or settings.engine.topic_list, settings.connectors_dir)
    job = replay_job(settings, target, sub, parse_start(from_), parse_until(until))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_signal)
    previous_term = signal.signal(signal.SIGTERM, on_signal)
    bar = None if no_progress else _progress()
    task = bar.add_task("replay", total=None) if bar is not None else None

    def on_progress(done: int, total: int) -> None:
        if bar is not None and task is not None:
            bar.start()  # shown once the bounds are known (an error before prints alone)
            bar.update(task, completed=done, total=total)

    try:
        result = job.run(stop, on_progress)
    finally:
        if bar is not None:
            bar.stop()
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
    if result.complete and result.events == 0 and result.resumed:
        click.echo(f"{target} is complete: {result.meta.describe()}")
        return
    click.echo(
        f"{'resumed, ' if result.resumed else ''}{result.events} events in {result.batches} "
        f"batches, {result.seconds:.1f} s ({result.rate:,.0f} events/s) into {target}"
    )
    if not result.complete:
        click.echo("interrupted: run the same command again to continue", err=True)
        raise SystemExit(130)


def _progress() -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class _RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.speed or 0:>9,.0f} events/s")

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


@click.command()
@click.argument("a", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("b", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--exclude", multiple=True, help="Skip this table (schema.table; repeatable).")
@click.option(
    "--ignore-column",
    "ignore_columns",
    multiple=True,
    help="Leave this column out of the comparison (repeatable), e.g. a detection time.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def diff(
    settings: Settings,
    a: Path,
    b: Path,
    exclude: tuple[str, ...],
    ignore_columns: tuple[str, ...],
    as_json: bool,
) -> None:
    """Compare two state files table by table: rows only in A, only in B, and rows whose
    values differ (matched on the primary key), with a sample of each.

    Exits 0 when they are equal, 1 when they differ: the tool to check a rebuilt
    or shadow state against the live one. A file the running engine holds is read
    through a snapshot the engine writes on request (`changefold snapshot`), and
    standard error says which source position it is consistent as of.
    """
    from engine.app.commands.snapshot import readable
    from engine.replay.diff import diff_states

    with readable(settings, a) as source_a, readable(settings, b) as source_b:
        result = diff_states(source_a, source_b, exclude=exclude, ignore_columns=ignore_columns)
    result.a, result.b = a, b
    if as_json:
        click.echo(json.dumps(_as_dict(result), indent=2, default=str))
    else:
        _print(result)
    raise SystemExit(1 if result.differs else 0)


def _as_dict(result: StateDiff) -> dict[str, Any]:
    return {
        "a": str(result.a),
        "b": str(result.b),
        "differs": result.differs,
        "tables": [
            {
                "table": t.table,
                "only_in_a": t.only_a,
                "only_in_b": t.only_b,
                "changed": t.changed,
                "note": t.note,
                "samples": t.samples,
            }
            for t in result.tables
        ],
    }


def _print(result: StateDiff) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"A = {result.a}   B = {result.b}")
    for col in ("table", "only in A", "only in B", "changed", "note"):
        table.add_column(col)
    for t in result.tables:
        style = "red" if t.differs else "green"
        table.add_row(
            f"[{style}]{t.table}[/]", str(t.only_a), str(t.only_b), str(t.changed), t.note
        )
    console.print(table)
    for t in result.tables:
        for kind, rows in t.samples.items():
            console.print(f"[bold]{t.table}[/] {kind.replace('_', ' ')} (sample):")
            for row in rows:
                console.print(f"  {row}")
    console.print("[red]states differ[/]" if result.differs else "[green]states are equal[/]")
