"""The `changefold` command line: wiring only, no logic.

Each area keeps its commands next to its code (engine/app/commands/stack.py, ...);
this module configures logging, builds the settings and registers the commands.

Commands are loaded lazily: `changefold --help` imports no command module (the
one-line summaries are listed here, and a unit test keeps them equal to the
commands' own), and `changefold <cmd>` imports only <cmd>'s module. The command
modules in turn import DuckDB, Polars, PyArrow, kafka-python, psycopg and httpx
inside the functions that use them, so `changefold <cmd> --help` stays fast too.

Errors: every failure, a `ChangefoldError` of the engine or a usage error of Click,
prints one `error: ...` line (lower case, after the usage line for a usage error)
on standard error and exits non-zero (tests/unit/test_cli.py).
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any, NoReturn

import click

from engine import __version__
from engine.core.errors import ChangefoldError

#: name -> (module, attribute, one-line summary shown by `changefold --help`).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "stack": (
        "engine.app.commands.stack",
        "stack",
        "Run the local stack of real servers: PostgreSQL, Kafka (KRaft) and Kafka Connect "
        "with the Debezium PostgreSQL connector, as plain processes (no Docker needed).",
    ),
    "generate": (
        "engine.app.commands.generate",
        "generate",
        "Write a realistic, reproducible workload into a demo domain's Postgres tables.",
    ),
    "sql": (
        "engine.app.commands.sql",
        "sql",
        "Run one read-only SQL statement over the engine's state and print the rows.",
    ),
    "run": (
        "engine.app.commands.run",
        "run",
        "Keep the DuckDB state equal to the captured Postgres tables.",
    ),
    "dlq": (
        "engine.app.commands.dlq",
        "dlq",
        "List dead letters, newest first: change events the engine could not decode or "
        "apply, with topic, partition, offset, key, raw value, the reason and when.",
    ),
    "bench": (
        "engine.app.commands.bench",
        "bench",
        "Benchmarks that print figures (not tests).",
    ),
    "replay": (
        "engine.app.commands.replay",
        "replay",
        "Rebuild state from the CDC history kept in Kafka into a separate DuckDB file.",
    ),
    "diff": (
        "engine.app.commands.replay",
        "diff",
        "Compare two state files table by table: rows only in A, only in B, and rows whose "
        "values differ (matched on the primary key), with a sample of each.",
    ),
    "snapshot": (
        "engine.app.commands.snapshot",
        "snapshot",
        "Write a consistent copy of the state (every table, view, dead letter and the "
        "frontier) into a new DuckDB file, also while the engine runs.",
    ),
    "eval": (
        "engine.app.commands.eval",
        "eval_group",
        "Measure the derived views against ground truth.",
    ),
    "schemas": (
        "engine.app.commands.schemas",
        "schemas",
        "List the schema registry's subjects, their versions and compatibility mode.",
    ),
    "demo": (
        "engine.app.commands.demo",
        "demo",
        "Run everything: the stack, the bank and arcade generators, the engine and the "
        "dashboards; print the dashboards' address.",
    ),
}


def fail(exc: click.ClickException | ChangefoldError) -> NoReturn:
    """The one error style: `error: <message>` on stderr, exit non-zero."""
    if isinstance(exc, ChangefoldError):
        message, code = str(exc), exc.exit_code
    else:
        message, code = exc.format_message(), exc.exit_code
        ctx = getattr(exc, "ctx", None)
        if isinstance(exc, click.UsageError) and ctx is not None:
            click.echo(ctx.get_usage(), err=True)
            if ctx.command.get_help_option(ctx) is not None:
                names = ctx.command.get_help_option_names(ctx)
                click.echo(f"Try '{ctx.command_path} {max(names, key=len)}' for help.", err=True)
            click.echo(err=True)
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Loads commands on first use; turns a ChangefoldError or a Click error into one
    `error: ...` line and its exit code, not a traceback or Click's "Error: ..."."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(module), attr)
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows: list[tuple[str, str]] = []
        for name in names:
            if name in self.commands:
                cmd = self.commands[name]
                if cmd.hidden:
                    continue
                text = cmd.get_short_help_str(limit)
            else:
                text = click.Command(name, help=COMMANDS[name][2]).get_short_help_str(limit)
            rows.append((name, text))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            fail(exc)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (ChangefoldError, click.ClickException) as exc:
            fail(exc)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="changefold")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """changefold: CDC real-time analytics.

    PostgreSQL changes are captured by Debezium (in a Kafka Connect worker) into
    Kafka, folded into DuckDB state by a micro-batch engine, and shown on live
    dashboards. Every setting can be overridden by a CHANGEFOLD_* environment
    variable (see the README for the list).
    """
    from engine.core.config import Settings

    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kafka-python is chatty (INFO, and WARNINGs about its own event loop); the engine
    # reports what matters itself. -vv shows everything.
    if verbose < 2:
        logging.getLogger("kafka").setLevel(logging.ERROR)
    ctx.obj = Settings.from_env()
