"""`changefold stack up | down | status | jars`."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from engine.core.config import Settings

if TYPE_CHECKING:
    from engine.lab.stack.supervisor import Stack

_PORTS_HELP = """\
Ports and paths (environment variables, defaults):

\b
  CHANGEFOLD_HOME                   runtime state: data, logs, pid files (.stack/)
  CHANGEFOLD_JARS_DIR               resolved jars (.stack/jars)
  CHANGEFOLD_PG_PORT                PostgreSQL (55432)
  CHANGEFOLD_KAFKA_PORT             Kafka broker (59092)
  CHANGEFOLD_KAFKA_CONTROLLER_PORT  KRaft controller (59093)
  CHANGEFOLD_CONNECT_PORT           Kafka Connect REST API (58083)
  CHANGEFOLD_FORMAT                 json (default) or avro: avro also runs the
                                    schema registry and Connect's Avro converter
  CHANGEFOLD_REGISTRY_PORT          schema registry, with format avro (58081)
  CHANGEFOLD_TOPIC_PARTITIONS       partitions per captured table (3)
  CHANGEFOLD_STARTUP_TIMEOUT_S      seconds each component may take (120)

All servers listen on 127.0.0.1 only.
"""


@click.group(epilog=_PORTS_HELP)
def stack() -> None:
    """Run the local stack of real servers: PostgreSQL, Kafka (KRaft) and Kafka Connect
    with the Debezium PostgreSQL connector, as plain processes (no Docker needed)."""


@stack.command()
@click.pass_obj
def up(settings: Settings) -> None:
    """Start the stack (idempotent): Postgres with the demo schemas, the Kafka broker, the
    Connect worker, then register connectors/*.json and wait until they run.

    The first run resolves the jars with Maven. Progress is printed per component.
    After a crash it starts what is missing and waits for the broker and the
    connectors; if that fails it keeps what it restarted and is healthy.
    """
    click.echo(f"starting the stack in {settings.home}")
    _stack(settings).up(echo=click.echo)


@stack.command()
@click.option("--purge", is_flag=True, help="Also delete the data (Postgres, Kafka, Connect).")
@click.pass_obj
def down(settings: Settings, purge: bool) -> None:
    """Stop Connect, then Kafka, then Postgres; leaves no process behind."""
    _stack(settings).down(purge=purge, echo=click.echo)


@stack.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_obj
def status(settings: Settings, as_json: bool) -> None:
    """Show each component's pid, port and health, the connectors' and tasks' states, and
    the WAL each replication slot retains. Exits 1 when something is not healthy.

    A connector is healthy when it and its tasks are RUNNING, its source database
    answers and its replication slot is in use (Connect still says RUNNING while a task
    retries a database that is down)."""
    report = _stack(settings).status()
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        _print_status(report)
    raise SystemExit(0 if report["healthy"] else 1)


@stack.command()
@click.pass_obj
def jars(settings: Settings) -> None:
    """Resolve the Kafka, Connect and Debezium jars with Maven (skipped when present)."""
    from engine.lab.stack.jars import ensure_jars

    ran = ensure_jars(settings)
    click.echo(
        ("resolved jars into " if ran else "jars already resolved in ") + str(settings.jars_dir)
    )


def _stack(settings: Settings) -> Stack:
    # kafka-python, psycopg and httpx load only when a stack command runs.
    from engine.lab.stack.supervisor import Stack

    return Stack(settings)


def _print_status(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(title="components")
    for col in ("component", "pid", "port", "state"):
        table.add_column(col)
    for c in report["components"]:
        state = (
            "healthy" if c["healthy"] else ("running, not healthy" if c["running"] else "stopped")
        )
        style = "green" if c["healthy"] else ("yellow" if c["running"] else "red")
        table.add_row(c["name"], str(c["pid"] or "-"), str(c["port"]), f"[{style}]{state}[/]")
    console.print(table)
    if report["connectors"]:
        ct = Table(title="connectors")
        for col in ("connector", "state", "tasks", "health"):
            ct.add_column(col)
        for c in report["connectors"]:
            tasks = ", ".join(f"{t['id']}:{t['state']}" for t in c["tasks"]) or "-"
            health = "[green]healthy[/]" if c["healthy"] else f"[red]{escape(c['problem'])}[/]"
            ct.add_row(c["name"], c["state"], tasks, health)
        console.print(ct)
    if report["slots"]:
        st = Table(title="replication slots")
        for col in ("slot", "active", "retained WAL"):
            st.add_column(col)
        for s in report["slots"]:
            st.add_row(s["slot"], str(s["active"]), _bytes(s["retained_wal_bytes"]))
        console.print(st)


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
