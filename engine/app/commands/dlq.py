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
@click.pass_obj
def dlq(settings: Settings, limit: int, topic: str | None, as_json: bool, state_path: Path | None):
    """List dead letters, newest first: change events the engine could not decode or
    apply, with topic, partition, offset, key, raw value, the reason and when.

    Opens the state file read-only; while `changefold run` holds it (DuckDB
    allows one process), reads a snapshot the engine writes on request
    (`changefold snapshot`), and says on standard error which source position
    it is consistent as of.
    """
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
