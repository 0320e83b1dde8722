"""The `changefold` command line: wiring only, no logic.

Each area keeps its commands next to its code (engine/app/commands/stack.py, ...);
this module configures logging, builds the settings and registers the commands.
"""

from __future__ import annotations

import logging
import sys

import click

from engine import __version__
from engine.app.commands.demo import demo
from engine.app.commands.eval import eval_group
from engine.app.commands.generate import generate
from engine.app.commands.replay import diff, replay
from engine.app.commands.run import bench, dlq, run
from engine.app.commands.sql import sql
from engine.app.commands.stack import stack
from engine.core.config import Settings
from engine.core.errors import ChangefoldError


class _Group(click.Group):
    """Turns a ChangefoldError into a clear message and its exit code, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ChangefoldError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(exc.exit_code)


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


# -- commands -------------------------------------------------------------------------
main.add_command(stack)
main.add_command(generate)
main.add_command(sql)
main.add_command(run)
main.add_command(dlq)
main.add_command(bench)
main.add_command(replay)
main.add_command(diff)
main.add_command(eval_group)
main.add_command(demo)
