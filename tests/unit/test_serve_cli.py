"""`changefold sql`: through the engine's API when it answers, else the file read-only."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from serve_support import build_state, free_port, settings_for

from engine.app.cli import main
from engine.serve import start_api
from engine.state.reader import StateReader

ACCOUNTS = "SELECT id, owner, balance FROM bank.accounts ORDER BY id LIMIT 3"


def run_sql(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["sql", *args], env=env, input=stdin)


def env_for(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        "CHANGEFOLD_HOME": str(tmp_path / "home"),
        "CHANGEFOLD_STATE_PATH": str(tmp_path / "state.duckdb"),
        "CHANGEFOLD_API_PORT": str(port),
        **extra,
    }


@pytest.fixture
def stopped(tmp_path: Path) -> dict[str, str]:
    """A state file and no engine: nothing listens on the API port."""
    build_state(tmp_path / "state.duckdb").close()
    return env_for(tmp_path, free_port())


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    """An engine (a writer connection in this process) serving the API on its port."""
    con = build_state(tmp_path / "state.duckdb")
    settings = settings_for(tmp_path)
    api = start_api(settings, StateReader.for_connection(con))
    try:
        yield env_for(tmp_path, settings.api.api_port), api.url
    finally:
        api.stop()
        con.close()


def test_table_from_the_file_when_the_engine_is_stopped(stopped: dict[str, str]) -> None:
    result = run_sql(stopped, ACCOUNTS)
    assert result.exit_code == 0, result.output
    assert "owner 1" in result.stdout and "100.25" in result.stdout
    assert "3 rows" in result.stdout


def test_csv_and_json_formats(stopped: dict[str, str]) -> None:
    as_csv = run_sql(stopped, ACCOUNTS, "--format", "csv")
    assert as_csv.exit_code == 0, as_csv.output
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [
        ["id", "owner", "balance"],
        ["1", "owner 1", "100.25"],
        ["2", "owner 2", "200.25"],
        ["3", "owner 3", "300.25"],
    ]
    as_json = run_sql(stopped, "SELECT 1 AS a, 2 AS a, NULL AS n, [1, 2] AS l", "-f", "json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == [{"a": 1, "a_2": 2, "n": None, "l": [1, 2]}]


def test_query_from_stdin(stopped: dict[str, str]) -> None:
    result = run_sql(stopped, "-", "-f", "csv", stdin="SELECT count(*) AS n FROM bank.events\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["n", "5000"]


def test_through_the_api_when_the_engine_runs(running: tuple[dict[str, str], str]) -> None:
    env, url = running
    result = run_sql(env, ACCOUNTS, "-f", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == "1,owner 1,100.25"
    # it went through the API (the file is held by this process's writer anyway)
    assert httpx.get(f"{url}/metrics").json()["api"]["queries"]["ok"] == 1


def test_explicit_api_url(running: tuple[dict[str, str], str], tmp_path: Path) -> None:
    _, url = running
    env = env_for(tmp_path, free_port())
    result = run_sql(env, "SELECT 7 AS seven", "--api", url, "-f", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["seven", "7"]


@pytest.mark.parametrize("where", ["running", "stopped"])
def test_refused_statement_exits_non_zero_with_the_reason(
    where: str, request: pytest.FixtureRequest
) -> None:
    fixture = request.getfixturevalue(where)
    env = fixture[0] if where == "running" else fixture
    result = run_sql(env, "INSERT INTO bank.events VALUES (-1, 0)")
    assert result.exit_code == 2
    assert "INSERT statements are not allowed" in result.stderr
    assert "Traceback" not in result.output
    check = run_sql(env, "SELECT count(*) FROM bank.events WHERE id = -1", "-f", "csv")
    assert check.stdout.splitlines() == ["count_star()", "0"]


def test_reading_a_file_is_refused(stopped: dict[str, str]) -> None:
    result = run_sql(stopped, "SELECT * FROM read_text('/etc/passwd')")
    assert result.exit_code == 2
    assert "read_text() is not allowed" in result.stderr


def test_malformed_sql_shows_duckdb_message(stopped: dict[str, str]) -> None:
    result = run_sql(stopped, "SELEC 1")
    assert result.exit_code == 2
    assert 'syntax error at or near "SELEC"' in result.stderr


def test_truncation_is_noted(stopped: dict[str, str]) -> None:
    env = {**stopped, "CHANGEFOLD_API_MAX_ROWS": "5"}
    result = run_sql(env, "SELECT * FROM bank.events", "-f", "csv")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 6
    assert "only the first 5 rows" in result.stderr
    fewer = run_sql(stopped, "SELECT * FROM bank.events", "--max-rows", "2", "-f", "csv")
    assert len(fewer.stdout.splitlines()) == 3


def test_api_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()
    result = run_sql(env_for(tmp_path, port), "SELECT 1", "--api", f"http://127.0.0.1:{port}")
    assert result.exit_code == 1
    assert "did not answer" in result.stderr and "changefold run" in result.stderr


def test_missing_state_file_says_how_to_create_it(tmp_path: Path) -> None:
    result = run_sql(env_for(tmp_path, free_port()), "SELECT 1")
    assert result.exit_code == 1
    assert "no state file" in result.stderr and "changefold run" in result.stderr


def test_api_and_state_together_is_a_usage_error(stopped: dict[str, str]) -> None:
    result = run_sql(stopped, "SELECT 1", "--api", "http://127.0.0.1:1", "--state", "x.duckdb")
    assert result.exit_code == 2
    assert "at most one of --api, --state and --as-of" in result.stderr
