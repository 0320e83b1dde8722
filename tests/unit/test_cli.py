"""The command line itself: fast --help (lazy imports), one error style, uncut output."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from serve_support import build_state, free_port

from engine.app.cli import COMMANDS, main
from engine.serve.output import print_table

#: What `--help` must not load: each costs from a few hundred ms to seconds cold.
HEAVY = ("duckdb", "polars", "pyarrow", "kafka", "psycopg", "httpx", "fastapi", "numpy")

#: Commands whose module imports the engine at the
#: top (another change; see the issue 14 report): their --help still loads it.
EAGER: set[str] = set()

_PROBE = """
import json, sys
sys.argv = ["changefold", *sys.argv[1:]]
from engine.app.cli import main
try:
    main()
finally:
    heavy = [m for m in {heavy!r} if m in sys.modules]
    sys.stderr.write("\\nHEAVY=" + json.dumps(heavy) + "\\n")
"""

_HELPS = [
    "",
    *sorted(COMMANDS),
    "stack up",
    "stack status",
    "generate",
    "eval fraud",
    "bench fold",
    "bench latency",
    "snapshot",
]


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(
            c,
            marks=pytest.mark.xfail(
                c in EAGER, reason="engine/app/commands/run.py imports eagerly", strict=True
            ),
        )
        for c in dict.fromkeys(_HELPS)
    ],
)
def test_help_imports_no_heavy_library(command: str) -> None:
    """`changefold [cmd] --help` imports none of DuckDB, Polars, PyArrow, kafka-python, ...
    (run in a fresh interpreter: this test process has them loaded already)."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), *command.split(), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Usage: changefold" in proc.stdout
    heavy = json.loads(proc.stderr.rsplit("HEAVY=", 1)[1])
    assert heavy == [], f"`changefold {command} --help` imported {heavy}"


def test_listed_summaries_are_the_commands_own() -> None:
    """`changefold --help` lists summaries from cli.COMMANDS without importing the
    commands: they must say what each command's own docstring says."""
    ctx = click.Context(main)
    for name, (_, _, summary) in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(10**6) == summary, name
    assert main.list_commands(ctx) == sorted(COMMANDS)
    assert main.get_command(ctx, "no-such-command") is None


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for name in COMMANDS:
        assert f"\n  {name} " in result.output


# -- one error style -------------------------------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "CHANGEFOLD_HOME": str(tmp_path / "home"),
        "CHANGEFOLD_STATE_PATH": str(tmp_path / "state.duckdb"),
        "CHANGEFOLD_API_PORT": str(free_port()),
    }


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        # a click.ClickException raised by a command (was Click's "Error: ...")
        (["dlq", "--state", "{tmp}/missing.duckdb"], 1, "error: no state file at "),
        # a usage error raised by a command
        (["sql", "--api", "http://x", "--state", "{tmp}/s.duckdb", "SELECT 1"], 2, "error: give"),
        # a usage error of a subcommand's options, and of the group's
        (["sql", "--bogus", "SELECT 1"], 2, "error: No such option '--bogus'"),
        (["--bogus"], 2, "error: No such option '--bogus'"),
        (["no-such-command"], 2, "error: No such command 'no-such-command'"),
        (["eval", "fraud", "--fail-under", "7"], 2, "error: Invalid value for '--fail-under'"),
        # a ChangefoldError (a setting that cannot be used)
        (["sql", "SELECT 1"], 2, "error: CHANGEFOLD_API_PORT"),
    ],
)
def test_every_error_is_one_lower_case_error_line(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    env = _env(tmp_path)
    if message == "error: CHANGEFOLD_API_PORT":
        env["CHANGEFOLD_API_PORT"] = "not-a-port"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert message in result.stderr
    assert "Error:" not in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("error: ")


# -- values are never cut --------------------------------------------------------------

LONG = "abcdefghijklmnopqrstuvwxyz0123456789"  # 36 characters


def test_piped_sql_prints_the_whole_value(tmp_path: Path) -> None:
    """`changefold sql "select '<36 characters>' as a_rather_long_column_name" | cat`:
    stdout is a pipe, a narrow COLUMNS does not matter, nothing is cut."""
    build_state(tmp_path / "state.duckdb").close()
    env = {**os.environ, **_env(tmp_path), "COLUMNS": "20"}
    query = f"select '{LONG}' as a_rather_long_column_name, 42 AS n, '{LONG}' AS again"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "sql", query],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if "a_rather_long_column_name" in line)
    row = next(line for line in lines if LONG in line)
    assert row.count(LONG) == 2 and "42" in row
    assert "…" not in proc.stdout and "..." not in proc.stdout
    assert "again" in header
    assert lines[-1] == "1 row"


def _payload(*rows: list[object]) -> dict[str, object]:
    return {
        "columns": [
            {"name": "a_rather_long_column_name", "type": "VARCHAR"},
            {"name": "n", "type": "INTEGER"},
        ],
        "rows": [list(r) for r in rows],
        "row_count": len(rows),
    }


def test_table_to_a_pipe_is_as_wide_as_its_values() -> None:
    out = io.StringIO()
    print_table(_payload([LONG, 1], [None, 2], ["[bold]x", 3]), out)
    lines = out.getvalue().splitlines()
    assert any(LONG in line for line in lines)
    assert any("[bold]x" in line for line in lines), "markup in values is shown as text"
    assert any("NULL" in line for line in lines)
    assert lines[-1] == "3 rows"


def test_table_on_a_narrow_terminal_wraps_values_without_cutting() -> None:
    out = io.StringIO()
    print_table(_payload([LONG, 1]), out, width=24)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 24
    cells = "".join(line.split("│")[1].strip() for line in lines if line.startswith("│"))
    assert LONG in cells
    assert "…" not in out.getvalue()


def test_suggested_queries_with_a_limit_are_ordered() -> None:
    """A `SELECT ... LIMIT n` the README, a --help text or a hint suggests names an
    order: "the first 5" of an unordered SELECT is any 5 (the leaderboard by rank)."""
    root = Path(__file__).resolve().parents[2]
    sources = [root / "README.md", *sorted((root / "engine" / "app").rglob("*.py"))]
    found = []
    for path in sources:
        for query in re.findall(r"SELECT [^\"`]*?LIMIT \d+", path.read_text(), re.IGNORECASE):
            found.append(query)
            assert re.search(r"ORDER BY", query, re.IGNORECASE), f"{path.name}: {query!r}"
    assert any("live.leaderboard ORDER BY rank LIMIT 5" in q for q in found)
