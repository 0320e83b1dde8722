"""`changefold dlq`: the dead letters of a state file."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import click

from engine.core.config import Settings


@click.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--topic", help="Only dead letters of this topic.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.option("--state", "state_path", type=click.Path(path_type=Path), help="DuckDB state file.")
@click.option(
    "--redrive",
    is_flag=True,
    help="Apply the dead letters (all, or --topic, or --id) again after a fix; the engine "
    "must be stopped.",
)
@click.option(
    "--id",
    "ids",
    multiple=True,
    type=int,
    help="With --redrive: only this dead letter (repeatable).",
)
@click.option(
    "--dry-run", is_flag=True, help="With --redrive: say what would be done, change nothing."
)
@click.pass_obj
def dlq(
    settings: Settings,
    limit: int,
    topic: str | None,
    as_json: bool,
    state_path: Path | None,
    redrive: bool,
    ids: tuple[int, ...],
    dry_run: bool,
) -> None:
    """List dead letters, newest first: change events the engine could not decode or
    apply, with topic, partition, offset, key, raw value, the reason and when.

    Opens the state file read-only; while `changefold run` holds it (DuckDB
    allows one process), reads a snapshot the engine writes on request
    (`changefold snapshot`), and says on standard error which source position
    it is consistent as of.

    With --redrive (the engine stopped: it writes the state file), each selected dead
    letter of the engine's group is decoded again and the ones that now decode are
    folded as one batch (mirrors and derived views; no partition's position moves);
    one that fails again comes back with today's reason. A dead letter whose key
    changed later in its partition is superseded: removed, not applied, since it
    would put an old row over a newer one. Kafka is read from each dead letter up to
    the state's position to know (it must be reachable). Transaction records and
    tombstones are left as they are. Exit 0 when nothing failed again, 1 otherwise.
    """
    if redrive:
        _redrive(settings, state_path, topic, ids, dry_run)
        return
    if ids or dry_run:
        raise click.UsageError("--id and --dry-run go with --redrive")
    from rich.console import Console
    from rich.table import Table

    from engine.app.commands.snapshot import readable
    from engine.state import deadletters
    from engine.state.store import Store

    path = state_path or settings.engine.state_path
    if not Path(path).exists():
        raise click.ClickException(f"no state file at {path}: run `changefold run` first")
    with readable(settings, Path(path)) as source, Store(source, read_only=True) as store:
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


def _redrive(
    settings: Settings,
    state_path: Path | None,
    topic: str | None,
    ids: tuple[int, ...],
    dry_run: bool,
) -> None:
    from engine.app import build
    from engine.decode.decoder import Decoder
    from engine.replay import redrive
    from engine.state import deadletters, offsets
    from engine.state.store import Store

    path = Path(state_path or settings.engine.state_path)
    if not path.exists():
        raise click.ClickException(f"no state file at {path}: run `changefold run` first")
    group = settings.engine.group_id
    with Store(path) as store:
        store.migrate(settings.state_sql_dir)
        with store.reading() as conn:
            letters = deadletters.selection(conn, group, topic=topic, ids=list(ids))
            positions = offsets.load(conn, group)
            dead = deadletters.positions(conn, group)
        missing = sorted(set(ids) - {d.id for d in letters})
        if missing:
            raise click.ClickException(
                f"no dead letter of group {group!r} with id {', '.join(map(str, missing))}"
                + (f" in topic {topic}" if topic else "")
            )
        if not letters:
            click.echo(f"no dead letters of group {group!r} to redrive")
            return
        click.echo(
            f"reading the history after {len(letters)} dead letter(s) to check their keys ...",
            err=True,
        )
        plan = redrive.plan(letters, positions, dead, build.history_reader(settings))
        for d in plan.apply:
            click.echo(f"apply      #{d.id} {d.topic}[{d.partition}]@{d.offset}")
        for d in plan.superseded:
            click.echo(
                f"superseded #{d.id} {d.topic}[{d.partition}]@{d.offset}: "
                "its key changed later in the partition"
            )
        for d, why in plan.skipped:
            click.echo(f"skipped    #{d.id} {d.topic}[{d.partition}]@{d.offset}: {why}")
        if dry_run:
            click.echo("dry run: nothing changed")
            return
        writer = build.redrive_writer(settings, store, group)
        decoder = Decoder()

        def write(batch: Any, settled: Any) -> tuple[int, int]:
            done = writer.write(batch, member="redrive", progress=(), settle_dead_letters=settled)
            return done.batch_id, done.dead_letters

        result = redrive.redrive(
            plan, lambda recs: decoder.decode(recs, writer.known_schemas()), write
        )
    if result.batch_id is None:
        click.echo("nothing to redrive")
        return
    click.echo(
        f"batch {result.batch_id}: {result.applied} applied, {len(plan.superseded)} superseded "
        f"(removed), {len(plan.skipped)} skipped, {result.failed_again} failed again "
        "(see `changefold dlq`)"
    )
    if result.failed_again:
        raise SystemExit(1)


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
