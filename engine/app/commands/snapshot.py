"""`changefold snapshot`: a consistent copy of the state, also while the engine runs.

Also the helper the tools use on a state file the running engine holds (DuckDB
lets one process open it): `readable(settings, path)` yields the path itself
when no process holds it, else a snapshot the engine writes through its API
(`POST /snapshot`, engine.state.snapshot), deleted afterwards, and says on
standard error which frontier that snapshot is consistent as of.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from engine.core.config import Settings
from engine.core.errors import StateLockedError

_EPILOG = """\
Examples:

\b
  changefold snapshot --into live-copy.duckdb
  changefold diff live-copy.duckdb rebuilt.duckdb

While `changefold run` holds the state, the engine writes the copy (from one
read-only transaction: one committed batch, the writer is not stopped) into a
new private directory under <home>/snapshots/, and it is moved to FILE. With no
engine running, the file is opened read-only (its WAL included) and copied here.
"""


@click.command(epilog=_EPILOG)
@click.option(
    "--into",
    "target",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The new DuckDB file to write (must not exist).",
)
@click.option(
    "--state",
    "state_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The state file to copy (default CHANGEFOLD_STATE_PATH).",
)
@click.option(
    "--api", "api_url", metavar="URL", help="The engine's API (default CHANGEFOLD_API_*)."
)
@click.pass_obj
def snapshot(
    settings: Settings, target: Path, state_path: Path | None, api_url: str | None
) -> None:
    """Write a consistent copy of the state (every table, view, dead letter and the
    frontier) into a new DuckDB file, also while the engine runs."""
    from engine.state import frontier
    from engine.state import snapshot as state_snapshot
    from engine.state.reader import StateReader

    path = Path(state_path or settings.engine.state_path)
    if target.exists() or target.with_name(target.name + ".wal").exists():
        raise click.BadParameter(f"{target} exists already: name a new file", param_hint="--into")
    if not path.is_file():
        raise click.ClickException(f"no state file at {path}: run `changefold run` first")
    target.parent.mkdir(parents=True, exist_ok=True)
    if not state_snapshot.held(path):
        try:
            reader = StateReader.open_file(path)
        except StateLockedError:
            reader = None  # an engine started meanwhile: ask it
        if reader is not None:
            try:
                with reader.cursor() as cur:
                    snap = state_snapshot.copy_state(cur, target, scope=frontier.Scope())
            finally:
                reader.close()
            click.echo(
                f"copied {path} (no engine holds it) into {target}: {snap.tables} tables, "
                f"{snap.rows:,} rows, {snap.size_bytes / 2**20:,.1f} MiB in {snap.seconds:.2f} s"
            )
            click.echo(snap.consistency.line, err=True)
            return
    answer = engine_snapshot(settings, path, api_url)
    written = Path(str(answer["path"]))
    try:
        shutil.move(str(written), str(target))
    finally:
        discard(written)
    click.echo(
        f"the running engine wrote a snapshot of {path} into {target}: {answer['tables']} "
        f"tables, {int(answer['rows']):,} rows, {int(answer['size_bytes']) / 2**20:,.1f} MiB in "
        f"{float(answer['seconds']):.2f} s"
    )
    click.echo(str(answer.get("consistency", "")), err=True)


def engine_snapshot(settings: Settings, path: Path, api_url: str | None = None) -> dict[str, Any]:
    """Ask the engine that holds `path` for a snapshot; its API answer (`path`, ...)."""
    from engine.serve.client import ApiClient

    client = ApiClient(api_url or settings.api.url)
    health = client.health()
    if health is None:
        raise StateLockedError(
            f"the state file {path} is held by another process, and no engine API answers at "
            f"{client.url} to write a snapshot of it: point CHANGEFOLD_API_PORT (or --api) at "
            "the engine that holds it, or stop that process"
        )
    served = str(health.get("state_file") or "")
    if health.get("mode") != "engine" or not _same_file(served, path):
        raise StateLockedError(
            f"the state file {path} is held by another process; the engine API at {client.url} "
            f"serves {served or 'another state'}, not it: point CHANGEFOLD_API_PORT (or --api) "
            "at the engine that holds it"
        )
    return client.snapshot()


@contextmanager
def readable(settings: Settings, path: Path, *, api_url: str | None = None) -> Iterator[Path]:
    """`path`, or a snapshot of it when a running engine holds it (deleted after)."""
    from engine.state import snapshot as state_snapshot

    if not Path(path).is_file() or not state_snapshot.held(path):
        yield path
        return
    answer = engine_snapshot(settings, path, api_url)
    written = Path(str(answer["path"]))
    click.secho(
        f"note: {path} is held by the running engine: read a snapshot of it that the engine "
        f"wrote, {answer.get('consistency', '')}",
        dim=True,
        err=True,
    )
    try:
        yield written
    finally:
        discard(written)


def discard(written: Path) -> None:
    """Delete a snapshot the engine wrote (the file, its WAL and its own directory)."""
    from engine.state import snapshot as state_snapshot

    state_snapshot.remove(written)
    if written.parent.name.startswith("snapshot-"):
        with contextlib.suppress(OSError):
            written.parent.rmdir()


def _same_file(a: str, b: Path) -> bool:
    if not a:
        return False
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
